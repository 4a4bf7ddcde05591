"""Equivariant linear layers with weight sharing (Weiler et al. 2023): reduced parameters, closed forms.

Each layer registers only the parameters of its equivariant subspace, computes its output without
expanding the weight matrix where a closed form exists, and exports a plain ``nn.Linear`` with
`to_dense` (on the flattened input, element-major: ``(..., n, channels) -> (..., n * channels)``).

=====================  ================================================  ===========================
layer                  group and data                                    parameters per channel pair
=====================  ================================================  ===========================
`DeepSetsLinear`       S_n on sets ``(..., n, c)``: a x + b sum(x)         2 (Zaheer et al. 2017)
`SnTensorLinear`       S_n on order-k tensors ``(..., n^k, c)``, k <= 2    Bell(k + l) (Maron et al. 2019)
`ProductSetLinear`     S_n1 x ... x S_nm on ``(..., n1, .., nm, c)``        2^m (Hartford et al. 2018)
`CirculantLinear`      cyclic shifts C_n on ``(..., n, c)``, FFT            n (a convolution)
`InvariantPooling`     S_n (or C_n) on ``(..., n, c)`` -> ``(..., c')``    1 (weighted sum-pooling)
`EquivariantLinear`    any representations, on a solved basis             dim Hom_G(rho_in, rho_out)
=====================  ================================================  ===========================

`weight_sharing_pattern()` returns the single-channel pattern (one label per independent parameter)
that `geo_pe.equivariance.draw_weight_sharing` turns into a picture.
"""

from __future__ import annotations

import itertools
import math
import warnings

import torch
from torch import nn

from geo_pe.equivariance.intertwiners import EquivarianceWarning, invariant_vectors, orbit_pattern
from geo_pe.equivariance.structure import EquivariantStructure
from geo_pe.reps.base import Representation
from geo_pe.reps.finite import PermutationRep, TensorPower, TrivialRep, outer_product, symmetric

__all__ = [
    "CirculantLinear",
    "DeepSetsLinear",
    "EquivariantLinear",
    "InvariantPooling",
    "ProductSetLinear",
    "SnTensorLinear",
    "set_partitions",
]


def _check_positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def _init_(weight: torch.Tensor, fan_in: int) -> None:
    nn.init.uniform_(weight, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))


class _SharedLinear(nn.Module):
    """Shared plumbing: input checks and `to_dense` by probing with the identity."""

    in_shape: tuple[int, ...]  # per-example input shape, channels last
    out_shape: tuple[int, ...]

    def _check_input(self, x: torch.Tensor) -> None:
        k = len(self.in_shape)
        if x.dim() < k or tuple(x.shape[x.dim() - k :]) != self.in_shape:
            raise ValueError(
                f"x: expected shape (..., {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}"
            )

    def to_dense(self) -> nn.Linear:
        """The same map as a plain ``nn.Linear`` on flattened inputs (element-major, channels last)."""
        fan_in, fan_out = math.prod(self.in_shape), math.prod(self.out_shape)
        has_bias = getattr(self, "bias", None) is not None
        with torch.no_grad():
            param = next(self.parameters())
            eye = torch.eye(fan_in, dtype=param.dtype, device=param.device).reshape(fan_in, *self.in_shape)
            zero = torch.zeros(1, *self.in_shape, dtype=param.dtype, device=param.device)
            offset = self(zero).reshape(fan_out)
            weight = (self(eye).reshape(fan_in, fan_out) - offset).T
        linear = nn.Linear(fan_in, fan_out, bias=has_bias, dtype=param.dtype, device=param.device)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if has_bias:
                linear.bias.copy_(offset)
        return linear


class DeepSetsLinear(_SharedLinear):
    """W = a I + b 11^T on sets: ``y_i = x_i A^T + (sum_j x_j) B^T + bias``, for ``x`` ``(..., n, c_in)``."""

    def __init__(self, n: int, in_features: int = 1, out_features: int = 1, bias: bool = True):
        super().__init__()
        self.n = _check_positive(n, "n")
        self.in_shape, self.out_shape = (n, in_features), (n, out_features)
        self.identity = nn.Parameter(torch.empty(out_features, _check_positive(in_features, "in_features")))
        self.pooled = nn.Parameter(torch.empty(_check_positive(out_features, "out_features"), in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        _init_(self.identity, in_features)
        _init_(self.pooled, in_features * n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        y = x @ self.identity.T + x.sum(dim=-2, keepdim=True) @ self.pooled.T
        return y + self.bias if self.bias is not None else y

    def weight_sharing_pattern(self) -> torch.Tensor:
        return (1 - torch.eye(self.n, dtype=torch.long)).long()  # 0: diagonal (a), 1: elsewhere (b)


def set_partitions(items: list[int]) -> list[list[list[int]]]:
    """All partitions of ``items`` into non-empty blocks (Bell(len(items)) of them)."""
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for partition in set_partitions(rest):
        out.append([[first], *partition])
        for i in range(len(partition)):
            out.append([*partition[:i], [first, *partition[i]], *partition[i + 1 :]])
    return out


class SnTensorLinear(_SharedLinear):
    """S_n-equivariant maps between order-k and order-l tensors, k, l in {0, 1, 2} (Maron et al. 2019).

    Input ``(..., n^k, c_in)`` (k axes of size n), output ``(..., n^l, c_out)``. One weight matrix per
    partition of the k + l index positions into at most n blocks: the map keeps input indices of one
    block equal, sums over blocks without an output index, broadcasts blocks without an input index and
    puts output indices of one block on the diagonal. These span the equivariant maps, whose dimension
    is sum_{j <= n} S(k + l, j) (Stirling numbers of the second kind): 2, 5, 5, 15 for n >= 4.
    """

    def __init__(
        self, n: int, order_in: int, order_out: int, in_features: int = 1, out_features: int = 1, bias=True
    ):
        super().__init__()
        self.n = _check_positive(n, "n")
        for order, name in ((order_in, "order_in"), (order_out, "order_out")):
            if order not in (0, 1, 2):
                raise ValueError(f"{name}: expected 0, 1 or 2, got {order!r}")
        self.order_in, self.order_out = order_in, order_out
        self.in_shape = (n,) * order_in + (_check_positive(in_features, "in_features"),)
        self.out_shape = (n,) * order_out + (_check_positive(out_features, "out_features"),)
        positions = list(range(order_out + order_in))  # outputs first, then inputs
        self.partitions = [p for p in set_partitions(positions) if len(p) <= n]
        self.bias_partitions = [p for p in set_partitions(list(range(order_out))) if len(p) <= n]
        self.weight = nn.Parameter(torch.empty(len(self.partitions), out_features, in_features))
        _init_(self.weight, in_features * max(1, n**order_in))
        self.bias = nn.Parameter(torch.zeros(len(self.bias_partitions), out_features)) if bias else None

    def _apply_partition(self, x, partition, weight, order_in):
        """One basis map of ``partition`` with channel mixing ``weight`` (c_out, c_in)."""
        letters = "abcdefgh"
        block_of = {pos: b for b, block in enumerate(partition) for pos in block}
        in_letters = "".join(letters[block_of[self.order_out + a]] for a in range(order_in))
        out_blocks = [block_of[a] for a in range(self.order_out)]
        kept = [b for b in dict.fromkeys(out_blocks) if any(p >= self.order_out for p in partition[b])]
        eq = f"...{in_letters}z,yz->...{''.join(letters[b] for b in kept)}y"
        y = torch.einsum(eq, x, weight)  # (..., n per kept block, c_out)
        n, c_out = self.n, weight.shape[0]
        # place the kept blocks on the output axes: broadcast output-only blocks, diagonalise repeats
        for b in dict.fromkeys(out_blocks):
            if b not in kept:
                y = y.unsqueeze(-2).expand(*y.shape[:-1], n, c_out)
                kept.append(b)
        order = [kept.index(b) for b in dict.fromkeys(out_blocks)]
        lead = y.dim() - len(kept) - 1
        y = y.permute(*range(lead), *(lead + i for i in order), y.dim() - 1)
        if len(out_blocks) == 2 and out_blocks[0] == out_blocks[1]:
            y = torch.diag_embed(y.movedim(-1, -2)).movedim(-3, -1)  # (..., c, n) -> (..., n, n, c)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        batch = x.shape[: x.dim() - len(self.in_shape)]
        out = x.new_zeros(*batch, *self.out_shape)
        for partition, weight in zip(self.partitions, self.weight, strict=True):
            out = out + self._apply_partition(x, partition, weight, self.order_in)
        if self.bias is not None:
            ones = x.new_ones(*batch, 1)
            for partition, b in zip(self.bias_partitions, self.bias, strict=True):
                out = out + self._apply_partition(ones, partition, b[:, None], 0)
        return out

    def weight_sharing_pattern(self) -> torch.Tensor:
        """Orbits of (output, input) index tuples: one colour per independent weight (single channel)."""
        rep_in = _set_tensor_rep(self.n, self.order_in)
        rep_out = _set_tensor_rep(self.n, self.order_out)
        return orbit_pattern(rep_out, rep_in)


def _set_tensor_rep(n: int, order: int) -> Representation:
    base = PermutationRep(symmetric(n))
    return TrivialRep(symmetric(n)) if order == 0 else (base if order == 1 else TensorPower(base, order))


class ProductSetLinear(_SharedLinear):
    """Exchangeable layers for S_n1 x ... x S_nm acting axis by axis (Hartford et al. 2018).

    Input ``(..., n1, ..., nm, c_in)``; one weight matrix per subset T of the axes: sum over the axes
    in T, mix channels, broadcast back. 2^m parameters per channel pair.
    """

    def __init__(
        self, sizes: tuple[int, ...], in_features: int = 1, out_features: int = 1, bias: bool = True
    ):
        super().__init__()
        self.sizes = tuple(_check_positive(s, "sizes") for s in sizes)
        if not self.sizes:
            raise ValueError("sizes: expected at least one set size")
        self.in_shape = (*self.sizes, _check_positive(in_features, "in_features"))
        self.out_shape = (*self.sizes, _check_positive(out_features, "out_features"))
        m = len(self.sizes)
        self.subsets = [s for r in range(m + 1) for s in itertools.combinations(range(m), r)]
        self.weight = nn.Parameter(torch.empty(len(self.subsets), out_features, in_features))
        _init_(self.weight, in_features * math.prod(self.sizes))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        m = len(self.sizes)
        out = 0
        for subset, weight in zip(self.subsets, self.weight, strict=True):
            pooled = x.sum(dim=tuple(a - m - 1 for a in subset), keepdim=True) if subset else x
            out = out + pooled @ weight.T
        out = out.expand(*x.shape[:-1], self.out_shape[-1])
        return out + self.bias if self.bias is not None else out

    def weight_sharing_pattern(self) -> torch.Tensor:
        reps = [PermutationRep(symmetric(s)) for s in self.sizes]
        rep = reps[0] if len(reps) == 1 else outer_product(*reps)
        return orbit_pattern(rep, rep)


class CirculantLinear(_SharedLinear):
    """Equivariant to cyclic shifts: ``y_i = sum_j K_(i - j mod n) x_j``, applied by FFT in O(n log n).

    Input ``(..., n, c_in)``; kernel ``(c_out, c_in, n)``, i.e. n parameters per channel pair.
    """

    def __init__(self, n: int, in_features: int = 1, out_features: int = 1, bias: bool = True):
        super().__init__()
        self.n = _check_positive(n, "n")
        self.in_shape = (n, _check_positive(in_features, "in_features"))
        self.out_shape = (n, _check_positive(out_features, "out_features"))
        self.kernel = nn.Parameter(torch.empty(out_features, in_features, n))
        _init_(self.kernel, in_features * n)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        X = torch.fft.rfft(x, dim=-2)  # (..., n//2 + 1, c_in)
        K = torch.fft.rfft(self.kernel, dim=-1)  # (c_out, c_in, n//2 + 1)
        Y = torch.einsum("...fc,ocf->...fo", X, K.to(X.dtype))
        y = torch.fft.irfft(Y, n=self.n, dim=-2)
        return y + self.bias if self.bias is not None else y

    def dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same map through the expanded n x n circulant matrices (the slow reference)."""
        idx = (torch.arange(self.n)[:, None] - torch.arange(self.n)[None, :]) % self.n
        W = self.kernel[:, :, idx]  # (c_out, c_in, n, n)
        y = torch.einsum("oinm,...mi->...no", W, x)
        return y + self.bias if self.bias is not None else y

    def weight_sharing_pattern(self) -> torch.Tensor:
        return (torch.arange(self.n)[:, None] - torch.arange(self.n)[None, :]) % self.n


class InvariantPooling(_SharedLinear):
    """Weighted sum-pooling, ``(..., n, c_in) -> (..., c_out)``: the only linear invariants of S_n or C_n."""

    def __init__(self, n: int, in_features: int = 1, out_features: int = 1, bias: bool = True):
        super().__init__()
        self.n = _check_positive(n, "n")
        self.in_shape = (n, _check_positive(in_features, "in_features"))
        self.out_shape = (_check_positive(out_features, "out_features"),)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        _init_(self.weight, in_features * n)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        y = x.sum(dim=-2) @ self.weight.T
        return y + self.bias if self.bias is not None else y

    def weight_sharing_pattern(self) -> torch.Tensor:
        return torch.zeros(self.out_shape[0], self.n, dtype=torch.long)


class EquivariantLinear(nn.Module):
    """A linear map rho_in -> rho_out in the intertwiner space: ``y = x W^T + b`` with W equivariant.

    Args:
        rep_in, rep_out: any two `Representation` of one group (Lie or finite).
        bias: an equivariant bias, i.e. one in the invariant vectors of rho_out.
        structure: see `EquivariantStructure`: ``"auto"``, ``"schur"`` (irrep blocks), ``"orbits"``
            (permutation representations) or ``"basis"`` (a solved dense basis).

    Only the free coefficients are parameters; the structure is rebuilt from the representations. A
    zero-dimensional space raises an `EquivarianceWarning` and the layer maps everything to its bias.
    """

    def __init__(
        self, rep_in: Representation, rep_out: Representation, *, bias: bool = True, structure="auto"
    ):
        super().__init__()
        self.rep_in, self.rep_out = rep_in, rep_out
        self.space = EquivariantStructure(rep_in, rep_out, structure)
        self.structure, self.num_maps = self.space.kind, self.space.num_maps
        if self.num_maps == 0:
            warnings.warn(
                f"no equivariant linear maps from dim {rep_in.dim} to dim {rep_out.dim} (no shared irrep); "
                "the layer's output is its bias",
                EquivarianceWarning,
                stacklevel=2,
            )
        self.coefficients = nn.Parameter(torch.randn(self.num_maps) / math.sqrt(max(1, rep_in.dim)))
        if bias:
            basis = invariant_vectors(rep_out).to(torch.get_default_dtype())
            self.register_buffer("bias_basis", basis, persistent=False)
            self.bias_coefficients = nn.Parameter(torch.zeros(basis.shape[0]))
        else:
            self.bias_basis, self.bias_coefficients = None, None

    @property
    def weight(self) -> torch.Tensor:
        """The equivariant ``(m, n)`` matrix (expanded; the forward pass does not need it)."""
        return self.space.expand(self.coefficients)

    def _bias(self, dtype) -> torch.Tensor | None:
        if self.bias_coefficients is None:
            return None
        return (self.bias_coefficients @ self.bias_basis.to(self.bias_coefficients.dtype)).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.rep_in.dim:
            raise ValueError(
                f"x: expected a last dimension of {self.rep_in.dim} (rep_in.dim), got {tuple(x.shape)}"
            )
        y = self.space.apply(x, self.coefficients)
        bias = self._bias(x.dtype)
        return y if bias is None else y + bias

    def to_dense(self) -> nn.Linear:
        linear = nn.Linear(self.rep_in.dim, self.rep_out.dim, bias=self.bias_coefficients is not None)
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            if self.bias_coefficients is not None:
                linear.bias.copy_(self._bias(linear.bias.dtype))
        return linear

    def weight_sharing_pattern(self) -> torch.Tensor:
        from geo_pe.equivariance.pictures import weight_sharing_pattern

        if self.structure == "orbits":
            return self.space.pattern
        return weight_sharing_pattern(self.space.dense_basis())
