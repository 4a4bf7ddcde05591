"""Soft equivariance for phase II and the baselines: an equivariance loss and a pull toward symmetry.

Prototypes showed that an unregularised phase II at the full learning rate overfits small data and loses
to equivariant-only training when the symmetry is nearly exact. Two remedies live here:

* `equivariance_loss`: the mean squared difference ``|f(g x) - g f(x)|^2`` under random group elements
  (differentiable; the layerwise experiments (Shahverdi et al. 2026) train with it);
* `symmetry_penalty`: ``sum ||W - P(W)||^2`` over the layers that left a symmetric phase, with P the
  projection onto that phase's space (or ``||W - W_switch||^2``, toward the weights at the switch),
  weighted by a `PenaltySchedule` that can decay over phase II.

The residual pathway prior is a parametrisation (`ResidualPathwayWeight`) with its own weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from geo_pe.phases.linear import PhasedLinear
from geo_pe.reps.groups import Group, as_generator
from geo_pe.testing import invariant

__all__ = ["PenaltySchedule", "equivariance_loss", "symmetry_penalty"]


def equivariance_loss(
    fn,
    inputs,
    group: Group | Callable[[torch.Generator], Any],
    *,
    act_in,
    act_out=invariant,
    num_samples: int = 1,
    generator: torch.Generator | int | None = None,
    batched: bool = False,
) -> torch.Tensor:
    """Mean over ``num_samples`` random g of ``mean((fn(g . x) - g . fn(x))^2)`` (differentiable).

    Arguments as in `geo_pe.testing.equivariance_error` (``group`` a `Group` or ``generator -> g``);
    ``fn(x)`` is computed once and reused. With ``batched=True``, ``inputs`` is one batch (a tensor or a
    dict of tensors, batch first) and ``fn`` sees x and its ``num_samples`` transformed copies
    concatenated along the batch in a single call, whose output is split again: one forward pass, as
    DistributedDataParallel needs before each backward.
    """
    gen = as_generator(generator)
    single = not isinstance(inputs, (tuple, list))
    args = (inputs,) if single else tuple(inputs)
    dtype = next((t.dtype for t in _tensors(args) if t.is_floating_point()), None)

    def sample():
        return group.sample(generator=gen, dtype=dtype) if isinstance(group, Group) else group(gen)

    if batched:
        if not single:
            raise ValueError("inputs: batched=True takes one batch (a tensor or a dict of tensors)")
        elements = [sample() for _ in range(num_samples)]
        copies = [inputs, *(act_in(g, inputs) for g in elements)]
        outputs = fn(_concat(copies))
        if not isinstance(outputs, torch.Tensor):
            raise ValueError("fn: with batched=True it must return one tensor, batch first")
        reference, *moved = outputs.chunk(num_samples + 1)
        total = sum((m - act_out(g, reference)).pow(2).mean() for g, m in zip(elements, moved, strict=True))
        return total / num_samples
    reference = fn(*args)
    total = 0.0
    for _ in range(num_samples):
        g = sample()
        moved = (act_in(g, args[0]),) if single else tuple(act_in(g, args))
        total = total + (fn(*moved) - act_out(g, reference)).pow(2).mean()
    return total / num_samples


def _tensors(values) -> list[torch.Tensor]:
    if isinstance(values, torch.Tensor):
        return [values]
    if isinstance(values, dict):
        values = list(values.values())
    if isinstance(values, (tuple, list)):
        return [t for v in values for t in _tensors(v)]
    return []


def _concat(batches: list):
    """Concatenate batches (tensors or nested dicts of tensors) along the batch dimension."""
    if isinstance(batches[0], dict):
        return {k: _concat([b[k] for b in batches]) for k in batches[0]}
    return torch.cat(batches)


def symmetry_penalty(model: nn.Module, *, toward: str = "subspace") -> torch.Tensor:
    """Sum over `PhasedLinear` layers that left a symmetric phase of ``||W - P(W)||^2`` (``"subspace"``) or
    ``||W - W_switch||^2`` (``"anchor"``); 0 when no layer has left one."""
    if toward not in ("subspace", "anchor"):
        raise ValueError(f"toward: expected 'subspace' or 'anchor', got {toward!r}")
    total = None
    for layer in model.modules():
        if not isinstance(layer, PhasedLinear):
            continue
        for param in (layer.weight_param, layer.bias_param):
            if param is None:
                continue
            target_space = param.symmetry if toward == "subspace" else None
            if toward == "subspace" and target_space is None:
                continue
            if toward == "anchor" and param.anchor is None:
                continue
            W = param.weight()
            target = target_space.project(W) if toward == "subspace" else param.anchor.to(W.dtype)
            term = (W - target).pow(2).sum()
            total = term if total is None else total + term
    if total is None:
        reference = next(model.parameters(), torch.zeros(()))
        return torch.zeros((), dtype=reference.dtype, device=reference.device)
    return total


@dataclass(frozen=True)
class PenaltySchedule:
    """The weight of the pull toward symmetry at step ``t`` of phase II: ``start`` decaying to ``end`` over
    ``steps`` steps (``"constant"``, ``"linear"``, ``"cosine"`` or ``"exponential"``), ``end`` afterwards."""

    start: float
    end: float = 0.0
    steps: int = 1
    decay: str = "constant"

    def __post_init__(self):
        if self.decay not in ("constant", "linear", "cosine", "exponential"):
            raise ValueError(f"decay: expected constant, linear, cosine or exponential, got {self.decay!r}")
        if self.steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {self.steps!r}")
        if self.decay == "exponential" and (self.start <= 0 or self.end <= 0):
            raise ValueError("start, end: an exponential decay needs positive start and end weights")

    def __call__(self, step: int) -> float:
        if self.decay == "constant":
            return self.start
        frac = min(max(step / self.steps, 0.0), 1.0)
        if self.decay == "linear":
            return self.start + (self.end - self.start) * frac
        if self.decay == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * frac))
        return self.start * (self.end / self.start) ** frac
