"""Polynomial regression of symmetric and antisymmetric functions (the first example of Weiler et al.'s
introduction to equivariant networks, 2023).

A symmetric (even) function keeps only even powers, an antisymmetric (odd) one only odd powers: the
equivariant models live in half of the parameter space and, fitted on x >= 0, are already right on
x <= 0, where the unconstrained polynomial extrapolates freely.
"""

from __future__ import annotations

import torch

__all__ = ["fit_parity_polynomial", "parity_features"]

PARITIES = (None, "even", "odd")


def parity_features(x: torch.Tensor, degree: int, parity: str | None = None) -> torch.Tensor:
    """Powers x^p for p <= degree, all of them or only the even or odd ones: ``(..., features)``."""
    if parity not in PARITIES:
        raise ValueError(f"parity: expected None, 'even' or 'odd', got {parity!r}")
    powers = [p for p in range(degree + 1) if parity is None or (p % 2 == 0) == (parity == "even")]
    return torch.stack([x**p for p in powers], dim=-1)


def fit_parity_polynomial(x: torch.Tensor, y: torch.Tensor, degree: int, parity: str | None = None):
    """Least-squares fit; returns ``predict(x)`` for the fitted polynomial."""
    features = parity_features(x.double(), degree, parity)
    coefficients = torch.linalg.lstsq(features, y.double()[:, None]).solution[:, 0]

    def predict(t: torch.Tensor) -> torch.Tensor:
        return parity_features(t.double(), degree, parity) @ coefficients

    return predict
