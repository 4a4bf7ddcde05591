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
import warnings

import torch
from torch import nn

__all__ = ["PROJECTIONS", "RandomSubspace", "fwht", "make_projection"]

PROJECTIONS = ("fastfood", "sparse", "dense", "identity")


# --- fast Walsh-Hadamard transform ----------------------------------------------------------------------
_HADAMARD_BITS = 6  # a GEMM with H_64 replaces the 6 shortest butterfly passes (measured fastest on CPU)
_HADAMARDS: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _hadamard(r: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (r, dtype, device)
    if key not in _HADAMARDS:
        H = torch.ones(1, 1, dtype=torch.float64)
        while H.shape[0] < r:
            H = torch.cat((torch.cat((H, H), 1), torch.cat((H, -H), 1)), 0)
        _HADAMARDS[key] = H.to(dtype=dtype, device=device)
    return _HADAMARDS[key]


def _fwht_raw(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal Walsh-Hadamard transform (Sylvester order) along the last dim, a power of 2.

    One GEMM with H_64 on the contiguous last 64 entries (H_n = H_(n/64) (x) H_64), then butterfly passes
    written into preallocated halves. Not differentiable by autograd (it writes with ``out=``): it runs
    inside `_FWHT` and `_Fastfood`, whose backward passes are transforms again.
    """
    n = x.shape[-1]
    r = min(n, 1 << _HADAMARD_BITS)
    a = (x.reshape(-1, r) @ _hadamard(r, x.dtype, x.device)).reshape(-1)
    b = torch.empty_like(a)
    h = r
    while h < n:
        src, dst = a.view(-1, 2, h), b.view(-1, 2, h)
        torch.add(src[:, 0], src[:, 1], out=dst[:, 0])
        torch.sub(src[:, 0], src[:, 1], out=dst[:, 1])
        a, b = b, a
        h *= 2
    return (a / math.sqrt(n)).view(x.shape)


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
        with torch.device("cpu"):  # constants, also when the model is being built on the meta device
            self._build()

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def reset_buffers(self) -> None:
        """Regenerate the random tensors from the seed (after meta-device initialisation or HF loading)."""
        device, dtype = torch.device("cpu"), None
        for b in self.buffers():
            device = b.device if b.device.type != "meta" else device
            dtype = b.dtype if b.is_floating_point() else dtype
        with torch.device("cpu"):
            self._build()
        self.to(device)
        if dtype is not None:
            self.to(dtype)

    def _build(self) -> None:
        """Draw the projection's random tensors from the seed (the identity has none)."""

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        theta = torch.zeros(self.d, dtype=y.dtype, device=y.device, requires_grad=True)
        (out,) = torch.autograd.grad(self(theta), theta, y)
        return out


class DenseProjection(_Projection):
    def _build(self):
        A = torch.randn(self.D, self.d, generator=self._generator(), device="cpu", dtype=torch.float64)
        self.register_buffer("A", A / A.norm(dim=0, keepdim=True), persistent=False)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return self.A.to(theta.dtype) @ theta


class _SparseMatVec(torch.autograd.Function):
    """A theta with A and A^T both kept in CSR, so that neither pass transposes or coalesces anything."""

    @staticmethod
    def forward(ctx, theta, A, At):
        ctx.save_for_backward(At)
        return (A @ theta[:, None])[:, 0]

    @staticmethod
    def backward(ctx, grad):
        (At,) = ctx.saved_tensors
        return (At @ grad[:, None])[:, 0], None, None


class SparseProjection(_Projection):
    def _build(self):
        per_column = max(1, round(math.sqrt(self.D)))  # density 1/sqrt(D)
        gen = self._generator()
        rows = torch.randint(self.D, (self.d, per_column), generator=gen)
        signs = torch.randint(2, (self.d, per_column), generator=gen).double() * 2 - 1
        cols = torch.arange(self.d)[:, None].expand(-1, per_column)
        indices = torch.stack((rows.flatten(), cols.flatten()))
        A = torch.sparse_coo_tensor(
            indices, signs.flatten(), (self.D, self.d), check_invariants=False
        ).coalesce()
        norms = torch.zeros(self.d, dtype=torch.float64).index_add_(0, A.indices()[1], A.values() ** 2).sqrt()
        values = A.values() / norms[A.indices()[1]]  # duplicates added up; normalise by the actual norms
        A = torch.sparse_coo_tensor(A.indices(), values, A.shape, check_invariants=False).coalesce()
        # CSR parts as plain tensors: they move to any device (meta included) and dtype like other buffers
        for name, M in (("A", A), ("At", A.t().coalesce())):
            with warnings.catch_warnings():  # torch's notice that CSR support is in beta
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                csr = M.to_sparse_csr()
            self.register_buffer(f"{name}_crow", csr.crow_indices(), persistent=False)
            self.register_buffer(f"{name}_col", csr.col_indices(), persistent=False)
            self.register_buffer(f"{name}_values", csr.values(), persistent=False)

    def _csr(self, name: str, dtype: torch.dtype, shape: tuple[int, int]) -> torch.Tensor:
        values = getattr(self, f"{name}_values").to(dtype)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(
                getattr(self, f"{name}_crow"),
                getattr(self, f"{name}_col"),
                values,
                shape,
                check_invariants=False,
            )

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        A = self._csr("A", theta.dtype, (self.D, self.d))
        At = self._csr("At", theta.dtype, (self.d, self.D))
        return _SparseMatVec.apply(theta, A, At)


class _Fastfood(torch.autograd.Function):
    """A theta for stacked blocks scale_k H G_k (Pi H B theta), with an explicit adjoint as the backward.

    H, B and Pi are shared by the K blocks, which differ in their Gaussian diagonals G_k: a pass costs one
    transform of size n, one gather of size n and one transform of size K n.
    """

    @staticmethod
    def forward(ctx, theta, B, perm, G, scale, D):
        n = B.shape[0]
        x = torch.zeros(n, dtype=theta.dtype, device=theta.device)
        x[: theta.shape[0]] = theta
        x = _fwht_raw(B * x)[perm]  # (n,), shared
        y = _fwht_raw(G * x) * scale  # (K, n)
        ctx.save_for_backward(B, perm, G, scale)
        ctx.d = theta.shape[0]
        return y.reshape(-1)[:D]

    @staticmethod
    def backward(ctx, grad):
        B, perm, G, scale = ctx.saved_tensors
        K, n = G.shape
        g = torch.zeros(K * n, dtype=grad.dtype, device=grad.device)
        g[: grad.shape[0]] = grad
        summed = (G * _fwht_raw(g.view(K, n) * scale)).sum(0)  # (n,): the K blocks saw the same x
        shared = torch.empty_like(summed)
        shared[perm] = summed  # Pi^T
        return (B * _fwht_raw(shared))[: ctx.d], None, None, None, None, None


class FastfoodProjection(_Projection):
    """Stacked Fastfood blocks of size n = next power of 2 >= d; K = ceil(D / n) blocks sharing Pi H B.

    With orthonormal H and S = I, every column of H G_k Pi H B has norm ||G_k|| / sqrt(n) (H B e_j has
    entries +-1/sqrt(n)); scaling block k by sqrt(n / K) / ||G_k|| gives unit-norm columns before the
    rows beyond D are cut.
    """

    def _build(self):
        n = 1 << max(0, (self.d - 1).bit_length())
        K = math.ceil(self.D / n)
        gen = self._generator()
        B = torch.randint(2, (n,), generator=gen).double() * 2 - 1
        perm = torch.argsort(torch.rand(n, generator=gen))
        G = torch.randn(K, n, generator=gen, dtype=torch.float64)  # float64 so the column norms are exact
        scale = math.sqrt(n / K) / G.norm(dim=1, keepdim=True)
        for name, value in (("B", B), ("perm", perm), ("G", G), ("scale", scale)):
            self.register_buffer(name, value, persistent=False)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        dtype = theta.dtype
        return _Fastfood.apply(
            theta, self.B.to(dtype), self.perm, self.G.to(dtype), self.scale.to(dtype), self.D
        )


class IdentityProjection(_Projection):
    def __init__(self, D: int, d: int, seed: int):
        if d != D:
            raise ValueError(f"subspace_dim: the identity projection needs d = D = {D}, got d = {d}")
        super().__init__(D, d, seed)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
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
    Its ``signature`` buffer records ``(kind, D, d, seed)`` so that a checkpoint from another subspace is
    refused (by ``load_state_dict``, and by `verify_signature` after other loaders).
    """

    def __init__(self, D: int, d: int, kind: str = "fastfood", seed: int = 0):
        super().__init__()
        self.kind, self.D, self.d, self.seed = kind, D, d, seed
        self.projection = make_projection(kind, D, d, seed)
        self.theta = nn.Parameter(torch.zeros(d))
        self.register_buffer("signature", self.expected_signature())  # saved: refuses other subspaces
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

    def reset_buffers(self) -> None:
        self.projection.reset_buffers()
        self._cache = None

    def expected_signature(self) -> torch.Tensor:
        """``(kind index, D, d, seed)`` as int64: what the ``signature`` buffer of this subspace holds."""
        return torch.tensor([PROJECTIONS.index(self.kind), self.D, self.d, self.seed], dtype=torch.int64)

    def verify_signature(self) -> None:
        """Raise if the ``signature`` (loaded from a checkpoint) belongs to another subspace."""
        if self.signature.device.type == "meta":
            return
        saved = self.signature.tolist()
        if saved != self.expected_signature().tolist():
            kind = PROJECTIONS[saved[0]] if 0 <= saved[0] < len(PROJECTIONS) else f"#{saved[0]}"
            raise ValueError(
                f"checkpoint: it was saved with the random subspace (kind={kind!r}, D={saved[1]}, "
                f"d={saved[2]}, seed={saved[3]}), but this model uses {self.extra_repr()}; rebuild the model "
                "with the same subspace settings before loading"
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.verify_signature()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, D={self.D}, d={self.d}, seed={self.seed}"
