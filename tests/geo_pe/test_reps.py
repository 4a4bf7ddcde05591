"""Every representation, Lie or finite, through the same homomorphism/character/orthogonality battery."""

import math

import pytest
import torch

from geo_pe import quaternion as Q
from geo_pe.reps import (
    DirectSum,
    PermutationRep,
    RegularRep,
    SO2Rep,
    SO3Rep,
    SphereRep,
    TensorPower,
    TensorProduct,
    TranslationRep,
    TrivialRep,
    cyclic,
    default_frequencies,
    dihedral,
    outer_product,
    symmetric,
)
from geo_pe.testing import tolerance

LIE_REPS = {
    "t1": lambda: TranslationRep(1, 6),
    "t2_axial": lambda: TranslationRep(2, 4, base=100.0),
    "t3_mixed": lambda: TranslationRep(3, 5, layout="mixed", seed=4),
    "so2": lambda: SO2Rep([(1, 0), (2, 1), (1, 3)]),
    "so3": lambda: SO3Rep([(1, 0), (2, 1), (1, 2), (1, 4)]),
    "t1+so3": lambda: DirectSum([TranslationRep(1, 3), SO3Rep([(2, 1)])]),
    "t1*so3": lambda: TensorProduct(TranslationRep(1, 2), SO3Rep([(1, 1), (1, 2)])),
    "so2(m=0)*t2": lambda: TensorProduct(SO2Rep([(2, 0)]), TranslationRep(2, 2)),
    "so3+so3": lambda: DirectSum([SO3Rep([(1, 1)]), SO3Rep([(1, 3)])]),
}
FINITE_REPS = {
    "perm_C5": lambda: PermutationRep(cyclic(5)),
    "perm_D6": lambda: PermutationRep(dihedral(6)),
    "perm_S4^2": lambda: TensorPower(PermutationRep(symmetric(4)), 2),
    "regular_D4": lambda: RegularRep(dihedral(4)),
    "S3xS4": lambda: outer_product(PermutationRep(symmetric(3)), PermutationRep(symmetric(4))),
    "perm+trivial_S3": lambda: DirectSum([PermutationRep(symmetric(3)), TrivialRep(symmetric(3), 2)]),
}
ALL_REPS = {**LIE_REPS, **FINITE_REPS}


def sample(rep, n, seed, dtype):
    g = rep.group.sample((n,), generator=seed, dtype=dtype)
    return g


def close(a, b, dtype, scale=1.0):
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(a.to(dtype), b.to(dtype), atol=atol * scale, rtol=rtol * scale)


@pytest.fixture(params=list(ALL_REPS), ids=list(ALL_REPS))
def rep(request):
    return ALL_REPS[request.param]()


def test_homomorphism(rep, dtype):
    g1, g2 = sample(rep, 6, 0, dtype), sample(rep, 6, 1, dtype)
    close(rep.matrices(rep.group.compose(g1, g2)), rep.matrices(g1) @ rep.matrices(g2), dtype, 10)


def test_identity_inverse_orthogonality(rep, dtype):
    g = sample(rep, 6, 2, dtype)
    M = rep.matrices(g)
    eye = torch.eye(rep.dim, dtype=dtype)
    close(rep.matrices(rep.group.identity((3,), dtype=dtype)), eye.expand(3, -1, -1), dtype)
    close(rep.matrices(rep.group.inverse(g)), M.transpose(-1, -2), dtype, 10)
    close(M @ M.transpose(-1, -2), eye.expand_as(M), dtype, 10)


def test_character_is_the_trace(rep, dtype):
    g = sample(rep, 6, 3, dtype)
    close(rep.character(g), rep.matrices(g).diagonal(dim1=-2, dim2=-1).sum(-1), dtype, 10)


def test_act_matches_matrices(rep, dtype):
    g = sample(rep, 6, 4, dtype)
    v = torch.randn(6, rep.dim, dtype=dtype)
    close(rep.act(g, v), (rep.matrices(g).to(dtype) @ v[..., None])[..., 0], dtype, 10)


def test_layout_and_irreps_account_for_every_dimension(rep):
    assert sum(m * d for m, d in rep.layout) == rep.dim
    assert sum(m * irrep.dim for m, irrep in rep.irreps) == rep.dim
    assert len(rep.blocks(sample(rep, 2, 5, torch.float64))) == len(rep.layout)


def test_lie_blocks_are_the_irreps():
    for make in LIE_REPS.values():
        rep = make()
        assert [(m, i.dim) for m, i in rep.irreps] == list(rep.layout)


# --- translations --------------------------------------------------------------------------------------
def test_default_frequencies_are_ropes():
    freqs = default_frequencies(1, 32)
    expected = 10000.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    torch.testing.assert_close(freqs[:, 0], expected, atol=0, rtol=1e-15)


def test_axial_frequencies_act_on_one_axis_each():
    freqs = default_frequencies(2, 6, base=100.0)
    assert (freqs[:3, 1] == 0).all() and (freqs[3:, 0] == 0).all()
    torch.testing.assert_close(freqs[:3, 0], freqs[3:, 1])


def test_mixed_frequencies_are_seeded_with_geometric_norms():
    a, b = (
        default_frequencies(3, 8, layout="mixed", seed=1),
        default_frequencies(3, 8, layout="mixed", seed=1),
    )
    assert torch.equal(a, b) and not torch.equal(a, default_frequencies(3, 8, layout="mixed", seed=2))
    torch.testing.assert_close(a.norm(dim=-1), 10000.0 ** (-torch.arange(8, dtype=torch.float64) / 8))


def test_translation_character_and_rope_rotation(dtype):
    rep = TranslationRep(1, 4)
    x = torch.tensor([0.0, 1.0, 7.5, -3.0], dtype=dtype)
    theta = x[:, None] * rep.frequencies[:, 0].to(dtype)
    close(rep.character(x), (2 * torch.cos(theta)).sum(-1), dtype)
    v = torch.randn(4, 8, dtype=dtype)
    pairs = v.view(4, 4, 2)
    rope = torch.stack(
        (
            pairs[..., 0] * theta.cos() - pairs[..., 1] * theta.sin(),
            pairs[..., 0] * theta.sin() + pairs[..., 1] * theta.cos(),
        ),
        -1,
    ).flatten(-2)
    close(rep.act(x, v), rope, dtype)


def test_integer_positions_are_accepted():
    rep = TranslationRep(1, 4)
    torch.testing.assert_close(rep.matrices(torch.arange(5)), rep.matrices(torch.arange(5.0)))


def test_learnable_frequencies_get_gradients_and_reset():
    rep = TranslationRep(2, 4, learnable=True)
    assert isinstance(rep.frequencies, torch.nn.Parameter)
    rep.character(torch.randn(3, 2)).sum().backward()
    assert rep.frequencies.grad is not None and torch.isfinite(rep.frequencies.grad).all()
    with torch.no_grad():
        rep.frequencies.mul_(2)
    rep.reset_parameters()
    torch.testing.assert_close(rep.frequencies, TranslationRep(2, 4).frequencies.float())
    assert list(rep.state_dict()) == ["learned_frequencies"]


def test_fixed_frequencies_are_constants_that_survive_meta_init_and_dtype_casts():
    assert TranslationRep(1, 4).state_dict() == {}  # nothing to save, load or rebuild
    with torch.device("meta"):
        rep = TranslationRep(2, 4)
    rep.to_empty(device="cpu").to(torch.bfloat16)
    x = torch.randn(5, 2, dtype=torch.float64) * 1000
    torch.testing.assert_close(rep.angles(x), TranslationRep(2, 4).angles(x), atol=0, rtol=0)
    assert rep.angles(x).dtype == torch.float64 and rep.frequencies.dtype == torch.float64


def test_explicit_frequencies():
    rep = TranslationRep(1, 2, frequencies=torch.tensor([0.5, 2.0]))
    close(rep.angles(torch.tensor([2.0])), torch.tensor([[1.0, 4.0]]), torch.float32)
    with pytest.raises(ValueError, match=r"frequencies: expected shape \(2, 1\)"):
        TranslationRep(1, 2, frequencies=torch.ones(3))


# --- SO(2) and SO(3) -----------------------------------------------------------------------------------
def test_so2_blocks_from_vectors_match_angles(dtype):
    rep = SO2Rep([(1, 0), (1, 1), (1, 2), (1, 5)])
    theta = SO2Rep([(1, 1)]).group.sample((20,), generator=6, dtype=dtype)
    v = torch.stack((theta.cos(), theta.sin()), -1) * 3.0  # need not be unit
    for a, b in zip(rep.blocks_from_vectors(v), rep.blocks(theta), strict=True):
        close(a, b, dtype)


def test_so2_character(dtype):
    rep = SO2Rep([(2, 0), (1, 3)])
    theta = torch.linspace(-3, 3, 9, dtype=dtype)
    close(rep.character(theta), 2 + 2 * torch.cos(3 * theta), dtype)


def test_so3_from_matrix_and_character(dtype):
    rep = SO3Rep([(1, 0), (2, 1), (1, 3)])
    q = Q.random(10, generator=7, dtype=dtype)
    for a, b in zip(rep.blocks_from_matrix(Q.to_matrix(q)), rep.blocks(q), strict=True):
        close(a, b, dtype)
    t = Q.rotation_angle(q)
    chi = lambda l: torch.sin((2 * l + 1) * t / 2) / torch.sin(t / 2)  # noqa: E731
    close(rep.character(q), chi(0) + 2 * chi(1) + chi(3), dtype, 10)


def test_product_characters_multiply_and_sums_add(dtype):
    t, s = TranslationRep(1, 3), SO3Rep([(1, 1), (1, 2)])
    g = DirectSum([t, s]).group.sample((5,), generator=8, dtype=dtype)
    close(TensorProduct(t, s).character(g), t.character(g) * s.character(g), dtype, 10)
    close(DirectSum([t, s]).character(g), t.character(g) + s.character(g), dtype, 10)


# --- S^2 ---------------------------------------------------------------------------------------------
def test_sphere_blocks_are_equivariant_zonal_matrices(dtype):
    rep = SphereRep([(1, 0), (2, 1), (1, 3)])
    x = rep.group.sample((16,), generator=9, dtype=dtype)
    h = rep.group.acting_group.sample((), generator=10, dtype=dtype)
    moved = rep.group.act(h, x)
    for M_moved, M, D in zip(rep.blocks(moved), rep.blocks(x), rep.acting_rep.blocks(h), strict=True):
        close(M_moved, D @ M, dtype, 10)  # M(R x) = D(R) M(x)
    assert isinstance(rep.acting_rep, SO3Rep) and rep.acting_rep.dim == rep.dim


def test_sphere_kernel_is_the_legendre_addition_theorem(dtype):
    from numpy.polynomial import legendre

    rep = SphereRep([(1, 2), (1, 5)])
    x, y = (
        rep.group.sample((20,), generator=11, dtype=dtype),
        rep.group.sample((20,), generator=12, dtype=dtype),
    )
    cosine = (x * y).sum(-1)
    for l, Mx, My in zip(rep.degrees, rep.blocks(x), rep.blocks(y), strict=True):
        kernel = Mx.transpose(-1, -2) @ My
        P_l = torch.as_tensor(legendre.legval(cosine.double().numpy(), [0] * l + [1]), dtype=dtype)
        expected = torch.zeros_like(kernel)
        expected[..., l, l] = P_l
        close(kernel, expected, dtype, 10)


def test_product_spaces_act_but_do_not_compose():
    rep = DirectSum([TranslationRep(1, 2), SphereRep([(1, 1)])])
    space = rep.group
    x = space.sample((4,), generator=13)
    h = space.acting_group.sample((), generator=14)
    moved = space.act(h, x)
    torch.testing.assert_close(moved["position"], x["position"] + h["position"])
    torch.testing.assert_close(moved["direction"], Q.apply(h["direction"], x["direction"]))
    with pytest.raises(TypeError, match=r"\['direction'\] are spaces, not groups"):
        space.compose(x, x)
    acting = rep.acting_rep
    assert isinstance(acting.parts[1], SO3Rep) and acting.parts[0] is rep.parts[0]


# --- bad input -----------------------------------------------------------------------------------------
def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"irreps: frequency m must be an integer, got 1\.5"):
        SO2Rep([(1, 1.5)])
    with pytest.raises(ValueError, match="irreps: expected multiplicity >= 1 and degree l >= 0"):
        SO3Rep([(1, -1)])
    with pytest.raises(ValueError, match="num_frequencies: the axial layout splits"):
        TranslationRep(2, 3)
    with pytest.raises(ValueError, match="layout: expected one of"):
        TranslationRep(1, 2, layout="spiral")
    with pytest.raises(ValueError, match=r"g: expected positions in R\^2 of shape \(\.\.\., 2\)"):
        TranslationRep(2, 2).blocks(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="g: expected non-zero finite quaternions"):
        SO3Rep([(1, 1)]).blocks(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="g: expected finite angles"):
        SO2Rep([(1, 1)]).blocks(torch.tensor([math.nan]))
    with pytest.raises(ValueError, match="v: expected finite non-zero 2-vectors"):
        SO2Rep([(1, 1)]).blocks_from_vectors(torch.zeros(1, 2))
    rep = DirectSum([TranslationRep(1, 2), SO3Rep([(1, 1)])])
    with pytest.raises(
        ValueError, match="g: no group element for attribute 'orientation'; got keys \\['position'\\]"
    ):
        rep.blocks({"position": torch.zeros(3)})
    with pytest.raises(ValueError, match="product of two complex-type irreps"):
        TensorProduct(TranslationRep(1, 2), SO2Rep([(1, 1)]))
    with pytest.raises(ValueError, match="both read attribute"):
        TensorProduct(SO3Rep([(1, 1)]), SO3Rep([(1, 2)]))
    with pytest.raises(ValueError, match="attribute 'position' is read as t1 by one part and as so3"):
        DirectSum([TranslationRep(1, 2), SO3Rep([(1, 1)], attribute="position")])
    with pytest.raises(ValueError, match="g: expected non-zero direction vectors"):
        SphereRep([(1, 1)]).blocks(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="v: expected a last dimension of 3"):
        SO3Rep([(1, 1)]).act(Q.random(2), torch.zeros(2, 4))


# --- one rotation over several attributes -------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, attributes, independent, shared",
    [
        # k copies of degree l under one rotation commute with k^2 maps (Schur); apart, the squares add up
        ("s2@a:1x1+s2@b:1x1", ["a", "b"], 1 + 1, 2**2),
        ("s2@a:1x1+1x2+s2@b:1x1+1x2", ["a", "b"], 1 + 1 + 1 + 1, 2**2 + 2**2),
        ("so3:1x1+s2:1x1", ["orientation", "direction"], 9 + 1, 4**2),  # vec(D_1): 3 copies, + Y_1
    ],
)
def test_shared_rotations_follow_schurs_count(spec, attributes, independent, shared):
    from geo_pe.equivariance.structure import EquivariantStructure
    from geo_pe.pe import AbsolutePE
    from geo_pe.reps import share_rotation

    pe = AbsolutePE(spec, combine="concat")
    rep = pe.embedding_rep
    assert EquivariantStructure(rep, rep).num_maps == independent
    share_rotation(pe, attributes)  # also renames the irreps of representations built before
    assert EquivariantStructure(rep, rep).num_maps == shared


def test_maps_between_shared_attributes_are_equivariant_under_the_one_rotation(dtype):
    """The commutant's maps mix the two attributes' channels and commute with the shared rotation."""
    from geo_pe.equivariance.structure import EquivariantStructure
    from geo_pe.pe import AbsolutePE
    from geo_pe.reps import share_rotation

    pe = AbsolutePE("s2@position:1x1+1x2+s2@velocity:1x1+1x2", combine="concat").to(dtype)
    share_rotation(pe, ["position", "velocity"])
    structure = EquivariantStructure(pe.embedding_rep, pe.embedding_rep)
    W = structure.expand(torch.randn(structure.num_maps, dtype=torch.float64)).to(dtype)
    x = {a: torch.randn(6, 3, dtype=dtype) for a in ("position", "velocity")}
    h = Q.random(6, generator=3, dtype=dtype)
    gamma = pe.embed(pe.encode(x))
    moved = pe.embed(pe.encode({a: Q.apply(h, v) for a, v in x.items()}))
    cross = W[:8, 8:]  # velocity channels into position channels: non-zero only when shared
    assert cross.abs().max() > 1e-3
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(moved @ W.T, (pe.embedding_rep.act(h, gamma @ W.T)), atol=atol * 10, rtol=rtol)
    with pytest.raises(ValueError, match=r"'angle' is a so2 attribute; only so3 and s2"):
        share_rotation(AbsolutePE("so2:1x1+so3:1x1", combine="concat"), ["angle", "orientation"])
    with pytest.raises(ValueError, match=r"\['speed'\] are not read by any encoding"):
        share_rotation(pe, ["position", "speed"])
