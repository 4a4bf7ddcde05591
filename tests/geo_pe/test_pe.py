"""PE modules: rotary is relative, GTA is invariant, absolute has the character as its kernel.

Oracles: dense rho(g) from `Representation.matrices` (a slow reference), group composition for
g_i^-1 g_j, the Legendre addition theorem for S^2, and RoPE written from its formula.
"""

import math

import pytest
import torch

from geo_pe import quaternion as Q
from geo_pe.pe import GTAPE, AbsolutePE, Encoding, RotaryPE
from geo_pe.reps.groups import ProductGroup
from geo_pe.testing import action_of, assert_equivariant, tolerance

SPECS = [
    "t1:8",
    "t2:4(base=100)",
    "t3:6(layout=mixed)",
    "so2:1x0+2x1+1x3",  # odd width: exercises the real-arithmetic path
    "so3:1x0+2x1+1x2",
    "s2:1x1+1x2",
    "t1:4+so3:2x1",
    "t1:2*so3:1x1",
    "so2:2x1+s2:1x1",
    "t1:4+so2:1x0+1x2+so3:1x1",
]
IS_GROUP = {s: "s2" not in s for s in SPECS}
B, T, H = 2, 5, 3


def sample(pe, dtype, seed=0, batch=(B, T)):
    return pe.rep.group.sample(batch, generator=seed, dtype=dtype)


def global_action(pe):
    space = pe.rep.group
    return space.acting_group, space.act


def close(a, b, dtype, scale=1.0):
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(a, b.to(a.dtype), atol=atol * scale, rtol=rtol * scale)


def logits(pe, q, k, g):
    qr, kr = pe.rotate_qk(q, k, pe.encode(g))
    return qr @ kr.transpose(-1, -2)


@pytest.mark.parametrize("spec", SPECS)
def test_rotary_matches_dense_matrices(spec, dtype):
    pe = RotaryPE(spec)
    g = sample(pe, dtype)
    x = torch.randn(B, H, T, pe.dim, dtype=dtype)
    M = pe.rep.matrices(g).to(dtype)  # (B, T, D, D), slow reference
    close(pe(x, pe.encode(g)), (M[:, None] @ x[..., None])[..., 0], dtype)
    close(pe.transpose(x, pe.encode(g)), (M[:, None].transpose(-1, -2) @ x[..., None])[..., 0], dtype)


@pytest.mark.parametrize("pair_layout", ["interleaved", "half"])
@pytest.mark.parametrize("spec", [s for s in SPECS if IS_GROUP[s]])
def test_rotary_logits_depend_only_on_relative_elements(spec, pair_layout, dtype):
    """q_i . k_j after encoding equals q_i^T rho(g_i^-1 g_j) k_j (dense oracle), in either pair layout."""
    pe = RotaryPE(spec, pair_layout=pair_layout)
    group = pe.rep.group
    g = sample(pe, dtype)
    q, k = torch.randn(B, H, T, pe.dim, dtype=dtype), torch.randn(B, H, T, pe.dim, dtype=dtype)
    gi = {a: v[:, :, None] for a, v in g.items()} if isinstance(g, dict) else g[:, :, None]
    gj = {a: v[:, None, :] for a, v in g.items()} if isinstance(g, dict) else g[:, None, :]
    relative = pe.rep.matrices(group.compose(group.inverse(gi), gj)).to(dtype)  # (B, T, T, D, D)
    if pair_layout == "half":  # the half layout is the interleaved one with channels permuted per run
        perm = _half_permutation(pe)
        q_ref, k_ref = q[..., perm], k[..., perm]
    else:
        q_ref, k_ref = q, k
    expected = torch.einsum("bhid,bijde,bhje->bhij", q_ref, relative, k_ref)
    close(logits(pe, q, k, g), expected, dtype, 10)


def _half_permutation(pe):
    """Channel order that maps the half layout onto the interleaved (dense) basis."""
    perm = list(range(pe.dim))
    for seg in pe.plan.segments:
        if seg.kind == "rotation":
            n = seg.copies
            perm[seg.start : seg.stop] = [seg.start + (p // 2) + (p % 2) * n for p in range(2 * n)]
    return perm


@pytest.mark.parametrize("pair_layout", ["interleaved", "half"])
@pytest.mark.parametrize("spec", ["t1:8", "so2:1x0+2x1+1x3", "t1:4+so3:2x1"])
def test_rotary_on_hf_attention_layout_matches_a_contiguous_copy(spec, pair_layout, dtype):
    """q and k as HF's attention gets them ((batch, tokens, heads, dim) transposed, not contiguous) are
    rotated as their contiguous copies are, by rho and by rho^T."""
    pe = RotaryPE(spec, pair_layout=pair_layout)
    enc = pe.encode(sample(pe, dtype))
    x = torch.randn(B, T, H, pe.dim, dtype=dtype).transpose(1, 2)
    assert not x.is_contiguous()
    close(pe(x, enc), pe(x.contiguous(), enc), dtype)
    close(pe.transpose(x, enc), pe.transpose(x.contiguous(), enc), dtype)
    for a, b in zip(pe.rotate_qk(x, x, enc), pe.rotate_qk(x.contiguous(), x.contiguous(), enc), strict=True):
        close(a, b, dtype)


@pytest.mark.parametrize("pair_layout", ["interleaved", "half"])
@pytest.mark.parametrize("spec", SPECS)
def test_rotary_logits_are_invariant_under_a_global_transformation(spec, pair_layout, dtype):
    pe = RotaryPE(spec, pair_layout=pair_layout)
    q, k = torch.randn(B, H, T, pe.dim, dtype=dtype), torch.randn(B, H, T, pe.dim, dtype=dtype)
    acting, act = global_action(pe)
    assert_equivariant(lambda g: logits(pe, q, k, g), sample(pe, dtype), acting, act_in=act)


def test_sphere_rotary_logits_are_a_legendre_kernel(dtype):
    from numpy.polynomial import legendre

    pe = RotaryPE("s2:1x2")
    x = sample(pe, dtype)
    q, k = torch.randn(B, H, T, 5, dtype=dtype), torch.randn(B, H, T, 5, dtype=dtype)
    cosine = x @ x.transpose(-1, -2)  # (B, T, T)
    P2 = torch.as_tensor(legendre.legval(cosine.double().numpy(), [0, 0, 1]), dtype=dtype)
    expected = q[..., 2, None] * k[..., None, :, 2] * P2[:, None]  # zonal channels m = 0
    close(logits(pe, q, k, x), expected, dtype, 10)


def dense_gta(pe, q, k, v, g, scale):
    """o_i = sum_j softmax_j(q_i^T M_i^T M_j k_j) M_i^T M_j v_j with dense matrices."""
    M = pe.rep.matrices(g).to(q.dtype)[:, None]  # (B, 1, T, D, D)
    rel = M.transpose(-1, -2)[:, :, :, None] @ M[:, :, None]  # (B, 1, T, T, D, D)
    scores = torch.einsum("bhid,bhijde,bhje->bhij", q, rel, k) * scale
    weights = scores.softmax(-1)
    return torch.einsum("bhij,bhijde,bhje->bhid", weights, rel, v)


@pytest.mark.parametrize("spec", SPECS)
def test_gta_matches_dense_reference_and_is_invariant(spec, dtype):
    pe = GTAPE(spec)
    g = sample(pe, dtype)
    q, k, v = (torch.randn(B, H, T, pe.dim, dtype=dtype) for _ in range(3))
    scale = 1 / math.sqrt(pe.dim)
    out = pe.attend(q, k, v, pe.encode(g))
    close(out, dense_gta(pe, q, k, v, g, scale), dtype, 10)
    acting, act = global_action(pe)
    assert_equivariant(lambda g: pe.attend(q, k, v, pe.encode(g)), g, acting, act_in=act)


def test_rotary_attend_is_invariant_and_gta_values_are_relative(dtype):
    pe_rot, pe_gta = RotaryPE("so3:1x1+1x2"), GTAPE("so3:1x1+1x2")
    g = sample(pe_rot, dtype)
    q, k, v = (torch.randn(B, H, T, 8, dtype=dtype) for _ in range(3))
    acting, act = global_action(pe_rot)
    assert_equivariant(
        lambda g: pe_rot.attend(q, k, v, pe_rot.encode(g), is_causal=True), g, acting, act_in=act
    )
    # GTA differs from plain rotary: values are transported by rho(g_i^-1 g_j)
    assert not torch.allclose(
        pe_gta.attend(q, k, v, pe_gta.encode(g)), pe_rot.attend(q, k, v, pe_rot.encode(g))
    )


@pytest.mark.parametrize("spec", SPECS)
def test_absolute_kernel_is_the_character(spec, dtype):
    pe = AbsolutePE(spec, combine="concat")
    g = sample(pe, dtype)
    gamma = pe.embed(pe.encode(g))  # (B, T, width)
    assert gamma.shape == (B, T, pe.width)
    gram = gamma @ gamma.transpose(-1, -2)
    M = pe.rep.matrices(g).to(dtype)
    expected = torch.einsum("bide,bjdf->bijef", M, M).diagonal(dim1=-2, dim2=-1).sum(-1)  # tr M_i^T M_j
    close(gram, expected, dtype, 10)
    if IS_GROUP[spec]:  # ... which is the character of g_i^-1 g_j
        group = pe.rep.group
        gi = {a: v[:, :, None] for a, v in g.items()} if isinstance(g, dict) else g[:, :, None]
        gj = {a: v[:, None, :] for a, v in g.items()} if isinstance(g, dict) else g[:, None, :]
        close(gram, pe.rep.character(group.compose(group.inverse(gi), gj)).to(dtype), dtype, 10)


@pytest.mark.parametrize("spec", SPECS)
def test_absolute_embedding_transforms_by_its_representation(spec, dtype):
    """gamma(h . g) = R(h) gamma(g) for a global h of the acting group (columns of rho(g) move by rho(h))."""
    pe = AbsolutePE(spec, combine="concat")
    R = pe.embedding_rep
    assert R.dim == pe.width
    acting, act = global_action(pe)
    assert_equivariant(
        lambda g: pe.embed(pe.encode(g)), sample(pe, dtype), acting, act_in=act, act_out=action_of(R)
    )


def test_absolute_add_and_concat(dtype):
    pe_add = AbsolutePE("so3:1x1", width=9)
    feats = torch.randn(B, T, 9, dtype=dtype)
    g = sample(pe_add, dtype)
    gamma = pe_add.embed(pe_add.encode(g))
    close(pe_add(feats, pe_add.encode(g)), feats + gamma, dtype)
    pe_cat = AbsolutePE("t1:3", combine="concat")
    out = pe_cat(torch.randn(B, T, 4, dtype=dtype), pe_cat.encode(torch.arange(T)))
    assert out.shape == (B, T, 10)


# --- RoPE ----------------------------------------------------------------------------------------------
def reference_rope(x, positions, base=10000.0, layout="half"):
    """RoPE from its formula: pair (2i, 2i+1) or (i, i + d/2) rotated by positions * base^(-2i/d)."""
    d = x.shape[-1]
    theta = positions[:, None].double() * base ** (
        -torch.arange(0, d, 2, dtype=torch.float64) / d
    )  # (T, d/2)
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)
    if layout == "half":
        a, b = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat((a * cos - b * sin, a * sin + b * cos), -1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2)


@pytest.mark.parametrize("pair_layout", ["interleaved", "half"])
def test_translation_rotary_is_rope(pair_layout, dtype):
    pe = RotaryPE("t1:32", head_dim=64, pair_layout=pair_layout)
    positions = torch.arange(300, dtype=dtype)  # the elements' dtype sets the angles' precision
    x = torch.randn(2, 3, 300, 64, dtype=dtype)
    close(pe(x, pe.encode(positions)), reference_rope(x, positions, layout=pair_layout), dtype, 20)


def test_x_layouts_agree(dtype):
    pe_bhtd, pe_bthd, pe_btd = (RotaryPE("t1:2+so3:1x1", x_layout=lay) for lay in ("bhtd", "bthd", "btd"))
    g = sample(pe_bhtd, dtype)
    x = torch.randn(B, H, T, 7, dtype=dtype)
    ref = pe_bhtd(x, pe_bhtd.encode(g))
    close(pe_bthd(x.transpose(1, 2), pe_bthd.encode(g)).transpose(1, 2), ref, dtype)
    close(pe_btd(x[:, 0], pe_btd.encode(g)), ref[:, 0], dtype)


# --- precision, compile, buffers -----------------------------------------------------------------------
def test_bf16_inputs_keep_float32_angles():
    """Positions up to 4096 have no bf16 representation; the angles must come from float32."""
    pe = RotaryPE("t1:32")
    positions = torch.arange(4096)
    x = torch.randn(1, 2, 4096, 64)
    exact = pe(x, pe.encode(positions))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc = pe.encode(positions)
        out = pe(x.to(torch.bfloat16), enc)
    assert enc.cos.dtype == torch.float32 and out.dtype == torch.bfloat16
    err = (out.float() - exact).abs().max().item()
    assert err < 0.05, err  # bf16 rounding of x and of the result only
    bf16_positions = positions.to(torch.bfloat16).float()  # what computing angles in bf16 would do
    bad = pe(x, pe.encode(bf16_positions))
    assert (bad - exact).abs().max().item() > 1.0  # so the check above can fail


def test_fp64_positions_give_fp64_encodings():
    pe = RotaryPE("t1:4+so3:1x1")
    enc = pe.encode(pe.rep.group.sample((3,), generator=0, dtype=torch.float64))
    assert enc.cos.dtype == torch.float64 and enc.matrices[0].dtype == torch.float64


@pytest.mark.parametrize("pair_layout", ["interleaved", "half"])
def test_torch_compile_fullgraph(pair_layout):
    pe = GTAPE("t1:2+so2:1x1+so3:1x1+s2:1x1", pair_layout=pair_layout)  # every segment kind
    g = sample(pe, torch.float32)
    q, k, v = (torch.randn(B, H, T, pe.dim) for _ in range(3))

    def step(g, q, k, v):
        return pe.attend(q, k, v, pe.encode(g))

    compiled = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled(g, q, k, v), step(g, q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", ["t2:8(base=100)+so3:1x1", "t1:4(learnable)+so2:1x1"])
def test_meta_device_initialisation(spec):
    """The meta-device pattern (to_empty, then reset_parameters) gives the same PE as eager construction."""
    fresh = RotaryPE(spec)
    with torch.device("meta"):
        pe = RotaryPE(spec)
    pe.to_empty(device="cpu")
    pe.reset_parameters()
    g = sample(fresh, torch.float32)
    x = torch.randn(B, H, T, fresh.dim)
    torch.testing.assert_close(pe(x, pe.encode(g)), fresh(x, fresh.encode(g)))


def test_learnable_frequencies_train_and_serialise():
    pe = RotaryPE("t1:4(learnable)")
    x = torch.randn(1, 1, 6, 8)
    pe(x, pe.encode(torch.arange(6))).square().sum().backward()
    freqs = pe.rep.frequencies
    assert freqs.grad is not None and freqs.grad.abs().sum() > 0
    other = RotaryPE("t1:4(learnable)")
    with torch.no_grad():
        freqs.mul_(1.5)
    other.load_state_dict(pe.state_dict())
    torch.testing.assert_close(other.rep.frequencies, freqs)


def test_segments_merge_adjacent_rotations():
    pe = RotaryPE("t1:4+so2:2x1+1x0+1x0")
    kinds = [(s.kind, s.start, s.stop) for s in pe.plan.segments]
    assert kinds == [("rotation", 0, 12), ("identity", 12, 14)]


# --- bad input -----------------------------------------------------------------------------------------
def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"spec: 't1:16' has dimension 32, which does not tile head_dim=64"):
        RotaryPE("t1:16", head_dim=64)
    with pytest.raises(ValueError, match="spec: 'so3:1x1' gives an absolute encoding of width 9"):
        AbsolutePE("so3:1x1", width=3)
    with pytest.raises(ValueError, match="pair_layout: expected one of"):
        RotaryPE("t1:4", pair_layout="split")
    pe = RotaryPE("t1:4")
    enc = pe.encode(torch.arange(3))
    with pytest.raises(
        ValueError, match=r"x: expected head_dim 8 \(the spec's dimension\), got shape \(1, 1, 3, 6\)"
    ):
        pe(torch.zeros(1, 1, 3, 6), enc)
    with pytest.raises(ValueError, match="encoding: expected the Encoding returned by encode"):
        pe(torch.zeros(1, 1, 3, 8), (enc.cos, enc.sin))
    with pytest.raises(ValueError, match=r"positions\['orientation'\]: expected non-zero finite quaternions"):
        RotaryPE("t1:2+so3:1x1").encode({"position": torch.arange(2), "orientation": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="positions: no group element for attribute 'orientation'"):
        RotaryPE("t1:2+so3:1x1").encode({"position": torch.arange(2)})
    with pytest.raises(ValueError, match="spec: unknown group 'so4'"):
        GTAPE("so4:1x1")
    with pytest.raises(ValueError, match="features: expected width 9"):
        AbsolutePE("so3:1x1")(torch.zeros(2, 5), AbsolutePE("so3:1x1").encode(Q.random(2)))
    assert isinstance(enc, Encoding)


@pytest.mark.parametrize(
    "absolute, relative, elements",
    [
        ("s2@position:1x1+s2@velocity:1x1", "s2@position:1x1+1x2", {"position": 3, "velocity": 3}),
        ("so3:1x1+1x2", "so3:2x0+1x1+1x2", {"orientation": 4}),
    ],
)
def test_pes_of_one_forward_share_their_wigner_matrices_and_harmonics(
    absolute, relative, elements, monkeypatch
):
    """One cache for both PEs (the relative one first, as the model does: it reads the higher degrees):
    the same encodings as computed apart, and the matrices of each attribute computed once."""
    from geo_pe.pe import encoding as encoding_module
    from geo_pe.reps import lie

    gen = torch.Generator().manual_seed(0)
    absolute_pe, relative_pe = AbsolutePE(absolute, combine="concat"), RotaryPE(relative)
    space = ProductGroup({**absolute_pe.rep.attribute_groups, **relative_pe.rep.attribute_groups})
    positions = space.sample((2, 5), generator=gen)
    apart = [relative_pe.encode(positions), absolute_pe.encode(positions)]
    calls = []
    wigner, harmonics = encoding_module.wigner_D_all, lie.SphereRep.harmonics
    monkeypatch.setattr(encoding_module, "wigner_D_all", lambda *a: calls.append("D") or wigner(*a))
    monkeypatch.setattr(lie.SphereRep, "harmonics", lambda *a: calls.append("Y") or harmonics(*a))
    cache: dict = {}
    shared = [relative_pe.encode(positions, cache=cache), absolute_pe.encode(positions, cache=cache)]
    for a, b in zip(apart, shared, strict=True):
        for x, y in zip(a.matrices + a.harmonics, b.matrices + b.harmonics, strict=True):
            assert torch.equal(x, y)
    assert len(calls) == len(elements)  # one computation per attribute, not one per PE
