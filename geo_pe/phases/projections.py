"""Random affine subspaces {w_t + A theta} (Li et al., ICLR 2018): projections A regenerated from a seed.

A maps d coordinates theta to D weights. Every kind has unit-norm columns (exactly, or near 1 where
noted; random tensors are drawn in float64 and cast at use) and is rebuilt from ``(kind, D, d, seed)``,
never stored in checkpoints:

================  ===========================================================  ==============================
kind              A                                                            memory
================  ===========================================================  ==============================
``"dense"``       Gaussian, columns normalised                                 D x d floats
``"sparse"``      very sparse (Li et al. 2006): about sqrt(D) entries +-1 per   d sqrt(D) entries
                  column, columns normalised
``"fastfood"``    stacked Fastfood blocks H G Pi H B (Le et al. 2013), with a   O(D)
                  fast Walsh-Hadamard transform and its own backward; columns
                  have norm 1 up to the truncation of the last block
``"identity"``    A = I (needs d = D): subspace training = full-space training  none
================  ===========================================================  ==============================

`RandomSubspace` owns theta (initialised to 0, so the subspace starts at w_t) and computes A theta once
per model forward even when many layers share it (one global theta, as in Li et al.).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PROJECTIONS", "RandomSubspace", "fwht", "make_projection"]

PROJECTIONS = ("fastfood", "sparse", "dense", "identity")


# --- fast Walsh-Hadamard transform ----------------------------------------------------------------------
def _fwht_raw(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal Walsh-Hadamard transform (Sylvester order) along the last dim, a power of 2."""
    n = x.shape[-1]
    h, y = 1, x
    while h < n:
        pairs = y.reshape(*x.shape[:-1], n // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2).reshape(x.shape)
        h *= 2
    return y / math.sqrt(n)


class _FWHT(torch.autograd.Function):
    """H is symmetric and orthonormal, so the backward pass is the same transform (nothing saved)."""

    @staticmethod
    def forward(ctx, x):
        return _fwht_raw(x)

    @staticmethod
    def backward(ctx, grad):
        return _fwht_raw(grad)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal fast Walsh-Hadamard transform along the last dimension (a power of 2), O(n log n)."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"x: the last dimension must be a power of 2, got {n}")
    return _FWHT.apply(x)


# --- projections ------------------------------------------------------------------------------------------
class _Projection(nn.Module):
    """A: R^d -> R^D. ``forward(theta)`` is A theta; ``adjoint(y)`` is A^T y (for tests and analysis)."""

    def __init__(self, D: int, d: int, seed: int):
        super().__init__()
        self.D, self.d, self.seed = D, d, seed
        self.reset_buffers()

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def reset_buffers(self) -> None:
        """Regenerate the projection's random tensors from the seed (e.g. after meta-device init)."""

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        theta = torch.zeros(self.d, dtype=y.dtype, device=y.device, requires_grad=True)
        (out,) = torch.autograd.grad(self(theta), theta, y)
        return out


class DenseProjection(_Projection):
    def reset_buffers(self):
        A = torch.randn(self.D, self.d, generator=self._generator(), device="cpu", dtype=torch.float64)
        self.register_buffer("A", A / A.norm(dim=0, keepdim=True), persistent=False)

    def forward(self, theta):
        return self.A.to(theta.dtype) @ theta


class SparseProjection(_Projection):
    def reset_buffers(self):
        per_column = max(1, round(math.sqrt(self.D)))  # density 1/sqrt(D)
        gen = self._generator()
        rows = torch.randint(self.D, (self.d, per_column), generator=gen)
        signs = torch.randint(2, (self.d, per_column), generator=gen).double() * 2 - 1
        cols = torch.arange(self.d)[:, None].expand(-1, per_column)
        indices = torch.stack((rows.flatten(), cols.flatten()))
        A = torch.sparse_coo_tensor(indices, signs.flatten(), (self.D, self.d), check_invariants=False)
        A = A.coalesce()  # duplicates add up; normalise by the actual column norms
        norms = torch.zeros(self.d, dtype=torch.float64).index_add_(0, A.indices()[1], A.values() ** 2).sqrt()
        values = A.values() / norms[A.indices()[1]]
        self.register_buffer(
            "A",
            torch.sparse_coo_tensor(A.indices(), values, A.shape, check_invariants=False).coalesce(),
            persistent=False,
        )

    def forward(self, theta):
        return torch.sparse.mm(self.A.to(theta.dtype), theta[:, None])[:, 0]


class _Fastfood(torch.autograd.Function):
    """A theta for stacked blocks scale * H G Pi H B, with an explicit adjoint as the backward pass."""

    @staticmethod
    def forward(ctx, theta, B, perm, G, scale, D):
        n = B.shape[1]
        x = torch.zeros(n, dtype=theta.dtype, device=theta.device)
        x[: theta.shape[0]] = theta
        x = _fwht_raw(B * x)  # (K, n)
        x = torch.gather(x, 1, perm)
        x = _fwht_raw(G * x) * scale
        ctx.save_for_backward(B, perm, G, scale)
        ctx.d = theta.shape[0]
        return x.reshape(-1)[:D]

    @staticmethod
    def backward(ctx, grad):
        B, perm, G, scale = ctx.saved_tensors
        K, n = B.shape
        g = torch.zeros(K * n, dtype=grad.dtype, device=grad.device)
        g[: grad.shape[0]] = grad
        g = G * _fwht_raw(g.view(K, n) * scale)
        g = torch.zeros_like(g).scatter_(1, perm, g)  # Pi^T
        g = (B * _fwht_raw(g)).sum(0)
        return g[: ctx.d], None, None, None, None, None


class FastfoodProjection(_Projection):
    """Stacked Fastfood blocks of size n = next power of 2 >= d; K = ceil(D / n) blocks.

    With orthonormal H and S = I, every column of H G Pi H B has norm ||G|| / sqrt(n); scaling each block
    by sqrt(n / K) / ||G|| gives unit-norm columns before the rows beyond D are cut.
    """

    def reset_buffers(self):
        n = 1 << max(0, (self.d - 1).bit_length())
        K = math.ceil(self.D / n)
        gen = self._generator()
        B = torch.randint(2, (K, n), generator=gen).double() * 2 - 1
        perm = torch.argsort(torch.rand(K, n, generator=gen), dim=1)
        G = torch.randn(K, n, generator=gen, dtype=torch.float64)  # float64 so the column norms are exact
        scale = math.sqrt(n / K) / G.norm(dim=1, keepdim=True)
        for name, value in (("B", B), ("perm", perm), ("G", G), ("scale", scale)):
            self.register_buffer(name, value, persistent=False)

    def forward(self, theta):
        dtype = theta.dtype
        return _Fastfood.apply(
            theta, self.B.to(dtype), self.perm, self.G.to(dtype), self.scale.to(dtype), self.D
        )


class IdentityProjection(_Projection):
    def __init__(self, D: int, d: int, seed: int):
        if d != D:
            raise ValueError(f"subspace_dim: the identity projection needs d = D = {D}, got d = {d}")
        super().__init__(D, d, seed)

    def forward(self, theta):
        return theta


def make_projection(kind: str, D: int, d: int, seed: int = 0) -> _Projection:
    if kind not in PROJECTIONS:
        raise ValueError(f"projection: expected one of {PROJECTIONS}, got {kind!r}")
    for value, name in ((D, "D"), (d, "subspace_dim")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if d > D:
        raise ValueError(f"subspace_dim: expected at most the number of weights D = {D}, got {d}")
    cls = {"dense": DenseProjection, "sparse": SparseProjection, "fastfood": FastfoodProjection}
    return cls.get(kind, IdentityProjection)(D, d, seed)


class RandomSubspace(nn.Module):
    """theta in R^d (starting at 0) and a projection A: R^d -> R^D; `offset` is A theta.

    Shared by several layers, A theta is computed once per forward pass of the model (the cache is
    cleared by `begin_forward`, which `set_phase` hooks onto the model, and whenever theta changes).
    Its extra state records ``(kind, D, d, seed)`` so that a checkpoint from another subspace is refused.
    """

    def __init__(self, D: int, d: int, kind: str = "fastfood", seed: int = 0):
        super().__init__()
        self.kind, self.D, self.d, self.seed = kind, D, d, seed
        self.projection = make_projection(kind, D, d, seed)
        self.theta = nn.Parameter(torch.zeros(d))
        self._cache: tuple[int, torch.Tensor] | None = None

    def begin_forward(self) -> None:
        self._cache = None

    def offset(self) -> torch.Tensor:
        """A theta, ``(D,)``."""
        version = self.theta._version
        if self._cache is None or self._cache[0] != version or not torch.is_grad_enabled():
            value = self.projection(self.theta)
            if not torch.is_grad_enabled():
                return value
            self._cache = (version, value)
        return self._cache[1]

    def reset_parameters(self) -> None:
        self.projection.reset_buffers()
        self._cache = None

    def get_extra_state(self) -> dict:
        return {"kind": self.kind, "D": self.D, "d": self.d, "seed": self.seed}

    def set_extra_state(self, state: dict) -> None:
        mine = self.get_extra_state()
        if state != mine:
            raise ValueError(
                f"checkpoint: it was saved with the random subspace {state}, but this model uses {mine}; "
                "rebuild the model with the same subspace settings before loading"
            )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, D={self.D}, d={self.d}, seed={self.seed}"
