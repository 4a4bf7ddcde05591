"""Real Wigner-D matrices and real spherical harmonics of SO(3), in one shared real basis.

Basis. Degree l has 2l+1 components indexed by m = -l..l (array index m + l). They are the real
spherical harmonics without the Condon-Shortley phase,

    Y_l0 = P_l(z),  Y_lm = sqrt(2) P_l^m(z) cos(m phi),  Y_l,-m = sqrt(2) P_l^m(z) sin(m phi)   (m > 0)

with fully normalised associated Legendre functions. For l = 1 this is (y, z, x): the Wigner-D matrix
of degree 1 is ``to_matrix(q)`` with rows and columns permuted by `L1_PERMUTATION`,
``D_1 = R[..., L1_PERMUTATION, :][..., :, L1_PERMUTATION]``. Everything satisfies

    D_l(q1 q2) = D_l(q1) D_l(q2),   D_l(-q) = D_l(q),   Y_l(R x) = D_l(R) Y_l(x).

Wigner-D matrices are computed from the rotation matrix with the recursion of Ivanic and Ruedenberg
(J. Phys. Chem. 100, 6342 (1996); erratum 102, 9099 (1998)), never through Euler angles. Every entry
of D_l is a polynomial of degree l in the entries of R, hence of degree 2l in q: gradients are finite
everywhere, at the identity and at half turns included.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from geo_pe import quaternion
from geo_pe._checks import (
    check_finite,
    check_floating,
    check_tensor,
    check_trailing_shape,
    compute_dtype,
    full_precision,
    value_checks_enabled,
)

__all__ = [
    "L1_PERMUTATION",
    "spherical_harmonics",
    "wigner_D",
    "wigner_D_all",
    "wigner_D_from_matrix",
]

L1_PERMUTATION = (1, 2, 0)
"""Row/column order (y, z, x) that turns a Cartesian rotation matrix into D_1."""


def _check_degree(l: object, name: str = "l") -> int:
    if isinstance(l, bool) or not isinstance(l, (int, np.integer)) or l < 0:
        raise ValueError(f"{name}: expected a non-negative integer degree, got {l!r}")
    return int(l)


@functools.cache
def _recursion_constants(l: int) -> tuple[np.ndarray, np.ndarray]:
    """Constants of the Ivanic-Ruedenberg step D_{l-1} -> D_l (l >= 2).

    Returns ``A`` of shape (3, 2l+1, 2l-1) and ``inv_s`` of shape (2l+1,). With
    ``M_j = sum_i R1[i, j] A[i]`` (j = -1, 0, 1 as indices 0, 1, 2) the recursion reads

        D_l[:, n]  = inv_s[n] (M_0 D_{l-1})[:, n]                              |n| < l
        D_l[:, l]  = inv_s[l] ((M_1 D_{l-1})[:, l-1]  - (M_-1 D_{l-1})[:, 1-l])
        D_l[:, -l] = inv_s[l] ((M_1 D_{l-1})[:, 1-l]  + (M_-1 D_{l-1})[:, l-1])

    because the coefficients u, v, w of the paper (Table 2, with the erratum) factor into a function
    of the row m times 1/sqrt(d(n)), and the functions U, V, W pick rows of D_{l-1} that depend on m only.
    """
    A = np.zeros((3, 2 * l + 1, 2 * l - 1))

    def add(i: int, m: int, a: int, c: float) -> None:
        if c != 0.0:
            A[i + 1, m + l, a + l - 1] += c

    for m in range(-l, l + 1):
        am = abs(m)
        u = math.sqrt((l + m) * (l - m))
        v = 0.5 * math.sqrt((1 + (m == 0)) * (l + am - 1) * (l + am)) * (1 - 2 * (m == 0))
        w = -0.5 * math.sqrt((l - am - 1) * (l - am)) * (m != 0) if am < l - 1 else 0.0
        if u:  # U = P_0(m, n)
            add(0, m, m, u)
        if m == 0:  # V = P_1(1, n) + P_-1(-1, n)
            add(1, m, 1, v)
            add(-1, m, -1, v)
        elif m > 0:  # V = P_1(m-1, n) sqrt(1 + d_m1) - P_-1(-m+1, n) (1 - d_m1)
            add(1, m, m - 1, v * math.sqrt(1 + (m == 1)))
            add(-1, m, -m + 1, -v * (m != 1))
        else:  # V = P_1(m+1, n) (1 - d_m,-1) + P_-1(-m-1, n) sqrt(1 + d_m,-1)
            add(1, m, m + 1, v * (m != -1))
            add(-1, m, -m - 1, v * math.sqrt(1 + (m == -1)))
        if w:
            if m > 0:  # W = P_1(m+1, n) + P_-1(-m-1, n)
                add(1, m, m + 1, w)
                add(-1, m, -m - 1, w)
            else:  # W = P_1(m-1, n) - P_-1(-m+1, n)
                add(1, m, m - 1, w)
                add(-1, m, -m + 1, -w)
    n = np.arange(-l, l + 1)
    d = np.where(np.abs(n) < l, (l + n) * (l - n), 2 * l * (2 * l - 1)).astype(np.float64)
    return A, 1.0 / np.sqrt(d)


@functools.cache
def _recursion_runs(l: int) -> tuple[np.ndarray, tuple[tuple[int, int, int, int, bool], ...]]:
    """The sparsity of A (see `_recursion_constants`) as runs of diagonals and anti-diagonals.

    Every non-zero A[i, m, a] lies on a line a = m + c or a = c - m with c in {-1, 0, 1}, so M_j X is a
    sum of at most 9 slice-wise products. Returns ``(coef, runs)``: ``coef`` concatenates the entries of
    all runs; each run is ``(i, row_start, length, src_start, reversed)`` where rows are output indices
    m + l and sources are indices a + l - 1 (into the flipped X when ``reversed``).
    """
    A, _ = _recursion_constants(l)
    residual = A.copy()  # lines cross (at m = 0, +-1): each entry must be taken by exactly one run
    cols = 2 * l - 1
    coef, runs = [], []
    for i in range(3):
        for reversed_ in (False, True):
            for c in (-1, 0, 1):
                ms = [m for m in range(-l, l + 1) if abs((c - m) if reversed_ else (m + c)) <= l - 1]
                src_rows = [((c - m) if reversed_ else (m + c)) + l - 1 for m in ms]
                values = [residual[i, m + l, a] for m, a in zip(ms, src_rows, strict=True)]
                nonzero = [k for k, v in enumerate(values) if v != 0.0]
                if not nonzero:
                    continue
                lo, hi = nonzero[0], nonzero[-1] + 1  # trim zero ends
                for m, a in zip(ms[lo:hi], src_rows[lo:hi], strict=True):
                    residual[i, m + l, a] = 0.0
                src = (cols - 1) - src_rows[lo] if reversed_ else src_rows[lo]
                runs.append((i, ms[lo] + l, hi - lo, src, reversed_))
                coef.extend(values[lo:hi])
    assert not residual.any(), "every entry of A lies on one of the lines"
    return np.asarray(coef), tuple(runs)


@functools.cache
def _step_plan(l: int) -> tuple[tuple, tuple, tuple]:
    """Everything one recursion step needs, as plain Python data (so torch.compile sees constants).

    Returns ``(runs, coefficients, inv_s)``: the runs of `_recursion_runs`, their coefficients spread
    over the row i of R1 they multiply (``entries x 3``), and the column scales of `_recursion_constants`.
    """
    coef, runs = _recursion_runs(l)
    rows_of_r = [i for i, _, length, _, _ in runs for _ in range(length)]
    spread = tuple(
        tuple(float(c) if k == i else 0.0 for k in range(3)) for c, i in zip(coef, rows_of_r, strict=True)
    )
    return runs, spread, tuple(float(v) for v in _recursion_constants(l)[1])


COMPILED_LMAX = 32
# Plain tuples built at import (about 15 ms): torch.compile reads them as constants instead of tracing numpy.
_PLANS = (None, None, *(_step_plan(l) for l in range(2, COMPILED_LMAX + 1)))


def _plan(l: int) -> tuple[tuple, tuple, tuple]:
    if l < len(_PLANS):
        return _PLANS[l]
    if torch.compiler.is_compiling():
        raise ValueError(f"l: degrees above {COMPILED_LMAX} are supported in eager mode only, got {l}")
    return _step_plan(l)


_CONSTANTS: dict[tuple[int, int, torch.dtype, torch.device], torch.Tensor] = {}


def _constant(l: int, which: int, like: torch.Tensor) -> torch.Tensor:
    """Entry ``which`` (1: coefficients, 2: inv_s) of `_plan(l)` as a tensor like ``like``.

    Memoised in eager mode; built inline (as a graph constant) under torch.compile.
    """
    if torch.compiler.is_compiling():
        return torch.tensor(_plan(l)[which], dtype=like.dtype, device=like.device)
    key = (l, which, like.dtype, like.device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(_plan(l)[which], dtype=like.dtype, device=like.device)
    return _CONSTANTS[key]


def _apply_M(l: int, r: torch.Tensor, X: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out[m, j, k, b] += sum_(i, a) A[i, m, a] r[i, j, b] X[a, k, b]``, i.e. M_j X for each j.

    r: (3, J, B) columns of R1; X: (2l-1, K, B); out: zeros of shape (2l+1, J, K, B) (allocated when None).
    """
    coef = _constant(l, 1, X)  # (entries, 3)
    weights = (coef @ r.reshape(3, -1)).view(-1, r.shape[1], r.shape[2])  # (entries, J, B), one GEMM
    if out is None:
        out = X.new_zeros(2 * l + 1, r.shape[1], X.shape[1], r.shape[2])
    flipped = X.flip(0)
    offset = 0
    for _, row, length, src, reversed_ in _plan(l)[0]:
        source = (flipped if reversed_ else X)[src : src + length, None]  # (len, 1, K, B)
        out[row : row + length].addcmul_(weights[offset : offset + length, :, None], source)
        offset += length
    return out


_CACHE_FLOATS = 1 << 21  # recursion working set per pass (8 MiB in fp32); larger batches are split


def _wigner_from_R1(R1: torch.Tensor, lmax: int, degrees: Sequence[int] | None = None) -> list[torch.Tensor]:
    """D_l for l in ``degrees`` (default 0..lmax) from D_1 = R1 ``(..., 3, 3)`` in the (y, z, x) basis."""
    degrees = list(range(lmax + 1)) if degrees is None else list(degrees)
    batch = R1.shape[:-2]
    if lmax <= 1:
        return [R1 if l == 1 else R1.new_ones(*batch, 1, 1) for l in degrees]
    Rt = R1.reshape(-1, 3, 3).permute(1, 2, 0)  # (3, 3, B): Rt[i, j] = R1[..., i, j]
    B = Rt.shape[-1]
    outs = [Rt.new_empty(B, 2 * l + 1, 2 * l + 1) for l in degrees]
    chunk = max(B, 1) if lmax <= 1 else max(256, _CACHE_FLOATS // (2 * lmax + 1) ** 2)
    for start in range(0, B, chunk):
        part = _recursion_batch_last(Rt[..., start : start + chunk].contiguous(), lmax, degrees)
        for out, D in zip(outs, part, strict=True):
            out[start : start + chunk] = D.permute(2, 0, 1)
    return [out.view(*batch, 2 * l + 1, 2 * l + 1) for out, l in zip(outs, degrees, strict=True)]


def _recursion_batch_last(Rt: torch.Tensor, lmax: int, degrees: Sequence[int]) -> list[torch.Tensor]:
    """The Ivanic-Ruedenberg recursion on ``Rt`` (3, 3, B); returns D_l (2l+1, 2l+1, B) for ``degrees``.

    The batch is the last, contiguous dimension, so every step is a handful of large elementwise
    products over slices of D_{l-1} (see `_recursion_runs`) instead of a batch of tiny matmuls, which
    CPU backends execute one matrix at a time.
    """
    B = Rt.shape[-1]
    kept = {0: Rt.new_ones(1, 1, B), 1: Rt}
    D = Rt
    for l in range(2, lmax + 1):
        inv_s = _constant(l, 2, Rt)
        rows = 2 * l + 1
        D_next = Rt.new_zeros(rows, rows, B)
        # Interior columns |n| < l: inv_s[n] (M_0 D)[:, n]; the column scale is applied to D first.
        _apply_M(l, Rt[:, 1:2], D * inv_s[None, 1:-1, None], out=D_next[:, None, 1:-1])
        # Edge columns |n| = l combine M_-1 and M_+1 applied to columns 1-l (k = 0) and l-1 (k = 1).
        edge = _apply_M(l, Rt[:, 0::2], D[:, 0 :: 2 * l - 2])  # (rows, [j=-1, j=+1], 2, B)
        D_next[:, 0] = (edge[:, 1, 0] + edge[:, 0, 1]) * inv_s[0]
        D_next[:, -1] = (edge[:, 1, 1] - edge[:, 0, 0]) * inv_s[-1]
        D = D_next
        if l in degrees:
            kept[l] = D
    return [kept[l] for l in degrees]


def _R1_from_quaternion(q: torch.Tensor) -> torch.Tensor:
    """D_1 of quaternions: the rotation matrix built directly in the (y, z, x) order."""
    return quaternion._rotation_matrix(q.to(compute_dtype(q)), L1_PERMUTATION)


def _R1_from_matrix(R: torch.Tensor) -> torch.Tensor:
    perm = list(L1_PERMUTATION)
    return R[..., perm, :][..., :, perm]


def wigner_D_all(q: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """Real Wigner-D matrices of every degree 0..lmax for quaternions ``q`` of shape ``(..., 4)``.

    Returns a list whose entry l has shape ``(..., 2l+1, 2l+1)``, computed in float32 (float64 for
    float64 input) with autocast disabled. Non-unit q are normalised; zero/NaN/inf q raise.
    """
    lmax = _check_degree(lmax, "lmax")
    q = check_tensor(q, "q")
    check_trailing_shape(q, (4,), "q", "quaternions in (w, x, y, z) order")
    check_floating(q, "q")
    with full_precision(q):
        return _wigner_from_R1(_R1_from_quaternion(q), lmax)


def wigner_D(q: torch.Tensor, l: int) -> torch.Tensor:
    """Real Wigner-D matrix of degree ``l``, shape ``(..., 2l+1, 2l+1)``, for quaternions ``(..., 4)``.

    Orthogonal, a homomorphism (``D(q1 q2) = D(q1) D(q2)``), even in q (``D(-q) = D(q)``), with trace
    ``sin((2l+1) t/2) / sin(t/2)`` for the rotation angle t. See the module docstring for the basis.

    Example::

        >>> q = quaternion.random(10, generator=0)
        >>> wigner_D(q, 2).shape
        torch.Size([10, 5, 5])
    """
    l = _check_degree(l)
    q = check_tensor(q, "q")
    check_trailing_shape(q, (4,), "q", "quaternions in (w, x, y, z) order")
    check_floating(q, "q")
    with full_precision(q):
        return _wigner_from_R1(_R1_from_quaternion(q), l, degrees=[l])[0]


def wigner_D_from_matrix(
    R: torch.Tensor, l: int, *, all_degrees: bool = False
) -> torch.Tensor | list[torch.Tensor]:
    """`wigner_D` from rotation matrices ``(..., 3, 3)``; with ``all_degrees=True`` a list for 0..l."""
    l = _check_degree(l)
    R = check_tensor(R, "R")
    check_trailing_shape(R, (3, 3), "R", "rotation matrices")
    check_floating(R, "R")
    check_finite(R, "R", "rotation matrices")
    with full_precision(R):
        R1 = _R1_from_matrix(R.to(compute_dtype(R)))
        return _wigner_from_R1(R1, l) if all_degrees else _wigner_from_R1(R1, l, degrees=[l])[0]


_NORMALIZATIONS = ("integral", "component", "norm")


def spherical_harmonics(
    x: torch.Tensor, l: int | Sequence[int], *, normalization: str = "component"
) -> torch.Tensor:
    """Real spherical harmonics of the directions ``x / |x|``, in the basis of `wigner_D`.

    Args:
        x: ``(..., 3)`` non-zero vectors (normalised internally; zero, NaN or inf vectors raise).
        l: a degree, or a sequence of degrees whose harmonics are concatenated in that order.
        normalization: ``"integral"`` (orthonormal on the unit sphere), ``"component"`` (each degree has
            squared norm 2l+1 at every point, the e3nn default) or ``"norm"`` (unit norm per degree).

    Returns:
        ``(..., sum(2l+1))`` in float32 (float64 for float64 input), with ``Y_l(R x) = D_l(R) Y_l(x)``.

    Computed from polynomials in x, y, z (normalised associated Legendre recursion times
    Re/Im (x + iy)^m), independently of the Wigner-D recursion, so the two check each other in tests.
    """
    degrees = [l] if isinstance(l, (int, np.integer)) and not isinstance(l, bool) else list(l)
    degrees = [_check_degree(d) for d in degrees]
    if not degrees:
        raise ValueError("l: expected at least one degree")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization: expected one of {_NORMALIZATIONS}, got {normalization!r}")
    x = check_tensor(x, "x")
    check_trailing_shape(x, (3,), "x", "3-vectors")
    check_floating(x, "x")
    check_finite(x, "x", "vectors")
    with full_precision(x):
        x = x.to(compute_dtype(x))
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        if value_checks_enabled() and bool((norm == 0).any()):
            raise ValueError("x: expected non-zero vectors (a direction is undefined at 0)")
        u = x / norm
        table = _harmonics_table(u, max(degrees))
        out = []
        for d in degrees:
            y = table[d]
            if normalization == "component":
                y = y * math.sqrt(4 * math.pi)
            elif normalization == "norm":
                y = y * math.sqrt(4 * math.pi / (2 * d + 1))
            out.append(y)
        return torch.cat(out, dim=-1)


def _harmonics_table(u: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """Orthonormal real harmonics Y_l (..., 2l+1) for unit vectors u, l = 0..lmax."""
    x, y, z = u.unbind(-1)
    # cos(m phi) sin^m(theta) and sin(m phi) sin^m(theta) as Re/Im of (x + i y)^m.
    cos_m, sin_m = [torch.ones_like(x)], [torch.zeros_like(x)]
    for _ in range(lmax):
        c, s = cos_m[-1], sin_m[-1]
        cos_m.append(x * c - y * s)
        sin_m.append(x * s + y * c)
    # pbar[l][m] = fully normalised P_l^m(z) / sin^m(theta) (no Condon-Shortley phase).
    pbar: list[list[torch.Tensor]] = [[torch.full_like(z, 1 / math.sqrt(4 * math.pi))]]
    for l in range(1, lmax + 1):
        row = []
        for m in range(l + 1):
            if m == l:
                row.append(math.sqrt((2 * m + 1) / (2 * m)) * pbar[l - 1][m - 1])
            elif m == l - 1:
                row.append(math.sqrt(2 * m + 3) * z * pbar[l - 1][m])
            else:
                a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
                b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
                row.append(a * (z * pbar[l - 1][m] - b * pbar[l - 2][m]))
        pbar.append(row)
    table = []
    root2 = math.sqrt(2.0)
    for l in range(lmax + 1):
        comps = [root2 * pbar[l][m] * sin_m[m] for m in range(l, 0, -1)]
        comps.append(pbar[l][0])
        comps += [root2 * pbar[l][m] * cos_m[m] for m in range(1, l + 1)]
        table.append(torch.stack(comps, dim=-1))
    return table
