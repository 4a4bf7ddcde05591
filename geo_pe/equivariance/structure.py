"""`EquivariantStructure`: the equivariant weights between two representations, as a coefficient map.

One object answers everything a layer or a training phase needs about Hom_G(rho_in, rho_out):
how many free coefficients it has (`num_maps`), the weight they make (`expand`), the layer's output
without forming that weight where possible (`apply`), and the orthogonal projection of any weight onto
the subspace (`project`, `coefficients_of`). Three storage kinds, chosen automatically:

* ``"schur"``: representations built from irreps; one coefficient block ``(1 or 2, out_copies, in_copies)``
  per pair of equal irreps, applied blockwise as ``M (x) I (+ N (x) J)``;
* ``"orbits"``: permutation representations; one coefficient per orbit of index pairs, ``W = c[pattern]``;
* ``"basis"``: anything else; coefficients on an orthonormal solved basis ``(k, m, n)``.
"""

from __future__ import annotations

import torch
from torch import nn

from geo_pe.equivariance.intertwiners import (
    intertwiner_basis,
    orbit_pattern,
    permutation_action,
    schur_basis,
    schur_blocks,
)
from geo_pe.reps.base import Representation

__all__ = ["STRUCTURES", "EquivariantStructure"]

STRUCTURES = ("auto", "schur", "orbits", "basis")


class EquivariantStructure(nn.Module):
    """Coefficients <-> equivariant weights ``(m, n)`` for rho_in (n) -> rho_out (m). Holds no parameters."""

    def __init__(self, rep_in: Representation, rep_out: Representation, structure: str = "auto"):
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"structure: expected one of {STRUCTURES}, got {structure!r}")
        self.rep_in, self.rep_out = rep_in, rep_out
        self.shape = (rep_out.dim, rep_in.dim)
        with torch.device("cpu"):  # constants, also when the model is being built on the meta device
            self.kind = self._choose(structure)
            self._build()

    def reset_buffers(self) -> None:
        """Recompute the structure's buffers (after meta-device initialisation or HF loading)."""
        device = next(self.buffers(), torch.empty(0)).device
        with torch.device("cpu"):
            self._build()
        self.to(device if device.type != "meta" else "cpu")

    def _build(self) -> None:
        if self.kind == "schur":
            self.blocks = schur_blocks(self.rep_out, self.rep_in)
            self.out_layout = self.rep_out.acting_rep.layout
            for i, b in enumerate(self.blocks):
                if b.J is not None:
                    self.register_buffer(f"J{i}", b.J.to(torch.get_default_dtype()), persistent=False)
            self.num_maps = sum(b.num_maps for b in self.blocks)
            source, values = self._gather_plan()
            self.register_buffer("gather_source", source, persistent=False)
            self.register_buffer("gather_values", values, persistent=False)
            self.unit_values = bool((values[values != 0] == 1).all())  # real-type blocks only
        elif self.kind == "orbits":
            self.register_buffer("pattern", orbit_pattern(self.rep_out, self.rep_in), persistent=False)
            self.num_maps = int(self.pattern.max()) + 1 if self.pattern.numel() else 0
            self.register_buffer(
                "orbit_sizes", torch.bincount(self.pattern.flatten()).double(), persistent=False
            )
        else:
            basis = intertwiner_basis(self.rep_out, self.rep_in, warn=False)
            self.register_buffer("basis", basis.to(torch.get_default_dtype()), persistent=False)
            self.num_maps = basis.shape[0]

    def _gather_plan(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For every entry of the flattened weight, the coefficient it reads and its factor:
        ``W.flatten() = [c ; 0][source] * values`` (index ``num_maps`` reads the appended zero).

        Block by block W = M (x) I (+ N (x) J): coefficient (o, c) of M fills the d entries of the identity
        in the block (o, c), and of N the nonzero entries of J (which never meet the identity's). Computed
        once, so `expand` is one gather (and one product for complex-type blocks) instead of an eye, a
        kron and a slice assignment per block and per call."""
        n = self.shape[1]
        rows, cols, values = [], [], []
        start = 0
        for b in self.blocks:
            d = b.dim
            parts = [torch.eye(d, dtype=torch.float64)]
            if b.J is not None:
                parts.append(b.J.to(torch.float64))
            for p, matrix in enumerate(parts):
                a, e = matrix.nonzero(as_tuple=True)  # the block's nonzero entries (a, e)
                o = torch.arange(b.out_copies)[:, None, None]
                c = torch.arange(b.in_copies)[None, :, None]
                flat = (b.out_offset + o * d + a) * n + (b.in_offset + c * d + e)  # (out, in, entries)
                index = start + p * b.out_copies * b.in_copies + o * b.in_copies + c
                rows.append(flat.flatten())
                cols.append(index.expand_as(flat).flatten())
                values.append(matrix[a, e].expand_as(flat).flatten())
            start += b.num_maps
        size = self.shape[0] * self.shape[1]
        source = torch.full((size,), self.num_maps, dtype=torch.long)
        factors = torch.zeros(size, dtype=torch.get_default_dtype())
        if rows:
            rows_, cols_ = torch.cat(rows), torch.cat(cols)
            assert rows_.unique().numel() == rows_.numel(), "Schur blocks never share an entry"
            source[rows_] = cols_
            factors[rows_] = torch.cat(values).to(factors.dtype)
        return source, factors

    def _choose(self, structure: str) -> str:
        if structure in ("auto", "schur"):
            try:
                schur_blocks(self.rep_out, self.rep_in)
                return "schur"
            except (ValueError, NotImplementedError):
                if structure == "schur":
                    raise
        group = self.rep_out.group
        if structure == "orbits":
            return "orbits"
        if structure == "auto" and hasattr(group, "generators"):
            identity = group.identity()
            if all(permutation_action(r, identity) is not None for r in (self.rep_out, self.rep_in)):
                return "orbits"
        return "basis"

    # --- coefficients -> weights -------------------------------------------------------------------------
    def _block_coefficients(self, coefficients: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for b in self.blocks:
            count = b.num_maps
            out.append(
                coefficients[start : start + count].view(1 if b.J is None else 2, b.out_copies, b.in_copies)
            )
            start += count
        return out

    def apply(self, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """``x W^T`` for ``x`` ``(..., n)``; blockwise for Schur structures (no dense weight)."""
        if self.kind != "schur":
            return x @ self.expand(coefficients).to(x.dtype).T
        contributions: dict[int, torch.Tensor] = {}
        for i, (b, w) in enumerate(zip(self.blocks, self._block_coefficients(coefficients), strict=True)):
            d = b.dim
            xb = x[..., b.in_offset : b.in_offset + b.in_copies * d].unflatten(-1, (b.in_copies, d))
            w = w.to(x.dtype)
            y = torch.einsum("oc,...cd->...od", w[0], xb)
            if b.J is not None:
                y = y + torch.einsum("oc,...cd->...od", w[1], xb @ getattr(self, f"J{i}").to(x.dtype).T)
            y = y.flatten(-2)
            contributions[b.out_entry] = contributions[b.out_entry] + y if b.out_entry in contributions else y
        pieces = [
            contributions.get(a, x.new_zeros(*x.shape[:-1], mult * d))
            for a, (mult, d) in enumerate(self.out_layout)
        ]
        return torch.cat(pieces, dim=-1)

    def expand(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The equivariant weight ``(m, n)`` of the coefficients ``(num_maps,)``."""
        if self.kind == "orbits":
            return coefficients[self.pattern]
        if self.kind == "basis":
            return torch.einsum("k,kmn->mn", coefficients, self.basis.to(coefficients.dtype))
        W = torch.cat((coefficients, coefficients.new_zeros(1)))[self.gather_source]
        if not self.unit_values:  # complex-type blocks: J's entries are +-1
            W = W * self.gather_values.to(coefficients.dtype)
        return W.view(self.shape)

    def linear(self, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """``x W^T``, the faster way: one GEMM with the expanded weight when ``x`` has at least as many rows
        as W has columns (training batches), the blockwise `apply` for a few rows."""
        rows = x.numel() // max(1, x.shape[-1])
        if self.kind == "schur" and rows < self.shape[1]:
            return self.apply(x, coefficients)
        return torch.nn.functional.linear(x, self.expand(coefficients).to(x.dtype))

    # --- weights -> coefficients (orthogonal projection) -------------------------------------------------
    def coefficients_of(self, W: torch.Tensor) -> torch.Tensor:
        """Coefficients of the orthogonal (Frobenius) projection of ``W`` ``(m, n)`` onto the subspace."""
        if W.shape != self.shape:
            raise ValueError(f"W: expected shape {self.shape}, got {tuple(W.shape)}")
        if self.kind == "orbits":
            sums = torch.zeros(self.num_maps, dtype=W.dtype, device=W.device)
            sums.index_add_(0, self.pattern.flatten(), W.flatten())
            return sums / self.orbit_sizes.to(W.dtype)
        if self.kind == "basis":
            return torch.einsum("kmn,mn->k", self.basis.to(W.dtype), W)
        out = []
        for i, b in enumerate(self.blocks):
            d = b.dim
            sub = W[
                b.out_offset : b.out_offset + b.out_copies * d, b.in_offset : b.in_offset + b.in_copies * d
            ].reshape(b.out_copies, d, b.in_copies, d)
            out.append(torch.einsum("sdtd->st", sub).flatten() / d)  # <W_st, I> / |I|^2
            if b.J is not None:
                J = getattr(self, f"J{i}").to(W.dtype)
                out.append(torch.einsum("sdte,de->st", sub, J).flatten() / d)  # <W_st, J> / |J|^2
        return torch.cat(out) if out else W.new_zeros(0)

    def project(self, W: torch.Tensor) -> torch.Tensor:
        """The orthogonal projection of ``W`` onto the equivariant weights (idempotent)."""
        return self.expand(self.coefficients_of(W))

    def dense_basis(self) -> torch.Tensor:
        """The structure as an orthonormal basis ``(k, m, n)`` (float64), for pictures and tests."""
        if self.kind == "basis":
            return self.basis.double()
        if self.kind == "schur":
            return schur_basis(self.rep_out, self.rep_in)
        basis = torch.nn.functional.one_hot(self.pattern, self.num_maps).permute(2, 0, 1).double()
        return basis / basis.sum(dim=(1, 2), keepdim=True).sqrt()
