"""Rigid poses: the pose helpers, SE(3)'s representation (homogeneous block and Wigner degrees), its spec,
and rotary/GTA attention whose logits depend on g_i^-1 g_j only, also between two sets of elements."""

from __future__ import annotations

import pytest
import torch

from geo_pe import quaternion, se3
from geo_pe.pe import GTAPE, AbsolutePE, RotaryPE
from geo_pe.reps import IrrepsSpec
from geo_pe.reps.lie import SE3Rep, SO3Rep
from geo_pe.testing import tolerance


def close(actual, expected, dtype, scale=1.0):
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(actual, expected, atol=atol * scale, rtol=rtol * scale)


# --- the helpers -------------------------------------------------------------------------------------------
def test_composition_is_the_product_of_homogeneous_matrices(dtype):
    a, b = se3.random(50, generator=0, dtype=dtype), se3.random(50, generator=1, dtype=dtype)
    close(se3.to_homogeneous(se3.compose(a, b)), se3.to_homogeneous(a) @ se3.to_homogeneous(b), dtype)
    close(se3.to_homogeneous(se3.inverse(a)), torch.linalg.inv(se3.to_homogeneous(a)), dtype, 10)
    x = torch.randn(50, 3, dtype=dtype)
    close(se3.apply(se3.compose(a, b), x), se3.apply(a, se3.apply(b, x)), dtype)
    close(se3.compose(a, se3.inverse(a)), se3.identity(50, dtype=dtype).expand(50, 7), dtype, 10)


def test_conversions_round_trip(dtype):
    g = se3.random(20, generator=2, dtype=dtype)
    T = se3.to_homogeneous(g)
    back = se3.from_homogeneous(T)
    close(se3.to_homogeneous(back), T, dtype)  # q and -q are one rotation: compare the matrices
    R, t = se3.to_rotation_translation(g)
    close(R, quaternion.to_matrix(g[..., :4]), dtype)
    close(se3.to_homogeneous(se3.from_rotation_translation(R, t)), T, dtype)
    half = se3.to_homogeneous(g, scale=0.5)
    close(half[..., :3, 3], 0.5 * t, dtype)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(2, 7), r"poses: quaternion part.*|g \(quaternion part\)"),
        (torch.randn(2, 6), r"g: expected poses .* shape \(\.\.\., 7\)"),
        (torch.tensor([[1.0, 0, 0, 0, float("nan"), 0, 0]]), r"g: expected finite translations"),
    ],
)
def test_bad_poses_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        se3.validate(bad, "g")
    with pytest.raises(ValueError, match=r"T: expected homogeneous matrices whose last row"):
        se3.from_homogeneous(torch.ones(4, 4))


# --- the representation ------------------------------------------------------------------------------------
def test_the_representation_is_a_homomorphism_with_closed_form_inverses(dtype):
    rep = SE3Rep([(2, "h"), (1, 1), (1, 2)], translation_scale=0.3).to(dtype)
    a, b = se3.random(30, generator=3, dtype=dtype), se3.random(30, generator=4, dtype=dtype)
    close(rep.matrices(se3.compose(a, b)), rep.matrices(a) @ rep.matrices(b), dtype, 10)
    eye = torch.eye(rep.dim, dtype=dtype)
    close(rep.matrices(se3.identity(dtype=dtype)), eye, dtype)
    inverse = rep.inverse_blocks(a)
    for block, inv in zip(rep.blocks(a), inverse, strict=True):
        close(block @ inv, torch.eye(block.shape[-1], dtype=dtype).expand_as(block), dtype, 10)
    # the Wigner blocks are those of the rotation part
    so3 = SO3Rep([(1, 1), (1, 2)])
    for ours, theirs in zip(rep.blocks(a)[1:], so3.blocks(a[..., :4]), strict=True):
        close(ours, theirs, dtype)
    assert not rep.orthogonal and SE3Rep([(1, 1)]).orthogonal


def _commutant_dim(rep, samples: int = 6) -> int:
    """Dimension of {A : A rho(g) = rho(g) A for all g}, from random g (float64 null space)."""
    g = se3.random(samples, generator=5, dtype=torch.float64)
    M = rep.double().matrices(g)
    eye = torch.eye(rep.dim, dtype=torch.float64)
    system = torch.cat([torch.kron(m.T.contiguous(), eye) - torch.kron(eye, m.contiguous()) for m in M])
    singular = torch.linalg.svdvals(system)
    return int((singular < 1e-9 * singular.max()).sum())


@pytest.mark.parametrize("copies", [1, 2, 3])
def test_schur_count_of_homogeneous_copies(copies):
    """k copies of the homogeneous block commute with k^2 maps (End = R). It is not irreducible: next to
    D_1 it gains the inclusion of the directions (v, 0), next to the trivial irrep the functional
    "last coordinate", next to D_2 nothing; the equivariant structure solves exactly these."""
    from geo_pe.equivariance.structure import EquivariantStructure

    for extra, added in (((1, 2), 1), ((1, 1), 1 + copies), ((1, 0), 1 + copies)):
        rep = SE3Rep([(copies, "h"), extra])
        expected = copies**2 + added
        assert _commutant_dim(SE3Rep([(copies, "h")])) == copies**2
        assert _commutant_dim(rep) == expected
        assert EquivariantStructure(rep, rep).num_maps == expected


def test_translation_scale_conditions_large_coordinates():
    """cond(rho(g)) grows like |s t|^2: a scale of the coordinates' size keeps it near 1."""
    g = se3.random(100, generator=6, dtype=torch.float64, translation_scale=100.0)
    raw = torch.linalg.cond(SE3Rep([(1, "h")]).double().matrices(g))
    scaled = torch.linalg.cond(SE3Rep([(1, "h")], translation_scale=0.01).double().matrices(g))
    assert raw.median() > 1e3 and scaled.median() < 5


def test_a_learnable_scale_trains():
    rep = SE3Rep([(1, "h")], learnable_scale=True, translation_scale=0.5)
    pe = RotaryPE(rep, x_layout="btd")
    g = se3.random(2, 5, generator=7)
    pe(torch.randn(2, 5, 4), pe.encode(g)).square().sum().backward()
    assert rep.log_scale.grad is not None and rep.log_scale.grad.abs() > 0
    assert torch.exp(rep.log_scale).item() == pytest.approx(0.5)


def test_the_spec_round_trips_and_builds():
    for text, dim in (
        ("se3:2xh+1x1", 11),
        ("se3(scale=0.1,learnable)@cam:1xh", 4),
        ("t1:2*se3:(1xh+1x0)", 20),
    ):
        spec = IrrepsSpec.parse(text)
        assert str(spec) == text and spec.dim == dim == spec.build().dim
        assert IrrepsSpec.from_dict(spec.to_dict()) == spec
    assert IrrepsSpec.parse("se3:1xh").attributes == {"pose": "se3"}
    for bad, message in (("se3:1xq", "bad se3 irrep"), ("se3(size=2):1xh", "bad option 'size=2'")):
        with pytest.raises(ValueError, match=message):
            IrrepsSpec.parse(bad)


# --- attention ---------------------------------------------------------------------------------------------
SPECS = ["se3:2xh+1x1+1x2", "se3(scale=0.2):4xh", "t1:2*se3:(1xh+1x1)"]


def _elements(spec: str, shape, generator: int, dtype):
    gen = torch.Generator().manual_seed(generator)
    poses = se3.random(*shape, generator=gen, dtype=dtype, translation_scale=3.0)
    if spec.startswith("t1"):
        return {"pose": poses, "position": torch.randn(*shape, generator=gen, dtype=dtype) * 5}
    return poses


def _move(spec: str, h, g):
    if isinstance(g, dict):
        return {"pose": se3.compose(h["pose"], g["pose"]), "position": g["position"] + h["position"]}
    return se3.compose(h, g)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("cls", [RotaryPE, GTAPE], ids=["rotary", "gta"])
def test_logits_and_outputs_depend_on_relative_elements_only(spec, cls, dtype):
    """Queries at g_i, keys at other elements g'_j (cross-attention): a global h changes nothing; a motion
    that differs from token to token does."""
    pe = cls(spec, x_layout="bhtd").to(dtype)
    gen = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(2, 3, 5, pe.dim, generator=gen, dtype=dtype) for _ in range(3))
    queries, keys = _elements(spec, (2, 5), 9, dtype), _elements(spec, (2, 5), 10, dtype)
    h = _elements(spec, (2, 1), 11, dtype)

    def attention(at_queries, at_keys):
        enc, key_enc = pe.encode(at_queries), pe.encode(at_keys)
        rq, rk = pe.rotate_qk(q, k, enc, key_enc)
        return rq @ rk.transpose(-1, -2), pe.attend(q, k, v, enc, key_encoding=key_enc)

    logits, out = attention(queries, keys)
    moved_logits, moved_out = attention(_move(spec, h, queries), _move(spec, h, keys))
    close(moved_logits, logits, dtype)
    close(moved_out, out, dtype)
    per_token = _elements(spec, (2, 5), 12, dtype)
    assert (attention(_move(spec, per_token, queries), keys)[0] - logits).abs().max() > 1e-2


def test_logits_are_a_function_of_the_relative_pose(dtype):
    """q^T rho(g_i)^-1 rho(g_j) k: queries at g_i and keys at g_j, or at the identity and g_i^-1 g_j."""
    pe = RotaryPE("se3(scale=0.5):2xh+1x1", x_layout="btd").to(dtype)
    gen = torch.Generator().manual_seed(13)
    q, k = (
        torch.randn(7, pe.dim, generator=gen, dtype=dtype),
        torch.randn(7, pe.dim, generator=gen, dtype=dtype),
    )
    gi, gj = se3.random(7, generator=14, dtype=dtype), se3.random(7, generator=15, dtype=dtype)
    rq, rk = pe.rotate_qk(q, k, pe.encode(gi), pe.encode(gj))
    relative = se3.compose(se3.inverse(gi), gj)
    rq0, rk0 = pe.rotate_qk(q, k, pe.encode(se3.identity(7, dtype=dtype)), pe.encode(relative))
    close((rq * rk).sum(-1), (rq0 * rk0).sum(-1), dtype, 10)


def test_absolute_encodings_take_the_rotation_of_poses_only():
    with pytest.raises(ValueError, match=r"non-orthogonal blocks .* 'se3:1x1\+1x2'"):
        AbsolutePE("se3:1xh")
    # why: trace(rho(g_i)^T rho(g_j)) of the homogeneous block moves under a global motion
    rep = SE3Rep([(1, "h")]).double()
    gi, gj, h = (se3.random(4, generator=s, dtype=torch.float64) for s in (16, 17, 18))

    def inner(a, b):
        return (rep.matrices(a) * rep.matrices(b)).sum((-1, -2))

    assert (inner(se3.compose(h, gi), se3.compose(h, gj)) - inner(gi, gj)).abs().max() > 1e-2
    pe = AbsolutePE("se3:1x1+1x2", combine="concat").double()
    emb = pe.embed(pe.encode(torch.stack((gi, gj))))
    moved = pe.embed(pe.encode(torch.stack((se3.compose(h, gi), se3.compose(h, gj)))))
    torch.testing.assert_close((moved[0] * moved[1]).sum(-1), (emb[0] * emb[1]).sum(-1), rtol=0, atol=1e-10)


def test_se3_rotary_compiles_with_fullgraph():
    pe = RotaryPE("se3(scale=0.5):2xh+1x1+1x2", x_layout="bhtd")

    def apply(q, k, poses):
        return pe.rotate_qk(q, k, pe.encode(poses))

    q, k = torch.randn(2, 2, 4, 16), torch.randn(2, 2, 4, 16)
    poses = se3.random(2, 4, generator=19)
    compiled = torch.compile(apply, fullgraph=True)
    for a, b in zip(compiled(q, k, poses), apply(q, k, poses), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
