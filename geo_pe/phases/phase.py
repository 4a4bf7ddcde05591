"""`set_phase`: move the linear layers of any model between training phases without changing its function.

    set_phase(model, "equivariant", reps=(rep_in, rep_out))           # phase I on chosen layers
    set_phase(model, "free")                                           # phase II, full space
    set_phase(model, "subspace", subspace_dim=1000)                    # phase II, random affine subspace
    optimizer = rebuild_optimizer(optimizer, model)                    # train what the new phase trains

Layers are chosen by type, by a regular expression on their names (e.g. ``r".*\\.(q|k|v)_proj"`` for the
attention projections of an HF Llama), by a list of names or by a predicate; plain ``nn.Linear`` layers
are replaced by an equivalent `PhasedLinear` the first time. Every switch computes the new
parametrisation from the current weights and checks that the weights (hence the outputs) are unchanged:
equivariant -> free / subspace / residual, free -> subspace (burn-in), scalar identity -> equivariant,
and any phase -> free are exact. A switch into a constrained phase from weights outside it raises,
unless ``project=True`` (then the weights are projected and the function changes).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from geo_pe.phases.linear import PhasedLinear
from geo_pe.phases.parametrizations import (
    EquivariantWeight,
    FreeWeight,
    InvariantBias,
    ResidualPathwayWeight,
    ScalarIdentityWeight,
    SubspaceWeight,
    WeightParametrization,
)
from geo_pe.phases.projections import RandomSubspace

__all__ = ["PHASES", "PhaseReport", "phase_param_groups", "rebuild_optimizer", "select_layers", "set_phase"]


@dataclass
class PhaseReport:
    phase: str
    layers: list[str]
    trainable_parameters: int
    max_weight_change: float  # max |W_after - W_before| over the switched layers: 0 up to rounding when exact
    subspaces: list[RandomSubspace] = field(default_factory=list)


def select_layers(model: nn.Module, layers=None) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs of linear layers chosen by ``layers`` (see `set_phase`)."""
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, PhasedLinear))]
    if layers is None:
        phased = [(n, m) for n, m in linear if isinstance(m, PhasedLinear)]
        chosen = phased or linear
    elif isinstance(layers, type) or (isinstance(layers, tuple) and all(isinstance(t, type) for t in layers)):
        chosen = [(n, m) for n, m in model.named_modules() if isinstance(m, layers) and (n, m) in linear]
    elif isinstance(layers, str):
        pattern = re.compile(layers)
        chosen = [(n, m) for n, m in linear if pattern.fullmatch(n)]
    elif callable(layers):
        chosen = [(n, m) for n, m in linear if layers(n, m)]
    elif isinstance(layers, Iterable):
        names = set(layers)
        chosen = [(n, m) for n, m in linear if n in names]
        missing = names - {n for n, _ in chosen}
        if missing:
            raise ValueError(f"layers: no linear layers named {sorted(missing)}")
    else:
        raise ValueError(f"layers: expected a type, a regex, a list of names or a predicate, got {layers!r}")
    if not chosen:
        raise ValueError(
            f"layers: no linear layers matched {layers!r} (candidates: {[n for n, _ in linear][:8]} ...)"
        )
    return chosen


def _reps_for(name: str, layer: PhasedLinear, reps) -> tuple:
    if reps is None:
        found = layer.reps
    elif isinstance(reps, dict):
        found = next((v for pattern, v in reps.items() if re.fullmatch(pattern, name)), layer.reps)
    elif callable(reps):
        found = reps(name, layer)
    else:
        found = reps
    if found is None:
        raise ValueError(f"reps: layer {name!r} needs (rep_in, rep_out) for an equivariant phase")
    rep_in, rep_out = found
    if (rep_out.dim, rep_in.dim) != (layer.out_features, layer.in_features):
        raise ValueError(
            f"reps: layer {name!r} is {layer.out_features} x {layer.in_features}, the representations give "
            f"{rep_out.dim} x {rep_in.dim}"
        )
    return rep_in, rep_out


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    if "." not in name:
        return model, name
    path, child = name.rsplit(".", 1)
    return model.get_submodule(path), child


def _clear_subspace_caches(module, args):
    for m in module.modules():
        if isinstance(m, RandomSubspace):
            m.begin_forward()


# --- the phases: one builder each, from the weights at the switch to the new parametrisations -------------
Built = dict[str, tuple[WeightParametrization, WeightParametrization | None]]


@dataclass
class _Switch:
    """What a phase builder reads: the chosen layers, their weights and biases at the switch, and the
    options of `set_phase`. Builders that make random subspaces append them to ``subspaces``."""

    chosen: list[tuple[str, PhasedLinear]]
    before: dict[str, tuple[torch.Tensor, torch.Tensor | None]]
    reps: object
    structure: str
    free_weight_decay: float
    subspace_dim: int | None
    projection: str
    seed: int
    shared_subspace: bool
    rebuild: bool  # build only, leave the values as constructed (a saved model's structure)
    subspaces: list[RandomSubspace] = field(default_factory=list)


_BUILDERS: dict[str, Callable[[_Switch], Built]] = {}
_REMEMBERING: set[str] = set()


def _phase(name: str, *, remembers: bool = False):
    """Register the builder of phase ``name``; ``remembers``: its weights keep the weights at the switch."""

    def register(builder: Callable[[_Switch], Built]) -> Callable[[_Switch], Built]:
        _BUILDERS[name] = builder
        if remembers:
            _REMEMBERING.add(name)
        return builder

    return register


def _per_layer(switch: _Switch, make) -> Built:
    """``make(name, layer, W, b) -> (weight, bias)`` for every chosen layer, placed like its weight and
    loaded from it (projected where the phase constrains it)."""
    built = {}
    for name, layer in switch.chosen:
        W, b = switch.before[name]
        weight, bias = make(name, layer, W, b)
        weight = weight.to(device=W.device, dtype=W.dtype)
        bias = None if bias is None else bias.to(device=b.device, dtype=b.dtype)
        if not switch.rebuild:
            weight.load(W)
            if bias is not None:
                bias.load(b)
        built[name] = (weight, bias)
    return built


def _free_bias(b: torch.Tensor | None) -> FreeWeight | None:
    return FreeWeight(b) if b is not None else None


@_phase("scalar_identity")
def _scalar_identity(switch: _Switch) -> Built:
    def make(name, layer, W, b):
        if W.shape[0] != W.shape[1]:
            raise ValueError(f"layers: {name!r} is not square ({tuple(W.shape)}); W = b I needs in = out")
        return ScalarIdentityWeight(W.shape[0]), _free_bias(b)

    return _per_layer(switch, make)


@_phase("equivariant")
def _equivariant(switch: _Switch) -> Built:
    def make(name, layer, W, b):
        layer.reps = rep_in, rep_out = _reps_for(name, layer, switch.reps)
        bias = InvariantBias(rep_out) if b is not None else None
        return EquivariantWeight(rep_in, rep_out, switch.structure), bias

    return _per_layer(switch, make)


@_phase("free", remembers=True)
def _free(switch: _Switch) -> Built:
    return _per_layer(switch, lambda name, layer, W, b: (FreeWeight(W), _free_bias(b)))


@_phase("subspace", remembers=True)
def _subspace(switch: _Switch) -> Built:
    """w_t + A theta: one theta shared by every weight and bias (Li et al. 2018), or one per tensor."""
    if switch.subspace_dim is None:
        raise ValueError("subspace_dim: the subspace phase needs the dimension d of theta")
    tensors = [t for W_b in switch.before.values() for t in W_b if t is not None]
    if switch.shared_subspace:
        D, first = sum(t.numel() for t in tensors), tensors[0]
        shared = RandomSubspace(D, min(switch.subspace_dim, D), switch.projection, switch.seed)
        switch.subspaces.append(shared.to(first.device, first.dtype))
    built, start = {}, 0
    for i, (name, W_b) in enumerate(switch.before.items()):
        made = []
        for t in W_b:
            if t is None:
                made.append(None)
            elif switch.shared_subspace:  # owned (saved, moved) by the first tensor, referenced by the others
                made.append(SubspaceWeight(t, switch.subspaces[0], start, owned=start == 0))
                start += t.numel()
            else:
                d, own_seed = min(switch.subspace_dim, t.numel()), switch.seed + 1000 * i + len(made)
                own = RandomSubspace(t.numel(), d, switch.projection, own_seed)
                switch.subspaces.append(own.to(t.device, t.dtype))
                made.append(SubspaceWeight(t, switch.subspaces[-1], 0, owned=True))
        built[name] = (made[0], made[1])
    return built


@_phase("residual", remembers=True)
def _residual(switch: _Switch) -> Built:
    """Equivariant plus a free part under a much larger weight decay (Finzi et al. 2021)."""

    def make(name, layer, W, b):
        layer.reps = rep_in, rep_out = _reps_for(name, layer, switch.reps)
        weight = ResidualPathwayWeight(rep_in, rep_out, switch.structure, switch.free_weight_decay)
        return weight, _free_bias(b)

    return _per_layer(switch, make)


PHASES = tuple(_BUILDERS)


def set_phase(
    model: nn.Module,
    phase: str,
    *,
    layers=None,
    reps=None,
    subspace_dim: int | None = None,
    projection: str = "fastfood",
    seed: int = 0,
    shared_subspace: bool = True,
    structure: str = "auto",
    free_weight_decay: float = 100.0,
    project: bool = False,
    freeze_others: bool = False,
    rebuild: bool = False,
) -> PhaseReport:
    """Move the chosen linear layers of ``model`` to ``phase`` (in place); see the module docstring.

    Args:
        phase: ``"scalar_identity"`` (W = b I), ``"equivariant"``, ``"free"``, ``"subspace"``
            (w_t + A theta, theta = 0 at the switch) or ``"residual"`` (equivariant + penalised free part).
        layers: which layers (default: every `PhasedLinear`, else every ``nn.Linear``).
        reps: ``(rep_in, rep_out)``, a dict from name regex to such pairs, or ``f(name, layer)``; defaults to
            each layer's ``reps``. Needed for "equivariant" and "residual".
        subspace_dim, projection, seed, shared_subspace: the random subspace (one global theta shared by
            all chosen layers, as in Li et al. 2018, or one per layer).
        project: allow a switch that projects weights into a constrained phase (changes the function).
        freeze_others: in the subspace phase, also stop training every parameter outside the subspace.
        rebuild: only build the new parametrisations and leave their values as constructed, without the
            function check; for restoring the structure of a saved model (on the meta device too) before
            its state dict is loaded.
    """
    if phase not in PHASES:
        raise ValueError(f"phase: expected one of {PHASES}, got {phase!r}")
    chosen = select_layers(model, layers)
    for i, (name, layer) in enumerate(chosen):  # plain nn.Linear -> PhasedLinear, same function
        if isinstance(layer, nn.Linear):
            phased = PhasedLinear.from_linear(layer)
            parent, child = _parent(model, name)
            setattr(parent, child, phased)
            chosen[i] = (name, phased)

    def snapshot(t):  # contiguous, so that a weight rebuilt from it runs the same GEMM as after loading
        return None if t is None else t.detach().clone(memory_format=torch.contiguous_format)

    switch = _Switch(
        chosen=chosen,
        before={name: (snapshot(layer.weight), snapshot(layer.bias)) for name, layer in chosen},
        reps=reps,
        structure=structure,
        free_weight_decay=free_weight_decay,
        subspace_dim=subspace_dim,
        projection=projection,
        seed=seed,
        shared_subspace=shared_subspace,
        rebuild=rebuild,
    )
    before, subspaces = switch.before, switch.subspaces
    new = _BUILDERS[phase](switch)

    # check the function is unchanged before touching the model
    worst = float("nan") if rebuild else 0.0
    for name, (weight, bias) in ({} if rebuild else new).items():
        W, b = before[name]
        with torch.no_grad():
            change = (weight.weight() - W).abs().max().item()
            if bias is not None:
                change = max(change, (bias.weight() - b).abs().max().item())
        scale = max(1.0, W.abs().max().item())
        tol = (1e-10 if W.dtype == torch.float64 else 1e-5) * scale
        if change > tol and not project:
            raise ValueError(
                f"set_phase: the weights of {name!r} are not in the {phase} space (max change {change:.3g} "
                f"at a tolerance of {tol:.1g}); pass project=True to project them, which changes the function"
            )
        worst = max(worst, change)

    for name, layer in chosen:
        weight, bias = new[name]
        W, b = before[name]
        if phase in _REMEMBERING:  # these keep the weights at the switch (anchors of pulls and penalties)
            weight.remember(layer.weight_param, W)
            if bias is not None and layer.bias_param is not None:
                bias.remember(layer.bias_param, b)
        layer.weight_param, layer.bias_param = weight, bias

    if not getattr(model, "_geo_pe_cache_hook", None) and any(
        isinstance(m, RandomSubspace) for m in model.modules()
    ):
        model._geo_pe_cache_hook = model.register_forward_pre_hook(_clear_subspace_caches)
    if freeze_others and phase == "subspace":
        keep = {id(s.theta) for s in subspaces}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return PhaseReport(phase, [n for n, _ in chosen], trainable, worst, subspaces)


def phase_param_groups(model: nn.Module, weight_decay: float = 0.0, **group_options) -> list[dict]:
    """Optimizer parameter groups for the current phase: the trainable parameters, with the free part of
    residual pathways (``weight_decay_multiplier``) in its own group of larger weight decay."""
    plain, decayed = [], {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        multiplier = getattr(p, "weight_decay_multiplier", None)
        if multiplier is None:
            plain.append(p)
        else:
            decayed.setdefault(multiplier, []).append(p)
    # "base_weight_decay" travels with every group, so `rebuild_optimizer` restores the run's weight decay
    # (an optimizer's own default, e.g. AdamW's 0.01, is not what the groups were built with)
    base = {"base_weight_decay": weight_decay, **group_options}
    groups = [{"params": plain, "weight_decay": weight_decay, **base}]
    for multiplier, params in decayed.items():
        groups.append({"params": params, "weight_decay": weight_decay * multiplier, **base})
    return [g for g in groups if g["params"]]


def rebuild_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module, *, lr_multiplier: float = 1.0, **overrides
) -> torch.optim.Optimizer:
    """A new optimizer of the same class for the model's current trainable parameters.

    Defaults come from ``optimizer``, the weight decay from its groups when `phase_param_groups` built
    them (else from its defaults); ``lr_multiplier`` scales the learning rate (1.0 did best in the
    experiments; at 0.1x phase II did not learn what the symmetry hides); state is carried over for
    parameters that survive the switch.
    """
    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in {**optimizer.defaults, **overrides}.items() if k in accepted}
    defaults["lr"] = defaults["lr"] * lr_multiplier
    weight_decay = defaults.pop("weight_decay", 0.0)
    if "weight_decay" not in overrides and "base_weight_decay" in optimizer.param_groups[0]:
        weight_decay = optimizer.param_groups[0]["base_weight_decay"]
    groups = phase_param_groups(model, weight_decay=weight_decay)
    fresh = type(optimizer)(groups, **defaults)
    for group in fresh.param_groups:
        for p in group["params"]:
            if p in optimizer.state:
                fresh.state[p] = optimizer.state[p]
    return fresh
