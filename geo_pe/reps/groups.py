"""Groups whose elements are batched tensors: translations R^n, SO(2), SO(3) and their products.

Every group knows how its elements are shaped and how to compose, invert, sample and validate them,
so that tests and `geo_pe.testing` can treat all groups alike.

=================  ==========================================  =======================================
group              element                                     composition
=================  ==========================================  =======================================
``Translations(1)``  position ``(...)``                        x + y
``Translations(n)``  position ``(..., n)``                     x + y
``SO2()``          angle in radians ``(...)``                  a + b
``SO3()``          unit quaternion ``(..., 4)``, (w, x, y, z)  Hamilton product ``q1 q2``
``ProductGroup``   ``dict`` from attribute name to element     componentwise
=================  ==========================================  =======================================

``compose(a, b)`` is the product a b: acting with it means acting with b first, then a.

Tokens may also carry points of a homogeneous space rather than group elements: `Sphere` (unit
directions in R^3) is a `Space` on which SO(3) acts. Every space (groups included) names the group
that acts on it, ``acting_group``, and how: ``act(h, x)`` (left multiplication for groups).
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from geo_pe import quaternion, se3
from geo_pe._checks import (
    check_finite,
    check_floating,
    check_tensor,
    check_trailing_shape,
    input_validation,
    value_checks_enabled,
)

__all__ = [
    "SO2",
    "SO3",
    "Group",
    "GroupElements",
    "ProductGroup",
    "Space",
    "Sphere",
    "Translations",
    "as_generator",
    "validate_elements",
]

Element = torch.Tensor | Mapping[str, torch.Tensor]


def as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """Accept a ``torch.Generator``, an int seed or None."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(
        f"generator: expected a torch.Generator, an int seed or None, got {type(generator).__name__}"
    )


class Space(ABC):
    """Batched points of a space on which a group acts (every `Group` is one, acting on itself)."""

    name: str

    @abstractmethod
    def sample(
        self, batch_shape: tuple[int, ...] = (), *, generator=None, dtype=None, device=None
    ) -> Element:
        """Random points (Haar/uniform measure where there is one; Gaussian for translations)."""

    @abstractmethod
    def validate(self, g: Element, name: str = "g") -> Element:
        """Check the shape (and, in eager mode, the values) of ``g``; return its canonical form."""

    @abstractmethod
    def batch_shape(self, g: Element) -> torch.Size: ...

    @property
    def acting_group(self) -> Group:
        """The group that acts on this space."""
        return self  # type: ignore[return-value]

    def act(self, h: Element, x: Element) -> Element:
        """``h . x`` for ``h`` in `acting_group` (left multiplication on a group)."""
        return self.compose(h, x)  # type: ignore[attr-defined]


class Group(Space):
    """A group with batched elements (tensors, or dicts of tensors for `ProductGroup`)."""

    @abstractmethod
    def identity(self, batch_shape: tuple[int, ...] = (), *, dtype=None, device=None) -> Element: ...

    @abstractmethod
    def compose(self, a: Element, b: Element) -> Element:
        """The product ``a b`` (broadcasting over batch dimensions)."""

    @abstractmethod
    def inverse(self, a: Element) -> Element: ...


class _AdditiveGroup(Group):
    """Real vectors (or scalars) of shape ``(*batch, *_event)`` under addition."""

    _event: tuple[int, ...] = ()

    def identity(self, batch_shape=(), *, dtype=None, device=None):
        return torch.zeros((*batch_shape, *self._event), dtype=dtype, device=device)

    def compose(self, a, b):
        return a + b

    def inverse(self, a):
        return -a

    def batch_shape(self, g):
        return g.shape[: g.dim() - len(self._event)]


@dataclass(frozen=True, eq=True)
class Translations(_AdditiveGroup):
    """The translation group R^n. Elements: ``(...)`` for n = 1, ``(..., n)`` otherwise."""

    ndim: int = 1
    scale: float = 10.0  # standard deviation of `sample`, so sampled shifts span many wavelengths

    def __post_init__(self):
        if isinstance(self.ndim, bool) or not isinstance(self.ndim, int) or self.ndim < 1:
            raise ValueError(f"ndim: expected a positive integer, got {self.ndim!r}")

    @property
    def name(self) -> str:
        return f"t{self.ndim}"

    @property
    def _event(self) -> tuple[int, ...]:
        return () if self.ndim == 1 else (self.ndim,)

    def sample(self, batch_shape=(), *, generator=None, dtype=None, device=None):
        gen = as_generator(generator)
        x = torch.randn((*batch_shape, *self._event), generator=gen, dtype=dtype or torch.get_default_dtype())
        return (self.scale * x).to(device) if device is not None else self.scale * x

    def validate(self, g, name="g"):
        g = check_tensor(g, name)
        if self.ndim > 1:
            check_trailing_shape(g, (self.ndim,), name, f"positions in R^{self.ndim}")
        if not g.is_floating_point():
            g = g.to(torch.get_default_dtype())  # integer positions (token indices) are welcome
        check_finite(g, name, "positions")
        return g


@dataclass(frozen=True, eq=True)
class SO2(_AdditiveGroup):
    """Planar rotations. Elements: angles in radians ``(...)``."""

    @property
    def name(self) -> str:
        return "so2"

    def sample(self, batch_shape=(), *, generator=None, dtype=None, device=None):
        gen = as_generator(generator)
        u = torch.rand(tuple(batch_shape), generator=gen, dtype=dtype or torch.get_default_dtype())
        theta = (2 * u - 1) * math.pi
        return theta.to(device) if device is not None else theta

    def validate(self, g, name="g"):
        g = check_tensor(g, name)
        check_floating(g, name)
        check_finite(g, name, "angles")
        return g

    @staticmethod
    def angle_from_vector(v: torch.Tensor, name: str = "v") -> torch.Tensor:
        """Angles ``(...)`` of non-zero 2-vectors ``(..., 2)`` (need not be unit)."""
        v = check_tensor(v, name)
        check_trailing_shape(v, (2,), name, "2-vectors")
        check_floating(v, name)
        check_finite(v, name, "2-vectors")
        if value_checks_enabled() and bool((torch.linalg.vector_norm(v, dim=-1) == 0).any()):
            raise ValueError(f"{name}: expected non-zero 2-vectors (the angle of 0 is undefined)")
        return torch.atan2(v[..., 1], v[..., 0])


@dataclass(frozen=True, eq=True)
class SO3(Group):
    """Rotations of R^3. Elements: quaternions ``(..., 4)`` in (w, x, y, z) order (normalised on input)."""

    @property
    def name(self) -> str:
        return "so3"

    def identity(self, batch_shape=(), *, dtype=None, device=None):
        return quaternion.identity(*batch_shape, dtype=dtype, device=device)

    def compose(self, a, b):
        return quaternion.multiply(a, b)

    def inverse(self, a):
        return quaternion.conjugate(a)

    def sample(self, batch_shape=(), *, generator=None, dtype=None, device=None):
        return quaternion.random(*batch_shape, generator=as_generator(generator), dtype=dtype, device=device)

    def validate(self, g, name="g"):
        g = check_tensor(g, name)
        check_trailing_shape(g, (4,), name, "unit quaternions in (w, x, y, z) order")
        check_floating(g, name)
        try:
            return quaternion.normalize(g)
        except ValueError as err:
            raise ValueError(str(err).replace("q:", f"{name}:", 1)) from None

    def batch_shape(self, g):
        return g.shape[:-1]


@dataclass(frozen=True, eq=True)
class SE3(Group):
    """Rigid motions of R^3. Elements: poses ``(..., 7)``, a quaternion (w, x, y, z) then a translation
    (see `geo_pe.se3`); ``compose(a, b)`` is first b, then a."""

    @property
    def name(self) -> str:
        return "se3"

    def identity(self, batch_shape=(), *, dtype=None, device=None):
        return se3.identity(*batch_shape, dtype=dtype, device=device)

    def compose(self, a, b):
        return se3.compose(a, b)

    def inverse(self, a):
        return se3.inverse(a)

    def sample(self, batch_shape=(), *, generator=None, dtype=None, device=None):
        return se3.random(*batch_shape, generator=as_generator(generator), dtype=dtype, device=device)

    def validate(self, g, name="g"):
        return se3.validate(g, name)

    def batch_shape(self, g):
        return g.shape[:-1]


@dataclass(frozen=True, eq=True)
class Sphere(Space):
    """Directions in R^3: points ``(..., 3)`` (normalised on input), acted on by SO(3) rotations."""

    @property
    def name(self) -> str:
        return "s2"

    @property
    def acting_group(self) -> Group:
        return SO3()

    def act(self, h, x):
        return quaternion.apply(h, x)

    def sample(self, batch_shape=(), *, generator=None, dtype=None, device=None):
        gen = as_generator(generator)
        x = torch.randn((*batch_shape, 3), generator=gen, dtype=dtype or torch.get_default_dtype())
        x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x.to(device) if device is not None else x

    def validate(self, g, name="g"):
        g = check_tensor(g, name)
        check_trailing_shape(g, (3,), name, "directions")
        check_floating(g, name)
        check_finite(g, name, "directions")
        norm = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
        if value_checks_enabled() and bool((norm == 0).any()):
            raise ValueError(f"{name}: expected non-zero direction vectors")
        return g / norm

    def batch_shape(self, g):
        return g.shape[:-1]


class ProductGroup(Group):
    """Direct product of named groups (or spaces); elements are dicts ``{attribute: element}``.

    Example: ``ProductGroup({"position": Translations(1), "orientation": SO3()})`` for tokens with a
    chain index and an orientation. With a `Sphere` factor it is a product space: `act` and
    `acting_group` work, the group operations raise ``TypeError``.
    """

    def __init__(self, factors: Mapping[str, Space]):
        if not factors:
            raise ValueError("factors: expected at least one named group")
        self.factors = dict(factors)

    @property
    def name(self) -> str:
        return " x ".join(f"{g.name}@{a}" for a, g in self.factors.items())

    def __eq__(self, other):
        return isinstance(other, ProductGroup) and self.factors == other.factors

    def __hash__(self):
        return hash(tuple(self.factors.items()))

    def __repr__(self):
        return f"ProductGroup({self.factors!r})"

    def _split(self, g: Element, name: str) -> dict[str, torch.Tensor]:
        if not isinstance(g, Mapping):
            raise ValueError(
                f"{name}: expected a dict with keys {sorted(self.factors)} for the group {self.name}, "
                f"got {type(g).__name__}"
            )
        missing = [a for a in self.factors if a not in g]
        if missing:
            raise ValueError(f"{name}: missing group elements for {missing}; got keys {sorted(g)}")
        return {a: g[a] for a in self.factors}

    def _groups(self) -> dict[str, Group]:
        spaces = [a for a, f in self.factors.items() if not isinstance(f, Group)]
        if spaces:
            raise TypeError(f"{self.name}: {spaces} are spaces, not groups; use acting_group and act instead")
        return self.factors  # type: ignore[return-value]

    def identity(self, batch_shape=(), *, dtype=None, device=None):
        return {a: G.identity(batch_shape, dtype=dtype, device=device) for a, G in self._groups().items()}

    def compose(self, a, b):
        a, b = self._split(a, "a"), self._split(b, "b")
        return {k: G.compose(a[k], b[k]) for k, G in self._groups().items()}

    def inverse(self, a):
        a = self._split(a, "a")
        return {k: G.inverse(a[k]) for k, G in self._groups().items()}

    @property
    def acting_group(self) -> Group:
        if all(isinstance(f, Group) for f in self.factors.values()):
            return self
        return ProductGroup({a: f.acting_group for a, f in self.factors.items()})

    def act(self, h, x):
        h, x = self._split(h, "h"), self._split(x, "x")
        return {k: f.act(h[k], x[k]) for k, f in self.factors.items()}

    def sample(self, batch_shape=(), *, generator=None, dtype=None, device=None):
        gen = as_generator(generator)
        return {
            k: G.sample(batch_shape, generator=gen, dtype=dtype, device=device)
            for k, G in self.factors.items()
        }

    def validate(self, g, name="g"):
        g = self._split(g, name)
        return {k: G.validate(g[k], f"{name}[{k!r}]") for k, G in self.factors.items()}

    def batch_shape(self, g):
        shapes = [G.batch_shape(g[k]) for k, G in self.factors.items()]
        return torch.broadcast_shapes(*shapes)


class GroupElements(dict):
    """Group elements by attribute, validated and in canonical form (unit quaternions and directions,
    floating-point positions): what `validate_elements` returns. The encodings read them as they are,
    without checking again; a plain dict or tensor is validated wherever it is read."""


def validate_elements(
    spaces: Mapping[str, Space], elements: Mapping[str, torch.Tensor], name: str = "positions", *, values=True
) -> GroupElements:
    """Validate ``elements[attribute]`` as elements of ``spaces[attribute]`` once, for every attribute.

    Shapes are always checked; the values (finite, non-zero) when ``values`` and the context allow it
    (`geo_pe.set_input_validation`, eager mode). Returns the canonical elements as `GroupElements`;
    errors name ``name[attribute]``.
    """
    missing = [attribute for attribute in spaces if attribute not in elements]
    if missing:
        raise ValueError(f"{name}: no group elements for attribute(s) {missing}; got keys {sorted(elements)}")
    out = GroupElements()
    # switch the values off only where they would run (never under torch.compile, where they do not)
    with input_validation(False) if not values and value_checks_enabled() else contextlib.nullcontext():
        for attribute, space in spaces.items():
            out[attribute] = space.validate(elements[attribute], f"{name}[{attribute!r}]")
    return out
