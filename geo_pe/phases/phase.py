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
from collections.abc import Iterable
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

PHASES = ("scalar_identity", "equivariant", "free", "subspace", "residual")


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

    before = {name: (snapshot(layer.weight), snapshot(layer.bias)) for name, layer in chosen}
    subspaces: list[RandomSubspace] = []
    new: dict[str, tuple[WeightParametrization, WeightParametrization | None]] = {}
    if phase == "subspace":
        if subspace_dim is None:
            raise ValueError("subspace_dim: the subspace phase needs the dimension d of theta")
        tensors = [
            (name, key, t)
            for name, (W, b) in before.items()
            for key, t in (("w", W), ("b", b))
            if t is not None
        ]
        if shared_subspace:
            D = sum(t.numel() for _, _, t in tensors)
            first = tensors[0][2]
            shared = RandomSubspace(D, min(subspace_dim, D), projection, seed).to(first.device, first.dtype)
            subspaces.append(shared)
        start = 0
        for i, (name, W_b) in enumerate(before.items()):
            made = []
            for t in W_b:
                if t is None:
                    made.append(None)
                    continue
                if shared_subspace:  # owned (saved, moved) by the first tensor, referenced by the others
                    made.append(SubspaceWeight(t, shared, start, owned=start == 0))
                    start += t.numel()
                else:
                    own = RandomSubspace(
                        t.numel(), min(subspace_dim, t.numel()), projection, seed + 1000 * i + len(made)
                    )
                    subspaces.append(own.to(t.device, t.dtype))
                    made.append(SubspaceWeight(t, own, 0, owned=True))
            new[name] = (made[0], made[1])
    else:
        for name, layer in chosen:
            W, b = before[name]
            if phase == "free":
                weight, bias = FreeWeight(W), (FreeWeight(b) if b is not None else None)
            elif phase == "scalar_identity":
                if W.shape[0] != W.shape[1]:
                    raise ValueError(
                        f"layers: {name!r} is not square ({tuple(W.shape)}); W = b I needs in = out"
                    )
                weight, bias = ScalarIdentityWeight(W.shape[0]), (FreeWeight(b) if b is not None else None)
            else:
                rep_in, rep_out = _reps_for(name, layer, reps)
                layer.reps = (rep_in, rep_out)
                if phase == "equivariant":
                    weight = EquivariantWeight(rep_in, rep_out, structure)
                    bias = InvariantBias(rep_out) if b is not None else None
                else:
                    weight = ResidualPathwayWeight(rep_in, rep_out, structure, free_weight_decay)
                    bias = FreeWeight(b) if b is not None else None
            weight = weight.to(device=W.device, dtype=W.dtype)
            if bias is not None:
                bias = bias.to(device=b.device, dtype=b.dtype)
            if not rebuild:
                weight.load(W)
                if bias is not None:
                    bias.load(b)
            new[name] = (weight, bias)

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
        if phase in ("free", "subspace", "residual"):
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
