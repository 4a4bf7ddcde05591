"""The symmetrizer (group averaging): S(W) = 1/|G| sum_g rho_out(g) W rho_in(g)^-1, for finite groups.

For orthogonal representations S is the orthogonal projection onto the equivariant weights: it is
*symmetric* (S(W) is equivariant), *fixing* (S(W) = W for equivariant W) and *idempotent*
(S(S(W)) = S(W)), and its trace is the dimension of the equivariant subspace,
1/|G| sum_g chi_out(g) chi_in(g) (for permutation representations: the number of orbits on index pairs).

For permutation representations S(W) is the mean of W over each orbit of index pairs, computed from
`orbit_pattern` without enumerating the group; otherwise the group is enumerated.

Example::

    >>> import torch
    >>> from geo_pe.reps import PermutationRep, symmetric
    >>> from geo_pe.equivariance import Symmetrizer
    >>> S = Symmetrizer(PermutationRep(symmetric(4)), PermutationRep(symmetric(4)))
    >>> S.dim                                   # DeepSets: a I + b 11^T
    2
    >>> W = S(torch.randn(4, 4, dtype=torch.float64))
    >>> torch.allclose(S(W), W)
    True
"""

from __future__ import annotations

import torch

from geo_pe.equivariance.intertwiners import _orbit_basis, orbit_pattern, permutation_action
from geo_pe.reps.base import Representation
from geo_pe.reps.finite import PermutationGroup

__all__ = ["Symmetrizer"]


class Symmetrizer:
    """S(W) for ``W`` of shape ``(..., m, n)``, m = rep_out.dim, n = rep_in.dim (finite groups)."""

    def __init__(self, rep_out: Representation, rep_in: Representation):
        if not isinstance(rep_out.group, PermutationGroup) or rep_out.group != rep_in.group:
            raise ValueError(
                "reps: the symmetrizer averages over one finite group; "
                f"got {rep_out.group.name} and {rep_in.group.name}"
            )
        self.rep_out, self.rep_in = rep_out, rep_in
        self.group = rep_out.group
        identity = self.group.identity()
        self.by_orbits = all(permutation_action(r, identity) is not None for r in (rep_out, rep_in))
        if self.by_orbits:
            self.pattern = orbit_pattern(rep_out, rep_in)
            self._sizes = torch.bincount(self.pattern.flatten()).to(torch.float64)
        else:
            self.pattern = None
            elements = self.group.elements()
            self._out = rep_out.matrices(elements).double()  # (|G|, m, m)
            self._in = rep_in.matrices(elements).double()  # (|G|, n, n)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rep_out.dim, self.rep_in.dim

    def __call__(self, W: torch.Tensor) -> torch.Tensor:
        if W.shape[-2:] != self.shape:
            raise ValueError(
                f"W: expected shape (..., {self.shape[0]}, {self.shape[1]}), got {tuple(W.shape)}"
            )
        if self.by_orbits:
            flat = W.reshape(*W.shape[:-2], -1)
            labels = self.pattern.flatten().to(W.device)
            sums = torch.zeros(*flat.shape[:-1], self._sizes.numel(), dtype=W.dtype, device=W.device)
            sums.index_add_(-1, labels, flat)
            means = sums / self._sizes.to(W.dtype).to(W.device)
            return means[..., labels].reshape(W.shape)
        out = self._out.to(W.dtype)
        inv = self._in.to(W.dtype).transpose(-1, -2)  # orthogonal: rho(g)^-1 = rho(g)^T
        return (out @ W[..., None, :, :] @ inv).mean(dim=-3)

    def basis(self) -> torch.Tensor:
        """Orthonormal basis ``(k, m, n)`` (float64) of the image of S, the equivariant weights."""
        if self.by_orbits:
            return _orbit_basis(self.pattern)
        m, n = self.shape
        projector = self(torch.eye(m * n, dtype=torch.float64).reshape(m * n, m, n)).reshape(m * n, m * n)
        values, vectors = torch.linalg.eigh((projector + projector.T) / 2)
        return vectors[:, values > 0.5].T.reshape(-1, m, n)

    @property
    def dim(self) -> int:
        """Dimension of the equivariant subspace, = trace(S)."""
        if self.by_orbits:
            return self._sizes.numel()
        return self.basis().shape[0]

    def trace(self) -> float:
        """trace(S) computed from characters: 1/|G| sum_g chi_out(g) chi_in(g)."""
        elements = self.group.elements()
        chi = self.rep_out.character(elements).double() * self.rep_in.character(elements).double()
        return float(chi.mean())
