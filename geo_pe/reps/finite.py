"""Finite groups as permutation groups, with character tables and real irreps.

Elements of a group on n points are ``LongTensor`` permutations of shape ``(..., n)``: ``g[i]`` is the
image of point i, ``compose(a, b)[i] = a[b[i]]``. A permutation acts on vectors by moving entries,
``(g . x)[g[i]] = x[i]``, i.e. ``(g . x)[j] = x[g^-1(j)]`` (Weiler et al. 2023), through the matrices
``P(g)[g[i], i] = 1`` so that ``P(a b) = P(a) P(b)``.

Families: `cyclic` C_n (rotations of an n-gon's vertices), `dihedral` D_n (rotations and reflections,
n >= 3), `symmetric` S_n, and `direct_product` of any of them (acting on the disjoint union of their
points). Each knows its complex irreducible characters (closed forms for C_n and D_n, the
Murnaghan-Nakayama rule for S_n, products of characters for direct products). Real irreps follow from
the Frobenius-Schur indicator: real type (indicator 1), complex type (0: a character and its conjugate
make one real irrep of twice the dimension) or quaternionic (-1).

Example::

    >>> S4 = symmetric(4)
    >>> rep = TensorPower(PermutationRep(S4), 2)      # S_4 acting on 4 x 4 matrices
    >>> [(m, str(irrep)) for m, irrep in rep.irreps]
    [(2, 'S4[(4,)]'), (3, 'S4[(3, 1)]'), (1, 'S4[(2, 2)]'), (1, 'S4[(2, 1, 1)]')]
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from geo_pe._checks import check_tensor, check_trailing_shape, value_checks_enabled
from geo_pe.reps.base import Irrep, Representation, TensorPower
from geo_pe.reps.groups import Group, as_generator

__all__ = [
    "CyclicGroup",
    "DihedralGroup",
    "DirectProductGroup",
    "FactorRep",
    "PermutationGroup",
    "PermutationRep",
    "RegularRep",
    "SymmetricGroup",
    "TensorPower",
    "TrivialRep",
    "cyclic",
    "dihedral",
    "direct_product",
    "outer_product",
    "symmetric",
]

MAX_ENUMERATED = 200_000  # elements; beyond this, enumerate-based methods refuse rather than hang


class PermutationGroup(Group):
    """A finite group of permutations of {0..n-1}, closed under `compose`, given by generators."""

    def __init__(self, generators: torch.Tensor | Sequence[Sequence[int]], *, name: str):
        gens = torch.as_tensor(generators, dtype=torch.long)
        if gens.dim() != 2 or gens.shape[1] < 1:
            raise ValueError(f"generators: expected shape (k, n) permutations, got {tuple(gens.shape)}")
        n = gens.shape[1]
        if not bool((gens.sort(-1).values == torch.arange(n)).all()):
            raise ValueError("generators: every row must be a permutation of 0..n-1")
        self.generators, self.degree, self._name = gens, n, name

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name})"

    def __eq__(self, other):
        return type(self) is type(other) and self._name == other._name and self.degree == other.degree

    def __hash__(self):
        return hash((type(self).__name__, self._name, self.degree))

    # --- group operations ---------------------------------------------------------------------------
    @property
    def order(self) -> int:
        return len(self.elements())

    def identity(self, batch_shape=(), *, dtype=None, device=None):
        return torch.arange(self.degree, device=device).expand(*batch_shape, self.degree).clone()

    def compose(self, a, b):
        a, b = torch.broadcast_tensors(a, b)
        return a.gather(-1, b)

    def inverse(self, a):
        return torch.argsort(a, dim=-1)

    def sample(self, batch_shape=(), *, generator=None, dtype=None, device=None):
        gen = as_generator(generator)
        elements = self.elements()
        idx = torch.randint(len(elements), tuple(batch_shape), generator=gen)
        out = elements[idx]
        return out.to(device) if device is not None else out

    def validate(self, g, name="g"):
        g = check_tensor(g, name)
        check_trailing_shape(g, (self.degree,), name, f"permutations of {self.degree} points")
        if g.is_floating_point() or g.is_complex():
            raise ValueError(f"{name}: expected integer permutations, got dtype {g.dtype}")
        g = g.long()
        if value_checks_enabled() and not bool((g.sort(-1).values == torch.arange(self.degree)).all()):
            raise ValueError(f"{name}: expected permutations of 0..{self.degree - 1}")
        return g

    def batch_shape(self, g):
        return g.shape[:-1]

    # --- enumeration and classes --------------------------------------------------------------------
    @functools.cached_property
    def _enumeration(self) -> tuple[torch.Tensor, dict[tuple[int, ...], int]]:
        start = tuple(range(self.degree))
        seen = {start: 0}
        queue, order = deque([start]), [start]
        gens = [tuple(int(v) for v in g) for g in self.generators]
        while queue:
            h = queue.popleft()
            for s in gens:
                k = tuple(s[i] for i in h)  # s o h
                if k not in seen:
                    if len(seen) >= MAX_ENUMERATED:
                        raise ValueError(
                            f"{self._name}: more than {MAX_ENUMERATED} elements, too many to enumerate"
                        )
                    seen[k] = len(order)
                    order.append(k)
                    queue.append(k)
        return torch.tensor(order, dtype=torch.long), seen

    def elements(self) -> torch.Tensor:
        """All elements, ``(order, n)``, the identity first."""
        return self._enumeration[0]

    def index_of(self, g: torch.Tensor) -> torch.Tensor:
        """Position of each element of ``g`` ``(..., n)`` in `elements`, ``(...)``."""
        lookup = self._enumeration[1]
        flat = g.reshape(-1, self.degree).tolist()
        return torch.tensor([lookup[tuple(p)] for p in flat], dtype=torch.long).reshape(g.shape[:-1])

    @functools.cached_property
    def _classes(self) -> tuple[torch.Tensor, list[int], torch.Tensor]:
        elements = self.elements()
        inverses = self.inverse(elements)
        class_of = torch.full((len(elements),), -1, dtype=torch.long)
        reps, sizes = [], []
        for i in range(len(elements)):
            if class_of[i] >= 0:
                continue
            conj = self.compose(self.compose(elements, elements[i].expand_as(elements)), inverses)
            members = torch.unique(self.index_of(conj))
            class_of[members] = len(reps)
            reps.append(elements[i])
            sizes.append(len(members))
        return torch.stack(reps), sizes, class_of

    def conjugacy_classes(self) -> tuple[torch.Tensor, list[int]]:
        """Class representatives ``(k, n)`` and class sizes."""
        reps, sizes, _ = self._classes
        return reps, sizes

    def class_index(self, g: torch.Tensor) -> torch.Tensor:
        """The conjugacy class of each element of ``g``, as an index into `conjugacy_classes`."""
        return self._classes[2][self.index_of(g)]

    # --- characters and irreps ----------------------------------------------------------------------
    @property
    def irrep_labels(self) -> list:
        raise NotImplementedError(f"{self._name}: no character table for a group given only by generators")

    def irreducible_characters(self, g: torch.Tensor) -> torch.Tensor:
        """All complex irreducible characters at ``g`` ``(..., n)``: complex128 ``(..., num_irreps)``."""
        raise NotImplementedError(f"{self._name}: no character table for a group given only by generators")

    def character_table(self) -> torch.Tensor:
        """``(num_irreps, num_classes)`` complex128, rows in `irrep_labels` order."""
        reps, _ = self.conjugacy_classes()
        return self.irreducible_characters(reps).T

    @functools.cached_property
    def real_irreps(self) -> list[tuple[Irrep, int]]:
        """Real irreps as ``(Irrep, index of one complex constituent)`` via Frobenius-Schur indicators."""
        reps, sizes = self.conjugacy_classes()
        table = self.character_table()
        size = torch.tensor(sizes, dtype=torch.complex128)
        squares = self.irreducible_characters(self.compose(reps, reps)).T  # chi(g^2) per class
        indicator = (squares * size).sum(-1).real / self.order
        labels = self.irrep_labels
        dims = self.irreducible_characters(self.identity()).real.round().long().tolist()  # chi(e) = dim
        out, used = [], set()
        for i, label in enumerate(labels):
            if i in used:
                continue
            d = dims[i]
            fs = round(indicator[i].item())
            if fs == 1:
                out.append((Irrep(self._name, label, d, "real"), i))
            elif fs == -1:
                out.append((Irrep(self._name, label, 2 * d, "quaternionic"), i))
            else:
                j = next(
                    j for j in range(len(labels)) if torch.allclose(table[j], table[i].conj(), atol=1e-9)
                )
                used.add(j)
                out.append((Irrep(self._name, (label, labels[j]), 2 * d, "complex"), i))
        return out

    def decompose(self, rep: Representation) -> tuple[tuple[int, Irrep], ...]:
        """Multiplicities of the real irreps in ``rep``, from characters on conjugacy classes."""
        reps, sizes = self.conjugacy_classes()
        chi = rep.character(reps).to(torch.complex128)
        table = self.character_table()
        size = torch.tensor(sizes, dtype=torch.complex128)
        complex_mult = (table.conj() * chi * size).sum(-1) / self.order
        if not torch.allclose(complex_mult.imag, torch.zeros(()).double(), atol=1e-6) or not torch.allclose(
            complex_mult.real, complex_mult.real.round(), atol=1e-6
        ):
            raise ValueError(
                f"rep: its character is not a character of {self._name} (non-integer multiplicities)"
            )
        out = []
        for irrep, i in self.real_irreps:
            mult = round(complex_mult[i].real.item())
            if irrep.kind == "quaternionic":
                mult //= 2
            if mult:
                out.append((mult, irrep))
        return tuple(out)


class CyclicGroup(PermutationGroup):
    """C_n: rotations i -> i + j (mod n) of an n-gon's vertices. Irreps: e^(2 pi i k j / n), k = 0..n-1."""

    def __init__(self, n: int):
        _check_size(n, 1, "n")
        super().__init__([[(i + 1) % n for i in range(n)]], name=f"C{n}")
        self.n = n

    @property
    def order(self) -> int:
        return self.n

    @property
    def irrep_labels(self) -> list:
        return list(range(self.n))

    def irreducible_characters(self, g):
        j = g[..., 0].to(torch.float64)
        k = torch.arange(self.n, dtype=torch.float64)
        return torch.exp(2j * math.pi * j[..., None] * k / self.n)


class DihedralGroup(PermutationGroup):
    """D_n (order 2n), the symmetries of an n-gon acting on its vertices, n >= 3.

    Rotation r^j: i -> i + j; reflection r^c s: i -> c - i. Irreps: A1 (trivial), A2 (reflections -1),
    for even n also B1, B2 (rotations (-1)^j, reflections +-(-1)^c), and E_k (2-dim, 1 <= k < n/2).
    """

    def __init__(self, n: int):
        _check_size(n, 3, "n")
        rotation = [(i + 1) % n for i in range(n)]
        reflection = [(-i) % n for i in range(n)]
        super().__init__([rotation, reflection], name=f"D{n}")
        self.n = n

    @property
    def order(self) -> int:
        return 2 * self.n

    @property
    def irrep_labels(self) -> list:
        labels = ["A1", "A2"] + (["B1", "B2"] if self.n % 2 == 0 else [])
        return labels + [f"E{k}" for k in range(1, (self.n + 1) // 2)]

    def irreducible_characters(self, g):
        n = self.n
        shift = g[..., 0]
        is_reflection = g[..., 1] == (shift - 1) % n
        one = torch.ones(g.shape[:-1], dtype=torch.float64)
        sign = torch.where(is_reflection, -one, one)
        parity = 1.0 - 2.0 * (shift % 2).to(torch.float64)  # (-1)^j or (-1)^c
        chars = [one, sign]
        if n % 2 == 0:
            chars += [parity, parity * sign]
        for k in range(1, (n + 1) // 2):
            rot = 2 * torch.cos(2 * math.pi * k * shift.to(torch.float64) / n)
            chars.append(torch.where(is_reflection, torch.zeros_like(rot), rot))
        return torch.stack(chars, -1).to(torch.complex128)


class SymmetricGroup(PermutationGroup):
    """S_n, all permutations of n points; irreps labelled by partitions of n (Murnaghan-Nakayama)."""

    def __init__(self, n: int):
        _check_size(n, 1, "n")
        gens = [list(range(n))]
        if n >= 2:
            gens = [[1, 0, *range(2, n)], [(i + 1) % n for i in range(n)]]
        super().__init__(gens, name=f"S{n}")
        self.n = n

    @property
    def order(self) -> int:
        return math.factorial(self.n)

    def sample(self, batch_shape=(), *, generator=None, dtype=None, device=None):
        gen = as_generator(generator)
        out = torch.argsort(torch.rand(*batch_shape, self.n, generator=gen), dim=-1)
        return out.to(device) if device is not None else out

    @functools.cached_property
    def _partitions(self) -> list[tuple[int, ...]]:
        return _partitions(self.n)

    @property
    def irrep_labels(self) -> list:
        return list(self._partitions)

    def conjugacy_classes(self):
        reps, sizes = [], []
        for mu in self._partitions:
            perm, start = [], 0
            for part in mu:
                perm += [start + (i + 1) % part for i in range(part)]
                start += part
            reps.append(perm)
            sizes.append(math.factorial(self.n) // _centralizer_order(mu))
        return torch.tensor(reps, dtype=torch.long), sizes

    def class_index(self, g):
        position = {mu: i for i, mu in enumerate(self._partitions)}
        flat = [position[_cycle_type(p)] for p in g.reshape(-1, self.n).tolist()]
        return torch.tensor(flat, dtype=torch.long).reshape(g.shape[:-1])

    def irreducible_characters(self, g):
        flat = g.reshape(-1, self.n).tolist()
        values = [[_mn_character(lam, _cycle_type(p)) for lam in self._partitions] for p in flat]
        return torch.tensor(values, dtype=torch.complex128).reshape(*g.shape[:-1], len(self._partitions))


class DirectProductGroup(PermutationGroup):
    """G_1 x ... x G_m acting on the disjoint union of their points; elements are concatenations."""

    def __init__(self, *factors: PermutationGroup):
        if len(factors) < 2:
            raise ValueError("factors: expected at least two groups")
        self.factors = tuple(factors)
        self.offsets = list(itertools.accumulate([0] + [f.degree for f in factors]))
        gens = []
        for k, f in enumerate(factors):
            for s in f.generators:
                full = torch.arange(self.offsets[-1])
                full[self.offsets[k] : self.offsets[k + 1]] = s + self.offsets[k]
                gens.append(full)
        super().__init__(torch.stack(gens), name="x".join(f.name for f in factors))

    def split(self, g: torch.Tensor) -> list[torch.Tensor]:
        """The factor elements of ``g``, each ``(..., n_k)`` on the factor's own points."""
        return [g[..., a:b] - a for a, b in itertools.pairwise(self.offsets)]

    @property
    def order(self) -> int:
        return math.prod(f.order for f in self.factors)

    def sample(self, batch_shape=(), *, generator=None, dtype=None, device=None):
        gen = as_generator(generator)
        parts = [
            f.sample(batch_shape, generator=gen) + a
            for f, a in zip(self.factors, self.offsets[:-1], strict=True)
        ]
        out = torch.cat(parts, -1)
        return out.to(device) if device is not None else out

    @property
    def irrep_labels(self) -> list:
        return list(itertools.product(*(f.irrep_labels for f in self.factors)))

    def conjugacy_classes(self):
        per_factor = [f.conjugacy_classes() for f in self.factors]
        reps, sizes = [], []
        for combo in itertools.product(*(range(len(s)) for _, s in per_factor)):
            reps.append(
                torch.cat(
                    [r[i] + a for (r, _), i, a in zip(per_factor, combo, self.offsets[:-1], strict=True)]
                )
            )
            sizes.append(math.prod(s[i] for (_, s), i in zip(per_factor, combo, strict=True)))
        return torch.stack(reps), sizes

    def class_index(self, g):
        index = torch.zeros(g.shape[:-1], dtype=torch.long)
        for f, part in zip(self.factors, self.split(g), strict=True):
            index = index * len(f.conjugacy_classes()[1]) + f.class_index(part)
        return index

    def irreducible_characters(self, g):
        out = None
        for f, part in zip(self.factors, self.split(g), strict=True):
            chi = f.irreducible_characters(part)
            out = chi if out is None else (out[..., :, None] * chi[..., None, :]).flatten(-2)
        return out


def cyclic(n: int) -> CyclicGroup:
    return CyclicGroup(n)


def dihedral(n: int) -> DihedralGroup:
    return DihedralGroup(n)


def symmetric(n: int) -> SymmetricGroup:
    return SymmetricGroup(n)


def direct_product(*factors: PermutationGroup) -> DirectProductGroup:
    return DirectProductGroup(*factors)


def _check_size(n: object, minimum: int, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {n!r}")


# --- representations --------------------------------------------------------------------------------
class _FiniteRep(Representation):
    def __init__(self, group: PermutationGroup):
        super().__init__()
        self._group = group

    @property
    def group(self) -> PermutationGroup:
        return self._group

    @property
    def irreps(self):
        return self._group.decompose(self)


class PermutationRep(_FiniteRep):
    """The natural action on R^n: ``P(g)[g[i], i] = 1``, i.e. ``(g . x)[g[i]] = x[i]``."""

    @property
    def layout(self):
        return ((1, self._group.degree),)

    def blocks(self, g):
        g = self._group.validate(g)
        n = self._group.degree
        P = torch.zeros(*g.shape, n, dtype=torch.get_default_dtype())
        return [P.scatter_(-2, g[..., None, :], 1.0)]  # row g[i] of column i

    def character(self, g):
        g = self._group.validate(g)
        return (g == torch.arange(self._group.degree)).sum(-1).to(torch.get_default_dtype())

    def act(self, g, v):
        g = self._group.validate(g)
        if v.shape[-1] != self.dim:
            raise ValueError(f"v: expected a last dimension of {self.dim}, got {tuple(v.shape)}")
        batch = torch.broadcast_shapes(g.shape[:-1], v.shape[:-1])
        source = self._group.inverse(g).expand(*batch, self.dim)  # (g . v)[j] = v[g^-1(j)]
        return v.expand(*batch, self.dim).gather(-1, source)


class TrivialRep(_FiniteRep):
    """g -> I_dim."""

    def __init__(self, group: PermutationGroup, dim: int = 1):
        super().__init__(group)
        _check_size(dim, 1, "dim")
        self._dim = dim

    @property
    def layout(self):
        return ((self._dim, 1),)

    def blocks(self, g):
        g = self._group.validate(g)
        return [torch.ones(*g.shape[:-1], 1, 1, dtype=torch.get_default_dtype())]


class RegularRep(_FiniteRep):
    """Left multiplication on R^|G|: e_h -> e_(g h), h indexed as in `PermutationGroup.elements`."""

    @property
    def layout(self):
        return ((1, self._group.order),)

    def blocks(self, g):
        g = self._group.validate(g)
        elements = self._group.elements()
        images = self._group.index_of(self._group.compose(g[..., None, :], elements))  # (..., |G|)
        P = torch.zeros(*images.shape, images.shape[-1], dtype=torch.get_default_dtype())
        return [P.scatter_(-2, images[..., None, :], 1.0)]


class FactorRep(_FiniteRep):
    """A representation of factor ``index`` of a `DirectProductGroup`, as one of the whole product."""

    def __init__(self, group: DirectProductGroup, index: int, rep: Representation):
        super().__init__(group)
        if rep.group != group.factors[index]:
            raise ValueError(
                f"rep: expected a representation of {group.factors[index].name}, got {rep.group.name}"
            )
        self.index, self.rep = index, rep

    @property
    def layout(self):
        return self.rep.layout

    def blocks(self, g):
        return self.rep.blocks(self._group.split(self._group.validate(g))[self.index])

    def character(self, g):
        return self.rep.character(self._group.split(self._group.validate(g))[self.index])


def outer_product(*reps: Representation) -> Representation:
    """rho_1 (x) ... (x) rho_m as a representation of G_1 x ... x G_m (Hartford et al. 2018).

    ``outer_product(PermutationRep(symmetric(3)), PermutationRep(symmetric(4)))`` acts on 3 x 4 arrays,
    rows and columns permuted independently.
    """
    from geo_pe.reps.base import TensorProduct

    group = direct_product(*(r.group for r in reps))
    lifted = [FactorRep(group, k, r) for k, r in enumerate(reps)]
    out = lifted[0]
    for r in lifted[1:]:
        out = TensorProduct(out, r)
    return out


# --- combinatorics for S_n ----------------------------------------------------------------------------
def _partitions(n: int) -> list[tuple[int, ...]]:
    """Partitions of n in reverse lexicographic order: (n,), (n-1, 1), ..., (1, ..., 1)."""
    out: list[tuple[int, ...]] = []

    def build(remaining: int, largest: int, prefix: tuple[int, ...]) -> None:
        if remaining == 0:
            out.append(prefix)
            return
        for part in range(min(remaining, largest), 0, -1):
            build(remaining - part, part, (*prefix, part))

    build(n, n, ())
    return out


def _cycle_type(perm: Sequence[int]) -> tuple[int, ...]:
    seen, lengths = [False] * len(perm), []
    for start in range(len(perm)):
        if not seen[start]:
            length, i = 0, start
            while not seen[i]:
                seen[i], i, length = True, perm[i], length + 1
            lengths.append(length)
    return tuple(sorted(lengths, reverse=True))


def _centralizer_order(mu: tuple[int, ...]) -> int:
    counts: dict[int, int] = {}
    for part in mu:
        counts[part] = counts.get(part, 0) + 1
    return math.prod(part**c * math.factorial(c) for part, c in counts.items())


@functools.cache
def _mn_character(lam: tuple[int, ...], mu: tuple[int, ...]) -> int:
    """chi^lam(mu) by the Murnaghan-Nakayama rule, on beta-sets (first column hook lengths).

    Removing a rim hook of length r moves one bead of the beta-set from b to b - r (onto a free spot);
    its sign is (-1)^(number of beads strictly between b - r and b).
    """
    if not mu:
        return 1 if sum(lam) == 0 else 0
    r, rest = mu[0], mu[1:]
    k = len(lam)
    beta = [lam[i] + (k - 1 - i) for i in range(k)]
    beads = set(beta)
    total = 0
    for b in beta:
        target = b - r
        if target < 0 or target in beads:
            continue
        height = sum(1 for c in beads if target < c < b)
        new = sorted((beads - {b}) | {target}, reverse=True)
        new_lam = tuple(v - (k - 1 - i) for i, v in enumerate(new))
        total += (-1) ** height * _mn_character(tuple(p for p in new_lam if p > 0), rest)
    return total
