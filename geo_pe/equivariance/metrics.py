"""How equivariant is a trained network, end to end and layer by layer (Shahverdi et al. 2026).

`equivariance_error` (from `geo_pe.testing`) measures a whole module. `layerwise_equivariance` looks
inside: for a group element g acting on the inputs, it compares each layer's activations at g . x with
those at x over probe inputs and reports

* ``linear_error``: median relative error of the best linear map A with h(g x) ~ A h(x), fitted by least
  squares on half of the probes and evaluated on the other half (so that A cannot simply memorise);
* ``permutation_error``: the same for the best *signed permutation* of units, found by Hungarian
  matching (scipy's ``linear_sum_assignment``) on the absolute correlations between units;
* ``matched_fraction``: the fraction of units whose matched correlation is at least ``threshold``.

Shahverdi, Marchetti, Bökman and Kohn (2026) show that end-to-end equivariance of an identifiable
network implies that each layer maps g to such an action (a permutation of units for Tanh networks).
Always read the numbers next to a control element that the network was not trained to respect:
`compare_layerwise` does both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from geo_pe.testing import equivariance_error

__all__ = [
    "LayerReport",
    "compare_layerwise",
    "equivariance_error",
    "layer_activations",
    "layerwise_equivariance",
    "unit_equivariance",
]


@dataclass
class LayerReport:
    layer: str
    linear_error: float
    permutation_error: float
    matched_fraction: float
    permutation: torch.Tensor  # unit j of h(g x) corresponds to unit permutation[j] of h(x)
    signs: torch.Tensor  # and to it times signs[j]

    def row(self) -> str:
        return (
            f"{self.layer:<12} linear {self.linear_error:8.3g}  permutation {self.permutation_error:8.3g}  "
            f"matched {self.matched_fraction:6.1%}"
        )


def layer_activations(model: nn.Sequential, layers: Sequence[int] | None = None) -> Callable:
    """``x -> [h_1(x), ...]``: the outputs of the chosen children of an ``nn.Sequential`` (default: all)."""
    chosen = set(range(len(model))) if layers is None else set(layers)

    def activations(x):
        out = []
        for i, module in enumerate(model):
            x = module(x)
            if i in chosen:
                out.append(x)
        return out

    return activations


def _relative(residual: torch.Tensor, target: torch.Tensor) -> float:
    ratio = residual.norm(dim=-1) / target.norm(dim=-1).clamp_min(1e-12)
    return float(ratio.median())


def _correlations(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlations between the columns of a and b; 0 for constant (inactive) units."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = a.norm(dim=0), b.norm(dim=0)
    c = (a.T @ b) / (na[:, None] * nb[None, :]).clamp_min(1e-12)
    c[(na < 1e-9)[:, None] | (nb < 1e-9)[None, :]] = 0
    return c


def layerwise_equivariance(
    activations: Callable[[torch.Tensor], list[torch.Tensor]],
    probes: torch.Tensor,
    act: Callable[[torch.Tensor], torch.Tensor],
    *,
    threshold: float = 0.9,
    names: Sequence[str] | None = None,
) -> list[LayerReport]:
    """Per-layer equivariance of ``activations`` under the input transformation ``act`` (see the module).

    Args:
        activations: ``x -> [h_1(x), h_2(x), ...]``, e.g. `layer_activations` of an ``nn.Sequential``.
        probes: ``(N, ...)`` inputs; N should exceed twice the widest layer for a meaningful linear fit.
        act: ``x -> g . x`` on a batch of inputs.
    """
    with torch.no_grad():
        before = [h.flatten(1) for h in activations(probes)]
        after = [h.flatten(1) for h in activations(act(probes))]
    names = list(names) if names is not None else [f"layer {i + 1}" for i in range(len(before))]
    return [
        unit_equivariance(h, hg, name=name, threshold=threshold)
        for name, h, hg in zip(names, before, after, strict=True)
    ]


def unit_equivariance(
    before: torch.Tensor, after: torch.Tensor, *, name: str = "layer", threshold: float = 0.9
) -> LayerReport:
    """The per-layer comparison of `layerwise_equivariance` on activations at hand: ``before`` ``(N, units)``
    at x and ``after`` ``(N, units)`` at g . x, row for row. Use it when the action also moves samples
    around, e.g. tokens: align them first (row i of ``after`` must correspond to row i of ``before``)."""
    from scipy.optimize import linear_sum_assignment

    if before.dim() != 2 or before.shape != after.shape:
        raise ValueError(
            f"after: expected the shape of before (N, units) = {tuple(before.shape)}, "
            f"got {tuple(after.shape)}"
        )
    h, hg = before.detach().double(), after.detach().double()
    half = h.shape[0] // 2
    A = torch.linalg.lstsq(h[:half], hg[:half]).solution  # hg ~ h @ A
    linear = _relative(hg[half:] - h[half:] @ A, hg[half:])
    corr = _correlations(hg, h)  # (units of h(gx), units of h(x))
    rows, cols = linear_sum_assignment((-corr.abs()).numpy())
    perm = torch.as_tensor(cols)[torch.argsort(torch.as_tensor(rows))]
    matched = corr[torch.arange(corr.shape[0]), perm]
    signs = torch.where(matched < 0, -1.0, 1.0).double()
    permutation = _relative(hg - h[:, perm] * signs, hg)
    matched_fraction = float((matched.abs() >= threshold).double().mean())
    return LayerReport(name, linear, permutation, matched_fraction, perm, signs)


def compare_layerwise(
    activations: Callable[[torch.Tensor], list[torch.Tensor]],
    probes: torch.Tensor,
    trained: Callable[[torch.Tensor], torch.Tensor],
    control: Callable[[torch.Tensor], torch.Tensor],
    **kwargs,
) -> dict[str, list[LayerReport]]:
    """`layerwise_equivariance` for the trained symmetry and a control element, side by side."""
    return {
        "trained": layerwise_equivariance(activations, probes, trained, **kwargs),
        "control": layerwise_equivariance(activations, probes, control, **kwargs),
    }
