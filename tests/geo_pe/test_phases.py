"""Phases: parametrisations, random subspaces and set_phase keep the function and train the right thing."""

import pytest
import torch
from torch import nn

from geo_pe.equivariance import EquivariantStructure
from geo_pe.phases import (
    PROJECTIONS,
    PenaltySchedule,
    PhasedLinear,
    RandomSubspace,
    ScalarIdentityWeight,
    equivariance_loss,
    make_projection,
    phase_param_groups,
    rebuild_optimizer,
    set_phase,
    symmetry_penalty,
)
from geo_pe.reps import IrrepsSpec, PermutationRep, SO3Rep, TensorPower, symmetric
from geo_pe.testing import action_of, tolerance

REP = SO3Rep([(2, 0), (2, 1), (1, 2)])  # dim 13


def equivariant_mlp(dtype, bias=True):
    layers = [nn.Linear(REP.dim, REP.dim, bias=bias), nn.Tanh(), nn.Linear(REP.dim, REP.dim, bias=bias)]
    return nn.Sequential(*layers).to(dtype)


def close(a, b, dtype, scale=1.0):
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(a, b, atol=atol * scale, rtol=rtol * scale)


# --- projections ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fastfood", "sparse", "dense"])
def test_adjoint_identity_and_regeneration(kind):
    P = make_projection(kind, 700, 45, seed=3).double()
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(45, generator=gen, dtype=torch.float64)
    y = torch.randn(700, generator=gen, dtype=torch.float64)
    assert abs(float(P(theta) @ y - theta @ P.adjoint(y))) < 1e-12  # <A x, y> = <x, A^T y>
    again = make_projection(kind, 700, 45, seed=3).double()
    assert torch.equal(again(theta), P(theta))  # rebuilt from the seed, bit for bit
    assert not torch.equal(make_projection(kind, 700, 45, seed=4).double()(theta), P(theta))


@pytest.mark.parametrize(
    "kind,D,d,exact",
    [
        ("fastfood", 512, 32, True),
        ("fastfood", 700, 45, False),
        ("sparse", 700, 45, True),
        ("dense", 700, 45, True),
    ],
)
def test_column_norms(kind, D, d, exact):
    P = make_projection(kind, D, d, seed=1).double()
    columns = torch.stack([P(e) for e in torch.eye(d, dtype=torch.float64)], dim=1)  # (D, d)
    norms = columns.norm(dim=0)
    if exact:
        torch.testing.assert_close(norms, torch.ones(d, dtype=torch.float64), atol=1e-12, rtol=0)
    else:  # the last Fastfood block is cut at D rows
        assert (norms - 1).abs().max() < 0.06 and norms.max() <= 1 + 1e-12
    if kind == "sparse":
        density = (columns != 0).double().mean().item()
        assert 0.5 / D**0.5 < density < 1.5 / D**0.5


@pytest.mark.parametrize("kind", ["fastfood", "sparse", "dense", "identity"])
def test_gradient_wrt_theta_is_A_transpose_gradient_wrt_w(kind):
    """Finite differences of L(w_t + A theta) along each theta coordinate equal (A^T grad_w L)."""
    D, d = 64, 64 if kind == "identity" else 12
    subspace = RandomSubspace(D, d, kind, seed=2).double()
    gen = torch.Generator().manual_seed(1)
    w_t, target = (
        torch.randn(D, generator=gen, dtype=torch.float64),
        torch.randn(D, generator=gen, dtype=torch.float64),
    )
    with torch.no_grad():
        subspace.theta.normal_(generator=gen)

    def loss_of(theta):
        return (torch.tanh(w_t + subspace.projection(theta)) * target).sum()

    theta = subspace.theta.detach().clone().requires_grad_(True)
    loss_of(theta).backward()
    w = (w_t + subspace.projection(theta.detach())).requires_grad_(True)
    (torch.tanh(w) * target).sum().backward()
    torch.testing.assert_close(theta.grad, subspace.projection.adjoint(w.grad), atol=1e-12, rtol=0)
    h = 1e-6
    for i in range(d):
        e = torch.zeros(d, dtype=torch.float64)
        e[i] = h
        fd = (loss_of(theta.detach() + e) - loss_of(theta.detach() - e)) / (2 * h)
        assert abs(float(fd) - float(theta.grad[i])) < 1e-7


def test_identity_subspace_training_reproduces_full_space_training():
    torch.manual_seed(0)
    full = equivariant_mlp(torch.float64)
    sub = equivariant_mlp(torch.float64)
    sub.load_state_dict(full.state_dict())
    set_phase(full, "free")
    D = sum(p.numel() for p in full.parameters())
    report = set_phase(sub, "subspace", subspace_dim=D, projection="identity", freeze_others=True)
    assert report.trainable_parameters == D
    opt_full = torch.optim.Adam(full.parameters(), lr=1e-2)
    opt_sub = torch.optim.Adam([p for p in sub.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(16, REP.dim, generator=gen, dtype=torch.float64)
        for model, opt in ((full, opt_full), (sub, opt_sub)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(full, sub, strict=True):
        if isinstance(a, PhasedLinear):
            torch.testing.assert_close(b.weight, a.weight, atol=1e-13, rtol=0)
            torch.testing.assert_close(b.bias, a.bias, atol=1e-13, rtol=0)


# --- transitions ---------------------------------------------------------------------------------------
TRANSITIONS = {
    "scalar_identity -> equivariant": [("scalar_identity", {}), ("equivariant", {})],
    "equivariant -> free": [("equivariant", {}), ("free", {})],
    "equivariant -> subspace (fastfood, shared)": [("equivariant", {}), ("subspace", {"subspace_dim": 30})],
    "equivariant -> subspace (sparse, per layer)": [
        ("equivariant", {}),
        ("subspace", {"subspace_dim": 30, "projection": "sparse", "shared_subspace": False}),
    ],
    "equivariant -> subspace (dense)": [
        ("equivariant", {}),
        ("subspace", {"subspace_dim": 30, "projection": "dense"}),
    ],
    "free -> subspace (burn-in)": [("free", {}), ("subspace", {"subspace_dim": 30})],
    "equivariant -> residual": [("equivariant", {}), ("residual", {})],
    "subspace -> free": [("equivariant", {}), ("subspace", {"subspace_dim": 30}), ("free", {})],
}


def random_step(model, gen, dtype):
    """Change the trainable parameters a little (as a training step would)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=dtype))


@pytest.mark.parametrize("name", list(TRANSITIONS))
def test_function_continuity(name, dtype):
    torch.manual_seed(0)
    model = equivariant_mlp(dtype, bias=name.startswith("equivariant"))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, REP.dim, generator=gen, dtype=dtype)
    first, *rest = TRANSITIONS[name]
    set_phase(model, first[0], reps=(REP, REP), project=True, **first[1])
    for phase, options in rest:
        random_step(model, gen, dtype)
        before = model(x)
        report = set_phase(model, phase, reps=(REP, REP), **options)
        close(model(x), before, dtype)
        assert report.max_weight_change <= tolerance(dtype)[0] * 10
        assert all(layer.phase == phase for layer in model if isinstance(layer, PhasedLinear))


def test_constrained_phases_refuse_weights_outside_them():
    model = equivariant_mlp(torch.float64)
    with pytest.raises(ValueError, match=r"set_phase: the weights of '0' are not in the equivariant space"):
        set_phase(model, "equivariant", reps=(REP, REP))
    assert all(isinstance(m, PhasedLinear) and m.phase == "free" for m in (model[0], model[2]))  # unchanged
    set_phase(model, "equivariant", reps=(REP, REP), project=True)  # allowed, and says so by name


def test_equivariant_phase_weights_commute_with_the_group_after_training(dtype):
    model = equivariant_mlp(dtype)
    set_phase(model, "equivariant", reps=(REP, REP), project=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, REP.dim, dtype=dtype)).sum().backward()
        opt.step()
    q = REP.group.sample((5,), generator=0, dtype=dtype)
    D = REP.matrices(q).to(dtype)
    for layer in (model[0], model[2]):
        W = layer.weight.detach()
        close(D @ W, W @ D, dtype, 10)
        close(D @ layer.bias.detach(), layer.bias.detach().expand(5, -1), dtype, 10)


@pytest.mark.parametrize(
    "rep_in,rep_out",
    [
        (SO3Rep([(2, 0), (2, 1)]), SO3Rep([(1, 1), (3, 0)])),
        (IrrepsSpec.parse("t1:2+so2:1x0+1x3").build(), IrrepsSpec.parse("so2:2x3+t1:2").build()),
        (PermutationRep(symmetric(4)), TensorPower(PermutationRep(symmetric(4)), 2)),
    ],
)
@pytest.mark.parametrize("structure", ["auto", "basis"])
def test_projection_is_an_orthogonal_idempotent(rep_in, rep_out, structure):
    space = EquivariantStructure(rep_in, rep_out, structure)
    W = torch.randn(rep_out.dim, rep_in.dim, dtype=torch.float64)
    P = space.project(W.to(torch.get_default_dtype())).double()
    torch.testing.assert_close(space.project(P.to(torch.get_default_dtype())).double(), P, atol=1e-6, rtol=0)
    basis = space.dense_basis()
    residual = W - P
    assert torch.einsum("kmn,mn->k", basis, residual).abs().max() < 1e-5  # residual orthogonal to the space
    identity_space = ScalarIdentityWeight(5)
    V = torch.randn(5, 5)
    torch.testing.assert_close(identity_space.project(identity_space.project(V)), identity_space.project(V))


@pytest.mark.parametrize(
    "rep_in,rep_out",
    [
        (SO3Rep([(2, 0), (2, 1), (1, 2)]), SO3Rep([(1, 1), (3, 0), (2, 2)])),
        (IrrepsSpec.parse("t1:2+so2:1x0+1x3").build(), IrrepsSpec.parse("so2:2x3+t1:2").build()),
    ],
)
def test_schur_expansion_and_both_forward_paths_agree(rep_in, rep_out):
    """Dense expansion (many rows: one GEMM) == blockwise apply (few rows) == the identity applied."""
    space = EquivariantStructure(rep_in, rep_out).double()
    assert space.kind == "schur"
    c = torch.randn(space.num_maps, dtype=torch.float64)
    W = space.expand(c)
    eye = torch.eye(rep_in.dim, dtype=torch.float64)
    torch.testing.assert_close(W, space.apply(eye, c).T)  # the slow reference: columns of W
    for rows in (1, 3 * rep_in.dim):  # below and above the switch to the dense path
        x = torch.randn(rows, rep_in.dim, dtype=torch.float64)
        torch.testing.assert_close(space.linear(x, c), x @ W.T)
        torch.testing.assert_close(space.apply(x, c), x @ W.T)
    torch.testing.assert_close(space.coefficients_of(W), c)


def test_scalar_identity_does_no_matmul():
    layer = PhasedLinear(ScalarIdentityWeight(64, value=0.5))
    assert [p.numel() for p in layer.parameters()] == [1]
    x = torch.randn(8, 64)
    with torch.profiler.profile() as prof:
        y = layer(x)
    ops = {e.name for e in prof.events()}
    assert not ops & {"aten::mm", "aten::addmm", "aten::matmul", "aten::linear", "aten::bmm"}, ops
    torch.testing.assert_close(y, 0.5 * x)


# --- training helpers ----------------------------------------------------------------------------------
def test_shared_theta_is_projected_once_per_forward_and_accumulates_gradients():
    model = equivariant_mlp(torch.float64)
    set_phase(model, "free")
    report = set_phase(model, "subspace", subspace_dim=10)
    subspace = report.subspaces[0]
    calls = []
    subspace.projection.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(4, REP.dim, dtype=torch.float64)
    model(x).sum().backward()
    model(x).sum().backward()  # gradient accumulation: a fresh graph each forward
    assert len(calls) == 2
    assert subspace.theta.grad is not None


def test_rebuild_optimizer_trains_what_the_phase_trains():
    model = nn.Sequential(equivariant_mlp(torch.float32), nn.LayerNorm(REP.dim))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    set_phase(model, "equivariant", reps=(REP, REP), project=True, layers=nn.Linear)
    opt = rebuild_optimizer(opt, model)
    set_phase(model, "subspace", subspace_dim=12, freeze_others=True)
    fresh = rebuild_optimizer(opt, model, lr_multiplier=0.1)
    params = [p for g in fresh.param_groups for p in g["params"]]
    assert len(params) == 1 and params[0].numel() == 12
    assert (
        fresh.param_groups[0]["lr"] == pytest.approx(1e-4) and fresh.param_groups[0]["weight_decay"] == 0.01
    )
    set_phase(model, "residual", reps=(REP, REP), layers=PhasedLinear)
    for p in model.parameters():
        p.requires_grad_(True)
    groups = rebuild_optimizer(fresh, model).param_groups
    assert sorted(g["weight_decay"] for g in groups) == [pytest.approx(1e-2), pytest.approx(1.0)]


def test_equivariance_loss_and_symmetry_penalty():
    model = equivariant_mlp(torch.float64)
    model[1] = nn.Identity()  # elementwise tanh on l >= 1 channels would not be equivariant
    set_phase(model, "equivariant", reps=(REP, REP), project=True)
    act = action_of(REP)
    x = torch.randn(6, REP.dim, dtype=torch.float64)
    assert equivariance_loss(model, x, REP.group, act_in=act, act_out=act, num_samples=3) < 1e-20
    set_phase(model, "free")
    assert float(symmetry_penalty(model)) < 1e-20 and float(symmetry_penalty(model, toward="anchor")) == 0
    random_step(model, torch.Generator().manual_seed(2), torch.float64)
    loss = equivariance_loss(model, x, REP.group, act_in=act, act_out=act, num_samples=3)
    penalty = symmetry_penalty(model)
    assert loss > 1e-4 and penalty > 1e-3 and symmetry_penalty(model, toward="anchor") > penalty
    (loss + penalty).backward()
    assert all(p.grad is not None for p in model.parameters())
    calls = []

    def counted(batch):
        calls.append(batch.shape[0])
        return model(batch)

    batched = equivariance_loss(
        counted, x, REP.group, act_in=act, act_out=act, num_samples=3, generator=5, batched=True
    )
    looped = equivariance_loss(model, x, REP.group, act_in=act, act_out=act, num_samples=3, generator=5)
    assert calls == [4 * 6]  # the batch and its 3 transformed copies in one forward
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=0)
    schedule = PenaltySchedule(1.0, 0.0, steps=10, decay="cosine")
    assert schedule(0) == 1.0 and schedule(10) == 0.0 and 0.4 < schedule(5) < 0.6
    assert PenaltySchedule(1.0, 0.01, steps=2, decay="exponential")(1) == pytest.approx(0.1)


@pytest.mark.parametrize("last", ["equivariant", "free", "subspace", "residual", "scalar_identity"])
def test_state_dict_round_trip_in_every_phase(last):
    def build():
        torch.manual_seed(0)
        model = equivariant_mlp(torch.float64, bias=False)
        if last == "scalar_identity":
            set_phase(model, "scalar_identity", project=True)
            return model
        set_phase(model, "equivariant", reps=(REP, REP), project=True)
        if last != "equivariant":
            set_phase(model, last, reps=(REP, REP), subspace_dim=25, projection="fastfood", seed=7)
        return model

    model = build()
    random_step(model, torch.Generator().manual_seed(3), torch.float64)
    x = torch.randn(4, REP.dim, dtype=torch.float64)
    fresh = build()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)


def test_checkpoint_from_another_subspace_is_refused():
    model = equivariant_mlp(torch.float64, bias=False)
    set_phase(model, "subspace", subspace_dim=20, seed=1)
    other = equivariant_mlp(torch.float64, bias=False)
    set_phase(other, "subspace", subspace_dim=20, seed=2)
    with pytest.raises(ValueError, match="checkpoint: it was saved with the random subspace"):
        other.load_state_dict(model.state_dict())


def test_hf_llama_attention_projections_by_name():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 50, (2, 7))
    pattern = r".*\.(q|k|v)_proj"
    report = set_phase(model, "scalar_identity", layers=pattern, project=True)
    assert len(report.layers) == 6 and all(n.endswith(("q_proj", "k_proj", "v_proj")) for n in report.layers)
    with torch.no_grad():
        before = model(ids).logits
        set_phase(model, "free", layers=pattern)
        torch.testing.assert_close(model(ids).logits, before)
        set_phase(model, "subspace", layers=pattern, subspace_dim=40)
        torch.testing.assert_close(model(ids).logits, before)
    assert isinstance(model.model.layers[0].mlp.gate_proj, nn.Linear)  # untouched


def test_bad_arguments():
    model = equivariant_mlp(torch.float32)
    with pytest.raises(ValueError, match="phase: expected one of"):
        set_phase(model, "phase3")
    with pytest.raises(ValueError, match="layers: no linear layers matched"):
        set_phase(model, "free", layers=r"attention\..*")
    with pytest.raises(ValueError, match="subspace_dim: the subspace phase needs"):
        set_phase(model, "subspace")
    with pytest.raises(ValueError, match=r"reps: layer '0' needs \(rep_in, rep_out\)"):
        set_phase(model, "equivariant")
    with pytest.raises(ValueError, match="projection: expected one of"):
        make_projection("gaussian", 10, 2)
    with pytest.raises(ValueError, match="subspace_dim: expected at most the number of weights"):
        make_projection("dense", 10, 20)
    assert "identity" in PROJECTIONS


def test_rebuild_optimizer_keeps_the_weight_decay_the_groups_were_built_with():
    """AdamW's own default weight decay is 0.01; groups built with 0 must stay at 0 after the switch."""
    model = equivariant_mlp(torch.float32)
    opt = torch.optim.AdamW(phase_param_groups(model, weight_decay=0.0), lr=1e-3)
    assert opt.defaults["weight_decay"] == 0.01
    set_phase(model, "free")
    assert all(g["weight_decay"] == 0.0 for g in rebuild_optimizer(opt, model).param_groups)
    assert all(g["weight_decay"] == 0.5 for g in rebuild_optimizer(opt, model, weight_decay=0.5).param_groups)


def test_a_phase_has_one_name_from_the_yaml_to_the_parametrization():
    """The names a run config accepts are set_phase's, and each phase's parametrization carries the name
    it was registered under (what `PhasedLinear.phase` and a model's phase_history report)."""
    import typing

    from geo_pe.phases import PHASES
    from train.config import TrainArguments

    hints = typing.get_type_hints(TrainArguments)
    for key in ("phase1_constraint", "phase2"):
        assert set(typing.get_args(hints[key])) - {"none"} <= set(PHASES), key
    for phase in PHASES:
        model = nn.Sequential(nn.Linear(REP.dim, REP.dim))
        set_phase(model, phase, reps=(REP, REP), subspace_dim=5, project=True)
        assert model[0].weight_param.phase == model[0].phase == phase
