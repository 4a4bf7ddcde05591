"""`PhasedLinear`: a linear layer whose weight and bias come from swappable parametrisations."""

from __future__ import annotations

import torch
from torch import nn

from geo_pe.phases.parametrizations import FreeWeight, WeightParametrization

__all__ = ["PhasedLinear"]


class PhasedLinear(nn.Module):
    """``y = x W^T + b`` where W and b come from `WeightParametrization` objects that `set_phase` swaps.

    The layer does not know its phase: ``forward`` calls the weight parametrisation (``b x`` for scalar
    identity, blockwise for equivariant weights, ``F.linear`` otherwise) and adds the bias.

    Args:
        weight: the weight parametrisation, ``(out_features, in_features)``.
        bias: a bias parametrisation ``(out_features,)``, or None.
        reps: optional ``(rep_in, rep_out)`` for equivariant phases of this layer.
    """

    def __init__(
        self, weight: WeightParametrization, bias: WeightParametrization | None = None, *, reps=None
    ):
        super().__init__()
        if len(weight.shape) != 2:
            raise ValueError(f"weight: expected a matrix parametrisation, got shape {weight.shape}")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(f"bias: expected shape ({weight.shape[0]},), got {bias.shape}")
        self.out_features, self.in_features = weight.shape
        self.weight_param, self.bias_param = weight, bias
        self.reps = reps

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, reps=None) -> PhasedLinear:
        """The same map as ``linear``, with free parameters (phase "free")."""
        bias = FreeWeight(linear.bias) if linear.bias is not None else None
        return cls(FreeWeight(linear.weight), bias, reps=reps)

    @property
    def phase(self) -> str:
        return self.weight_param.phase

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_param.weight()

    @property
    def bias(self) -> torch.Tensor | None:
        return None if self.bias_param is None else self.bias_param.weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"x: expected a last dimension of {self.in_features}, got shape {tuple(x.shape)}"
            )
        y = self.weight_param(x)
        return y if self.bias_param is None else y + self.bias_param.weight().to(y.dtype)

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the current weight and bias."""
        W = self.weight.detach()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias_param is not None)
        linear = linear.to(dtype=W.dtype, device=W.device)
        with torch.no_grad():
            linear.weight.copy_(W)
            if self.bias_param is not None:
                linear.bias.copy_(self.bias.detach())
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, phase={self.phase!r}"
