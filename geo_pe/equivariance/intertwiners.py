"""Intertwiner bases: all weights W with rho_out(g) W = W rho_in(g) for every g.

Every constraint has the Sylvester form ``A W = W B``: for finite groups one pair per generator g,
``(rho_out(g), rho_in(g))``; for Lie groups one pair per Lie-algebra direction X,
``(d rho_out(X), d rho_in(X))``, obtained by forward-mode differentiation of ``matrices`` along the
one-parameter subgroup exp(tX). Connected groups (translations, SO(2), SO(3)) need nothing more.

Solvers (``intertwiner_basis(..., method=...)``):

* ``"dense"``: null space of the stacked constraints ``A (x) I - I (x) B^T`` (eigendecomposition of the
  mn x mn normal matrix). The reference; memory and time grow as (mn)^2 and (mn)^3.
* ``"kronecker"``: never forms mn x mn matrices. In the eigenbasis of one generator pair the constraint
  A_1 W = W B_1 just selects the entries (i, j) with equal eigenvalues; the other generators are
  imposed on those k entries only, through a k x k Gram matrix assembled from products of m x m and
  n x n matrices. Cost O(m^3 + n^3 + k^3).
* ``"orbits"``: for permutation representations (every rho(g) a permutation matrix) the intertwiners
  are the indicator matrices of the orbits of index pairs (i, j), found as connected components of the
  graph that the generators draw on the pairs; exact, O(mn) memory, no group enumeration.

`schur_basis` gives the closed forms for representations whose blocks are irreps (Schur's lemma over
R): between copies of a real-type irrep, ``M (x) I``; of a complex-type irrep, ``A (x) I + B (x) J``;
nothing between distinct irreps. Tests check that solvers and closed forms span the same space.

Bases are float64 tensors ``(k, m, n)``, orthonormal in the Frobenius inner product.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from geo_pe.reps.base import DirectSum, Representation, TensorProduct
from geo_pe.reps.finite import (
    FactorRep,
    PermutationGroup,
    PermutationRep,
    RegularRep,
    TensorPower,
    TrivialRep,
)
from geo_pe.reps.groups import SE3, SO2, SO3, Group, Translations

__all__ = [
    "EquivarianceWarning",
    "SchurBlock",
    "constraint_pairs",
    "intertwiner_basis",
    "invariant_vectors",
    "orbit_pattern",
    "permutation_action",
    "schur_basis",
    "schur_blocks",
    "span_distance",
]


class EquivarianceWarning(UserWarning):
    """The equivariant subspace is zero-dimensional: a layer built on it would be identically zero."""


# --- constraints -------------------------------------------------------------------------------------
def _one_parameter_subgroups(group: Group) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """exp(t X) for a basis X of the Lie algebra, as functions of a float64 scalar t."""
    if isinstance(group, Translations):
        if group.ndim == 1:
            return [lambda t: t]
        return [lambda t, a=a: t * torch.eye(group.ndim, dtype=t.dtype)[a] for a in range(group.ndim)]
    if isinstance(group, SO2):
        return [lambda t: t]
    if isinstance(group, SO3):

        def rotation(t, a):
            axis = torch.eye(3, dtype=t.dtype)[a]
            return torch.cat((torch.cos(t / 2)[None], torch.sin(t / 2) * axis))

        return [lambda t, a=a: rotation(t, a) for a in range(3)]
    if isinstance(group, SE3):  # three rotations about the axes, three translations along them

        def turn(t, a):
            axis = torch.eye(3, dtype=t.dtype)[a]
            return torch.cat((torch.cos(t / 2)[None], torch.sin(t / 2) * axis, torch.zeros(3, dtype=t.dtype)))

        def shift(t, a):
            return torch.cat(
                (
                    torch.ones(1, dtype=t.dtype),
                    torch.zeros(3, dtype=t.dtype),
                    t * torch.eye(3, dtype=t.dtype)[a],
                )
            )

        return [lambda t, a=a: turn(t, a) for a in range(3)] + [lambda t, a=a: shift(t, a) for a in range(3)]
    raise ValueError(f"rep: no Lie algebra known for the group {group.name}")


def _algebra_generator(rep: Representation, attribute: str, path) -> torch.Tensor:
    """d/dt rep.matrices(g(t)) at t = 0, where only ``attribute`` moves along ``path``."""
    groups = rep.attribute_groups

    def matrices(t):
        elements = {a: g.identity((), dtype=torch.float64) for a, g in groups.items()}
        elements[attribute] = path(t)
        return rep.matrices(elements if len(groups) > 1 else elements[attribute])

    zero, one = torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)
    return torch.func.jvp(matrices, (zero,), (one,))[1].to(torch.float64)


def constraint_pairs(rep_out: Representation, rep_in: Representation) -> tuple[list, str]:
    """``([(A, B), ...], kind)``: W is an intertwiner iff A W = W B for every pair.

    ``kind`` is ``"group"`` (finite generators) or ``"algebra"`` (Lie-algebra generators, skew).
    Spaces such as S^2 contribute through their ``acting_rep``.
    """
    rep_out, rep_in = rep_out.acting_rep, rep_in.acting_rep
    if isinstance(rep_out.group, PermutationGroup) or isinstance(rep_in.group, PermutationGroup):
        if rep_out.group != rep_in.group:
            raise ValueError(
                f"reps: expected representations of one group, got {rep_out.group.name} "
                f"and {rep_in.group.name}"
            )
        gens = rep_out.group.generators
        A, B = rep_out.matrices(gens).double(), rep_in.matrices(gens).double()
        return list(zip(A, B, strict=True)), "group"
    attributes = {**rep_in.attribute_groups, **rep_out.attribute_groups}
    for attr, group in attributes.items():
        for rep in (rep_out, rep_in):
            if attr in rep.attribute_groups and rep.attribute_groups[attr] != group:
                raise ValueError(
                    f"reps: attribute {attr!r} is {group.name} in one representation and not the other"
                )
    pairs = []
    for attr, group in attributes.items():
        for path in _one_parameter_subgroups(group):
            A = (
                _algebra_generator(rep_out, attr, path)
                if attr in rep_out.attribute_groups
                else torch.zeros(rep_out.dim, rep_out.dim, dtype=torch.float64)
            )
            B = (
                _algebra_generator(rep_in, attr, path)
                if attr in rep_in.attribute_groups
                else torch.zeros(rep_in.dim, rep_in.dim, dtype=torch.float64)
            )
            pairs.append((A, B))
    return pairs, "algebra"


# --- solvers -----------------------------------------------------------------------------------------
def _null_space_hermitian(Q: torch.Tensor, tol: float) -> torch.Tensor:
    """Orthonormal columns spanning {x : Q x = 0} for Hermitian PSD Q, eigenvalues below tol * scale."""
    values, vectors = torch.linalg.eigh(Q)
    scale = max(1.0, values.abs().max().item()) if values.numel() else 1.0
    return vectors[:, values < tol * scale]


def _solve_dense(pairs, m: int, n: int, tol: float) -> torch.Tensor:
    Q = torch.zeros(m * n, m * n, dtype=torch.float64)
    for A, B in pairs:  # row-major vec: vec(A W) = (A (x) I) vec W, vec(W B) = (I (x) B^T) vec W
        K = torch.kron(A, torch.eye(n, dtype=torch.float64)) - torch.kron(
            torch.eye(m, dtype=torch.float64), B.T.contiguous()
        )
        Q += K.T @ K
    basis = _null_space_hermitian(Q, tol)
    return basis.T.reshape(-1, m, n)


def _unitary_eigenbasis(N: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and a unitary eigenbasis of a real normal matrix (orthogonal or skew).

    N = H + iK with commuting Hermitian H, K; one Hermitian eigh of H + cK with an irrational c
    separates the joint eigenvalues and returns orthonormal eigenvectors even when they repeat.
    """
    Nc = N.to(torch.complex128)
    H = (Nc + Nc.mH) / 2
    K = (Nc - Nc.mH) / 2j
    scale = max(1.0, Nc.abs().max().item())
    for c in (1 / math.e, 1 / math.pi, math.sqrt(2) - 1):  # a coincidence for one is not one for all
        _, U = torch.linalg.eigh(H + c * K)
        D = U.mH @ Nc @ U
        values = torch.diagonal(D)
        if (D - torch.diag(values)).abs().max().item() < 1e-9 * scale:
            return values, U
    raise RuntimeError("could not diagonalise a generator; is the representation orthogonal?")


def _solve_kronecker(pairs, m: int, n: int, tol: float) -> torch.Tensor:
    eig_out = [_unitary_eigenbasis(A) for A, _ in pairs]
    eig_in = [_unitary_eigenbasis(B) for _, B in pairs]
    match_tol = 1e-6 * max(1.0, *(e[0].abs().max().item() for e in eig_out + eig_in if e[0].numel()))
    masks = [
        (a[:, None] - b[None, :]).abs() < match_tol for (a, _), (b, _) in zip(eig_out, eig_in, strict=True)
    ]
    first = min(range(len(pairs)), key=lambda g: int(masks[g].sum()))  # the most selective generator
    U, V = eig_out[first][1], eig_in[first][1]
    rows, cols = masks[first].nonzero(as_tuple=True)
    k = rows.numel()
    if k == 0:
        return torch.zeros(0, m, n, dtype=torch.float64)
    N = torch.zeros(k, k, dtype=torch.complex128)
    same_col = cols[:, None] == cols[None, :]
    same_row = rows[:, None] == rows[None, :]
    for g, (A, B) in enumerate(pairs):
        if g == first:
            continue
        At = U.mH @ A.to(torch.complex128) @ U  # A in the first generator's eigenbasis
        Bt = V.mH @ B.to(torch.complex128) @ V
        AA, BB = At.mH @ At, Bt @ Bt.mH
        # Gram matrix of the columns c_(ij) = vec(At E_ij - E_ij Bt) restricted to the matched entries
        N += same_col * AA[rows[:, None], rows[None, :]]
        N += same_row * BB[cols[None, :], cols[:, None]]
        N -= At[rows[None, :], rows[:, None]].conj() * Bt[cols[None, :], cols[:, None]]
        N -= Bt[cols[:, None], cols[None, :]].conj() * At[rows[:, None], rows[None, :]]
    coefficients = _null_space_hermitian(N, tol)  # (k, r)
    X = torch.zeros(coefficients.shape[1], m, n, dtype=torch.complex128)
    X[:, rows, cols] = coefficients.T
    W = U @ X @ V.mH  # complex solutions; the real ones are spanned by their real and imaginary parts
    stacked = torch.cat((W.real, W.imag)).reshape(2 * W.shape[0], m * n)
    if stacked.shape[0] == 0:
        return torch.zeros(0, m, n, dtype=torch.float64)
    _, s, vh = torch.linalg.svd(stacked, full_matrices=False)
    rank = int((s > 1e-8 * max(1.0, s.max().item())).sum())
    return vh[:rank].reshape(rank, m, n)


# --- permutation representations ---------------------------------------------------------------------
def permutation_action(rep: Representation, g: torch.Tensor) -> torch.Tensor | None:
    """sigma with rho(g) e_i = e_sigma(i), ``(..., dim)`` for permutation representations, else None."""
    if isinstance(rep, PermutationRep):
        return rep.group.validate(g)
    if isinstance(rep, TrivialRep):
        return torch.arange(rep.dim).expand(*g.shape[:-1], rep.dim)
    if isinstance(rep, RegularRep):
        return rep.group.index_of(rep.group.compose(g[..., None, :], rep.group.elements()))
    if isinstance(rep, FactorRep):
        return permutation_action(rep.rep, rep.group.split(rep.group.validate(g))[rep.index])
    if isinstance(rep, TensorPower):
        base = permutation_action(rep.rep, g)
        if base is None:
            return None
        d, out = rep.rep.dim, base
        for _ in range(rep.k - 1):
            out = (out[..., :, None] * d + base[..., None, :]).flatten(-2)
        return out
    if isinstance(rep, TensorProduct) and len(rep.a.layout) == 1 == len(rep.b.layout):
        a, b = permutation_action(rep.a, g), permutation_action(rep.b, g)
        if a is None or b is None:
            return None
        return (a[..., :, None] * rep.b.dim + b[..., None, :]).flatten(-2)
    if isinstance(rep, DirectSum):
        parts, offset = [], 0
        for part in rep.parts:
            sigma = permutation_action(part, g)
            if sigma is None:
                return None
            parts.append(sigma + offset)
            offset += part.dim
        return torch.cat(parts, dim=-1)
    return None


def orbit_pattern(rep_out: Representation, rep_in: Representation) -> torch.Tensor:
    """The orbit of each index pair (i, j) under the group, ``(m, n)`` with labels 0..k-1.

    The intertwiners of permutation representations are exactly the orbit indicators: each label is one
    shared weight (the weight-sharing pattern of Weiler et al. (2023)).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    group = rep_out.group
    m, n = rep_out.dim, rep_in.dim
    nodes = np.arange(m * n)
    src, dst = [], []
    for g in group.generators:
        s_out, s_in = permutation_action(rep_out, g), permutation_action(rep_in, g)
        if s_out is None or s_in is None:
            raise ValueError("reps: orbit_pattern needs permutation representations")
        moved = (s_out.numpy()[:, None] * n + s_in.numpy()[None, :]).reshape(-1)
        src.append(nodes)
        dst.append(moved)
    if not src:
        return torch.from_numpy(nodes.reshape(m, n))
    graph = coo_matrix(
        (np.ones(len(src) * m * n), (np.concatenate(src), np.concatenate(dst))), shape=(m * n, m * n)
    )
    _, labels = connected_components(graph, directed=True, connection="weak")
    _, labels = np.unique(labels, return_inverse=True)  # labels in order of first appearance
    return torch.from_numpy(labels.reshape(m, n).astype(np.int64))


def _orbit_basis(pattern: torch.Tensor) -> torch.Tensor:
    k = int(pattern.max()) + 1 if pattern.numel() else 0
    basis = torch.nn.functional.one_hot(pattern, k).permute(2, 0, 1).to(torch.float64)
    return basis / basis.sum(dim=(1, 2), keepdim=True).sqrt()


# --- closed forms ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SchurBlock:
    """One pair of layout entries carrying the same irrep: the maps ``M (x) I_d`` (and ``N (x) J``).

    Rows ``out_offset : out_offset + out_copies * d`` of W, columns ``in_offset : in_offset + in_copies * d``;
    ``J`` is the complex structure of a complex-type irrep (None for real type).
    """

    out_entry: int
    out_offset: int
    out_copies: int
    in_offset: int
    in_copies: int
    dim: int
    J: torch.Tensor | None

    @property
    def num_maps(self) -> int:
        return self.out_copies * self.in_copies * (1 if self.J is None else 2)


def schur_blocks(rep_out: Representation, rep_in: Representation) -> list[SchurBlock]:
    """The structure of the intertwiners between representations whose blocks are irreps (Schur over R):
    for every pair of layout entries with equal irreps, ``M (x) I`` (real type) or ``A (x) I + B (x) J``
    (complex type); nothing between distinct irreps. No dense basis is formed."""
    rep_out, rep_in = rep_out.acting_rep, rep_in.acting_rep
    entries = []
    for rep in (rep_out, rep_in):
        irreps, layout = rep.irreps, rep.layout
        if [(m, i.dim) for m, i in irreps] != list(layout):
            raise ValueError(
                f"reps: schur_basis needs blocks that are irreps; {type(rep).__name__}'s are not"
            )
        offsets = np.cumsum([0] + [m * d for m, d in layout])[:-1]
        entries.append(list(zip(irreps, offsets.tolist(), rep.complex_structures(), strict=True)))
    blocks = []
    for a, ((m_out, irrep), o_out, J) in enumerate(entries[0]):
        for (m_in, other), o_in, _ in entries[1]:
            if irrep != other:
                continue
            if irrep.kind == "quaternionic":
                raise NotImplementedError("schur_blocks: quaternionic irreps")
            J_block = J.double() if irrep.kind == "complex" else None
            blocks.append(SchurBlock(a, o_out, m_out, o_in, m_in, irrep.dim, J_block))
    return blocks


def schur_basis(rep_out: Representation, rep_in: Representation) -> torch.Tensor:
    """`schur_blocks` as an orthonormal dense basis ``(k, m, n)``; for tests and small representations."""
    basis = []
    m, n = rep_out.acting_rep.dim, rep_in.acting_rep.dim
    for block in schur_blocks(rep_out, rep_in):
        d = block.dim
        maps = [torch.eye(d, dtype=torch.float64)] + ([block.J] if block.J is not None else [])
        for s in range(block.out_copies):
            for t in range(block.in_copies):
                for M in maps:
                    W = torch.zeros(m, n, dtype=torch.float64)
                    r, c = block.out_offset + s * d, block.in_offset + t * d
                    W[r : r + d, c : c + d] = M / math.sqrt(d)
                    basis.append(W)
    return torch.stack(basis) if basis else torch.zeros(0, m, n, dtype=torch.float64)


# --- entry points ------------------------------------------------------------------------------------
def intertwiner_basis(
    rep_out: Representation,
    rep_in: Representation,
    *,
    method: str = "auto",
    tol: float = 1e-9,
    warn: bool = True,
) -> torch.Tensor:
    """An orthonormal basis ``(k, m, n)`` (float64) of the W with rho_out(g) W = W rho_in(g).

    Args:
        method: ``"auto"`` (orbits for permutation representations, dense up to mn = 1600, else
            kronecker), ``"dense"``, ``"kronecker"`` or ``"orbits"`` (see the module docstring).
        tol: rank tolerance, relative to the largest eigenvalue of the constraint Gram matrix.
        warn: issue an `EquivarianceWarning` when the space is zero-dimensional.
    """
    methods = ("auto", "dense", "kronecker", "orbits")
    if method not in methods:
        raise ValueError(f"method: expected one of {methods}, got {method!r}")
    m, n = rep_out.dim, rep_in.dim
    if method == "auto":
        finite = isinstance(rep_out.group, PermutationGroup)
        if finite and all(permutation_action(r, r.group.identity()) is not None for r in (rep_out, rep_in)):
            method = "orbits"
        else:
            method = "dense" if m * n <= 1600 else "kronecker"
    if method == "orbits":
        basis = _orbit_basis(orbit_pattern(rep_out, rep_in))
    else:
        pairs, _ = constraint_pairs(rep_out, rep_in)
        if not pairs:
            basis = torch.eye(m * n, dtype=torch.float64).reshape(m * n, m, n)
        else:
            basis = (_solve_dense if method == "dense" else _solve_kronecker)(pairs, m, n, tol)
    if warn and basis.shape[0] == 0:
        warnings.warn(
            f"no equivariant linear maps from {rep_in.group.name} dim {n} to dim {m}: they share no irrep, "
            "so a layer constrained to this space would be identically zero",
            EquivarianceWarning,
            stacklevel=2,
        )
    return basis


def invariant_vectors(rep: Representation, *, tol: float = 1e-9) -> torch.Tensor:
    """Orthonormal basis ``(k, dim)`` of the vectors with rho(g) v = v (e.g. allowed biases)."""
    pairs, kind = constraint_pairs(rep, rep)
    Q = torch.zeros(rep.dim, rep.dim, dtype=torch.float64)
    for A, _ in pairs:
        K = A - torch.eye(rep.dim, dtype=torch.float64) if kind == "group" else A
        Q += K.T @ K
    return _null_space_hermitian(Q, tol).T


def span_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Sine of the largest principal angle between the spans of two bases ``(k, m, n)``.

    0 when they span the same space, 1 when their dimensions differ. Computed as
    ``max(||(I - Q_a Q_a^T) Q_b||, ||(I - Q_b Q_b^T) Q_a||)``, accurate to machine precision.
    """
    if a.shape[0] != b.shape[0]:
        return 1.0
    if a.shape[0] == 0:
        return 0.0
    qa = torch.linalg.qr(a.reshape(a.shape[0], -1).T.double()).Q
    qb = torch.linalg.qr(b.reshape(b.shape[0], -1).T.double()).Q
    off_a = qb - qa @ (qa.T @ qb)
    off_b = qa - qb @ (qb.T @ qa)
    return float(max(torch.linalg.matrix_norm(off_a, ord=2), torch.linalg.matrix_norm(off_b, ord=2)))
