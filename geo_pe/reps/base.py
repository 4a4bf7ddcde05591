"""The shared interface of every representation, and direct sums and tensor products of them.

A representation rho: G -> O(dim) is stored as a direct sum of blocks,

    rho(g) = (+)_k  I_{m_k} (x) B_k(g),        ``layout[k] = (m_k, dim B_k)``,

so it can be applied, traced and differentiated without building the dim x dim matrix. For the Lie
group representations used by positional encodings the blocks are the irreps themselves
(``irreps[k]`` describes ``B_k``); for finite groups the blocks are the summands the user built
(a permutation representation is one block) and ``irreps`` is the decomposition found from characters.

Shapes: ``g`` has batch shape ``(*batch)`` (see `geo_pe.reps.groups`); ``blocks(g)[k]`` is
``(*batch, d_k, d_k)``; ``matrices(g)`` is ``(*batch, dim, dim)``; ``character(g)`` is ``(*batch)``;
``act(g, v)`` takes ``v`` of shape ``(*batch, dim)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from geo_pe.reps.groups import Element, Group, GroupElements, ProductGroup

__all__ = ["TRIVIAL", "DirectSum", "Irrep", "Representation", "TensorPower", "TensorProduct"]

_ENDOMORPHISM_DIM = {"real": 1, "complex": 2, "quaternionic": 4}


@dataclass(frozen=True)
class Irrep:
    """A real irreducible representation, named by its group and label.

    ``kind`` is its Schur type: the commuting matrices End_G(V) form R ("real"), C ("complex") or H
    ("quaternionic"), so the intertwiners between m1 and m2 copies span ``m1 m2 endomorphism_dim``
    dimensions. SO(3) irreps are real; SO(2) irreps with m > 0 and translation irreps are complex.
    """

    group: str
    label: Hashable
    dim: int
    kind: str = "real"

    def __post_init__(self):
        if self.kind not in _ENDOMORPHISM_DIM:
            raise ValueError(f"kind: expected one of {sorted(_ENDOMORPHISM_DIM)}, got {self.kind!r}")

    @property
    def endomorphism_dim(self) -> int:
        return _ENDOMORPHISM_DIM[self.kind]

    def __str__(self) -> str:
        return f"{self.group}[{self.label}]"


TRIVIAL = Irrep("trivial", 0, 1, "real")
"""The trivial irrep: one and the same for every group and token attribute (scalars mix with any copy)."""


class Representation(nn.Module, ABC):
    """Base class: a representation as a direct sum of blocks (see the module docstring)."""

    @property
    @abstractmethod
    def group(self) -> Group: ...

    @property
    @abstractmethod
    def layout(self) -> tuple[tuple[int, int], ...]:
        """``(multiplicity, block dim)`` of each entry of `blocks`, in channel order."""

    @property
    @abstractmethod
    def irreps(self) -> tuple[tuple[int, Irrep], ...]:
        """The irreps it contains, as ``(multiplicity, Irrep)`` pairs."""

    @abstractmethod
    def blocks(self, g: Element) -> list[torch.Tensor]:
        """The blocks of rho(g), one ``(*batch, d_k, d_k)`` tensor per `layout` entry."""

    @property
    def attribute_groups(self) -> dict[str, Group]:
        """For token attributes: the named group (or space) each part reads (empty for finite groups)."""
        return {}

    @property
    def acting_rep(self) -> Representation:
        """How its channels transform under ``group.acting_group``: itself, except for spaces like S^2."""
        return self

    def complex_structures(self) -> list[torch.Tensor | None]:
        """Per `layout` entry of a representation whose blocks are irreps: None for real-type blocks, and
        for complex-type blocks a matrix J (J^2 = -I) commuting with the block, so that its commutant is
        {a I + b J} (Schur's lemma over R). Finite-group representations have no such structure."""
        raise NotImplementedError(
            f"{type(self).__name__}: its blocks are not irreps with a known complex structure"
        )

    @property
    def dim(self) -> int:
        return sum(m * d for m, d in self.layout)

    def matrices(self, g: Element) -> torch.Tensor:
        """The dense matrices rho(g), ``(*batch, dim, dim)``. For tests and small dims only."""
        blocks = self.blocks(g)
        batch = torch.broadcast_shapes(*(b.shape[:-2] for b in blocks))
        out = blocks[0].new_zeros(*batch, self.dim, self.dim)
        offset = 0
        for (mult, d), block in zip(self.layout, blocks, strict=True):
            for _ in range(mult):
                out[..., offset : offset + d, offset : offset + d] = block
                offset += d
        return out

    def character(self, g: Element) -> torch.Tensor:
        """trace rho(g), ``(*batch)``."""
        traces = [
            m * b.diagonal(dim1=-2, dim2=-1).sum(-1)
            for (m, _), b in zip(self.layout, self.blocks(g), strict=True)
        ]
        return torch.stack(torch.broadcast_tensors(*traces)).sum(0)

    def act(self, g: Element, v: torch.Tensor) -> torch.Tensor:
        """rho(g) v for ``v`` of shape ``(*batch, dim)``, block by block."""
        if v.shape[-1] != self.dim:
            raise ValueError(
                f"v: expected a last dimension of {self.dim} (the representation dim), got {v.shape}"
            )
        pieces, offset = [], 0
        for (mult, d), block in zip(self.layout, self.blocks(g), strict=True):
            chunk = v[..., offset : offset + mult * d].unflatten(-1, (mult, d))
            pieces.append(torch.einsum("...ij,...mj->...mi", block.to(v.dtype), chunk).flatten(-2))
            offset += mult * d
        return torch.cat(pieces, dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, group={self.group.name}"


def _merged_group(parts: Sequence[Representation], what: str) -> tuple[Group, dict[str, Group]]:
    """The group of a combination of `parts`: shared, or the product over their attributes."""
    attribute_groups: dict[str, Group] = {}
    if all(p.attribute_groups for p in parts):
        for p in parts:
            for attr, group in p.attribute_groups.items():
                if attribute_groups.setdefault(attr, group) != group:
                    raise ValueError(
                        f"{what}: attribute {attr!r} is read as {attribute_groups[attr].name} by one part "
                        f"and as {group.name} by another; give them different attributes"
                    )
        if len(attribute_groups) == 1:
            return next(iter(attribute_groups.values())), attribute_groups
        return ProductGroup(attribute_groups), attribute_groups
    if any(p.attribute_groups for p in parts) or any(p.group != parts[0].group for p in parts):
        raise ValueError(
            f"{what}: all parts must represent the same group, got {[p.group.name for p in parts]}"
        )
    return parts[0].group, {}


class _Combination(Representation):
    """Shared bookkeeping of `DirectSum` and `TensorProduct`: the group of the combined parts."""

    def __init__(self, parts: Sequence[Representation], what: str):
        super().__init__()
        self._group, self._attribute_groups = _merged_group(list(parts), what)

    @property
    def group(self) -> Group:
        return self._group

    @property
    def attribute_groups(self) -> dict[str, Group]:
        return dict(self._attribute_groups)


class DirectSum(_Combination):
    """rho_1 (+) rho_2 (+) ...: blocks concatenated in order.

    Parts that read different token attributes (e.g. a translation PE of ``"position"`` and an SO(3)
    PE of ``"orientation"``) make a representation of the product group, whose elements are dicts.
    """

    def __init__(self, parts: Sequence[Representation]):
        if not parts:
            raise ValueError("parts: expected at least one representation")
        super().__init__(parts, "parts")
        self.parts = nn.ModuleList(parts)

    @property
    def acting_rep(self) -> Representation:
        if all(p.acting_rep is p for p in self.parts):
            return self
        return DirectSum([p.acting_rep for p in self.parts])

    @property
    def layout(self):
        return tuple(entry for p in self.parts for entry in p.layout)

    @property
    def irreps(self):
        return tuple(entry for p in self.parts for entry in p.irreps)

    def blocks(self, g):
        return [b for p in self.parts for b in p.blocks(g)]

    def complex_structures(self):
        return [J for p in self.parts for J in p.complex_structures()]


class TensorProduct(_Combination):
    """rho_a (x) rho_b, with blocks ``kron(A_i, B_j)`` for every pair of blocks, in (i, j) order.

    Its basis is the Kronecker basis reordered to be block diagonal. For Lie groups the factors must
    read different attributes (an outer product, e.g. chain index x orientation), where each pair of
    irreps stays irreducible; two complex-type irreps would not (their product splits over R) and are
    refused. For finite groups any product is allowed and `irreps` comes from characters.
    """

    def __init__(self, a: Representation, b: Representation):
        super().__init__([a, b], "factors")
        self.a, self.b = a, b
        if self._attribute_groups:
            shared = set(a.attribute_groups) & set(b.attribute_groups)
            if shared:
                raise ValueError(
                    f"factors: both read attribute(s) {sorted(shared)}; the tensor product of two "
                    "representations of one Lie group is reducible, use a direct sum of irreps instead"
                )
            for _, ia in a.irreps:
                for _, ib in b.irreps:
                    if ia.kind != "real" and ib.kind != "real":
                        raise ValueError(
                            f"factors: {ia} (x) {ib} is a product of two complex-type irreps, which splits "
                            "into two irreps over R; combine these attributes with a direct sum '+' instead"
                        )

    @property
    def acting_rep(self) -> Representation:
        if self.a.acting_rep is self.a and self.b.acting_rep is self.b:
            return self
        return TensorProduct(self.a.acting_rep, self.b.acting_rep)

    @property
    def layout(self):
        return tuple((ma * mb, da * db) for ma, da in self.a.layout for mb, db in self.b.layout)

    @property
    def irreps(self):
        decompose = getattr(self.group, "decompose", None)
        if decompose is not None:
            return decompose(self)
        return tuple(
            (
                ma * mb,
                Irrep(
                    f"{ia.group}*{ib.group}",
                    (ia.label, ib.label),
                    ia.dim * ib.dim,
                    "real" if ia.kind == ib.kind == "real" else "complex",
                ),
            )
            for ma, ia in self.a.irreps
            for mb, ib in self.b.irreps
        )

    def complex_structures(self):
        out = []
        for (_, da), Ja in zip(self.a.layout, self.a.complex_structures(), strict=True):
            for (_, db), Jb in zip(self.b.layout, self.b.complex_structures(), strict=True):
                if Ja is not None:
                    out.append(torch.kron(Ja, torch.eye(db, dtype=Ja.dtype, device=Ja.device)))
                elif Jb is not None:
                    out.append(torch.kron(torch.eye(da, dtype=Jb.dtype, device=Jb.device), Jb))
                else:
                    out.append(None)
        return out

    def blocks(self, g):
        blocks_a, blocks_b = self.a.blocks(g), self.b.blocks(g)
        out = []
        for A in blocks_a:
            for B in blocks_b:
                kron = A[..., :, None, :, None] * B[..., None, :, None, :]
                batch = kron.shape[:-4]
                out.append(kron.reshape(*batch, A.shape[-2] * B.shape[-2], A.shape[-1] * B.shape[-1]))
        return out


class TensorPower(Representation):
    """rho^(x k) on (R^d)^(x k), for any representation: S_n acting on order-k tensors (Maron et al.
    2019), or the k-th power of the SO(3) vector representation. One dense block ``kron^k rho(g)``.

    ``irreps`` is computed from characters for finite groups; for Lie groups (Clebsch-Gordan
    decompositions) it is not implemented.
    """

    def __init__(self, rep: Representation, k: int):
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected a positive integer, got {k!r}")
        self.rep, self.k = rep, k

    @property
    def group(self) -> Group:
        return self.rep.group

    @property
    def attribute_groups(self) -> dict[str, Group]:
        return self.rep.attribute_groups

    @property
    def layout(self):
        return ((1, self.rep.dim**self.k),)

    @property
    def irreps(self):
        decompose = getattr(self.group, "decompose", None)
        if decompose is None:
            raise NotImplementedError(
                f"TensorPower.irreps: decomposing tensor powers of {self.group.name} representations"
            )
        return decompose(self)

    def blocks(self, g):
        M = self.rep.matrices(g)
        out = M
        for _ in range(self.k - 1):
            out = (out[..., :, None, :, None] * M[..., None, :, None, :]).flatten(-4, -3).flatten(-2, -1)
        return [out]

    def character(self, g):
        return self.rep.character(g) ** self.k


def element_of(g: Element, attribute: str, group: Group, name: str = "g") -> torch.Tensor:
    """The element of ``attribute`` in ``g`` (a dict of attributes, or a bare tensor), validated; the
    elements of `GroupElements` were validated when it was made and are returned as they are."""
    if isinstance(g, Mapping):
        if attribute not in g:
            raise ValueError(f"{name}: no group element for attribute {attribute!r}; got keys {sorted(g)}")
        if isinstance(g, GroupElements):
            return g[attribute]
        return group.validate(g[attribute], f"{name}[{attribute!r}]")
    return group.validate(g, name)
