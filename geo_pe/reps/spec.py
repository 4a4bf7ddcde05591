"""The irreps spec: which representation a positional encoding uses, as a string or a plain dict.

It is stored in model configs, so both forms are stable (``"version": 1``) and round-trip exactly:
``IrrepsSpec.parse(str(spec)) == spec == IrrepsSpec.from_dict(spec.to_dict())``.

String grammar (whitespace is ignored)::

    spec    := part ("+" part)*               direct sum, in channel order
    part    := factor ("*" factor)*           tensor product of factors on different attributes
    factor  := group ["@" attribute] ":" body
    group   := "t1" | "t2" | ... | "so2" | "so3" | "s2" | "se3" ["(" option ("," option)* ")"]

    body of so2, so3, s2 := item ("+" item)*  or  "(" item ("+" item)* ")"
    item                 := multiplicity "x" label   (so3, s2: degree l >= 0; so2: frequency m >= 0)
    body of tN       := F ["(" option ("," option)* ")"]      F = number of 2x2 blocks
    option           := "base=" float | "layout=" ("axial" | "mixed") | "seed=" int | "learnable"
    body of se3      := item ("+" item)* with label "h" (the 4x4 homogeneous block) or a degree l
    option of se3    := "scale=" float (the translation scale) | "learnable" (a learnable scale)

A "+" followed by an item without a group prefix continues the irreps list of the factor before it,
so ``"so3:1x0+2x1+1x2"`` is one SO(3) factor with three irreps. Inside a product, a list with more than
one item is parenthesised: ``"t1:4*so3:(1x1+1x2)"``.

=======================================  ===================================================  =====
spec                                     meaning                                              dim
=======================================  ===================================================  =====
``t1:32``                                RoPE on 64 channels (base 10000)                      64
``t2:16(base=100,layout=mixed)``         2-d positions, mixed frequency directions             32
``so2:2x0+4x1+2x3``                      SO(2) angles: 2 trivial, 4 copies of m=1, 2 of m=3    14
``so3:1x0+2x1+1x2``                      SO(3) quaternions: l = 0, 1, 1, 2                     12
``t1:8+so3:2x1``                         chain index (+) orientation                           22
``t1:4*so3:1x1``                         chain index (x) orientation: R(w_k t) (x) D_1(q)      24
``s2:2x1+1x2``                           directions through zonal harmonics (`SphereRep`)      11
``se3:2xh+1x1``                          poses: 2 homogeneous [[R, t], [0, 1]], D_1(R)          11
``se3(scale=0.1):1xh``                   poses with translations in units of 10                 4
=======================================  ===================================================  =====

Default attributes (the keys of the dict of group elements): ``position`` for translations, ``angle``
for SO(2), ``orientation`` for SO(3), ``direction`` for S^2, ``pose`` for SE(3); ``@name`` overrides
them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from geo_pe.reps.base import DirectSum, Representation, TensorProduct
from geo_pe.reps.lie import (
    HOMOGENEOUS,
    TRANSLATION_LAYOUTS,
    SE3Rep,
    SO2Rep,
    SO3Rep,
    SphereRep,
    TranslationRep,
)

__all__ = ["IrrepsSpec", "SE3Factor", "SO2Factor", "SO3Factor", "SphereFactor", "TranslationFactor"]

SPEC_VERSION = 1
_ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ITEM = re.compile(r"(\d+)x(\d+)\Z")
_SE3_ITEM = re.compile(r"(\d+)x(h|\d+)\Z")
_SE3_HEAD = re.compile(r"se3(?:\((.*)\))?\Z")
_TRANSLATION = re.compile(r"t([1-9]\d*)\Z")
DEFAULT_ATTRIBUTES = {
    "translation": "position",
    "so2": "angle",
    "so3": "orientation",
    "s2": "direction",
    "se3": "pose",
}


def _error(message: str) -> ValueError:
    return ValueError(f"spec: {message}")


def _check_attribute(attribute: object) -> str:
    if not isinstance(attribute, str) or not _ATTRIBUTE.match(attribute):
        raise _error(f"attribute names must be identifiers, got {attribute!r}")
    return attribute


@dataclass(frozen=True)
class TranslationFactor:
    """Sinusoidal representation of R^ndim with ``num_frequencies`` 2x2 blocks (see `TranslationRep`)."""

    ndim: int
    num_frequencies: int
    attribute: str = "position"
    base: float = 10000.0
    layout: str = "axial"
    seed: int = 0
    learnable: bool = False

    def __post_init__(self):
        for name in ("ndim", "num_frequencies"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _error(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.base, bool) or not isinstance(self.base, (int, float)) or not self.base > 1:
            raise _error(f"base must be a number > 1, got {self.base!r}")
        object.__setattr__(self, "base", float(self.base))
        if self.layout not in TRANSLATION_LAYOUTS:
            raise _error(f"layout must be one of {TRANSLATION_LAYOUTS}, got {self.layout!r}")
        if self.layout == "axial" and self.num_frequencies % self.ndim:
            raise _error(
                f"t{self.ndim}:{self.num_frequencies}: the axial layout needs a number of frequencies "
                f"divisible by {self.ndim}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise _error(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.learnable, bool):
            raise _error(f"learnable must be true or false, got {self.learnable!r}")
        _check_attribute(self.attribute)

    @property
    def group(self) -> str:
        return f"t{self.ndim}"

    @property
    def dim(self) -> int:
        return 2 * self.num_frequencies

    def build(self) -> Representation:
        return TranslationRep(
            self.ndim,
            self.num_frequencies,
            base=self.base,
            layout=self.layout,
            seed=self.seed,
            learnable=self.learnable,
            attribute=self.attribute,
        )

    def body(self) -> str:
        options = []
        if self.base != 10000.0:
            options.append(f"base={self.base:g}")
        if self.layout != "axial":
            options.append(f"layout={self.layout}")
        if self.seed != 0:
            options.append(f"seed={self.seed}")
        if self.learnable:
            options.append("learnable")
        return f"{self.num_frequencies}" + (f"({','.join(options)})" if options else "")

    def to_dict(self) -> dict:
        return {
            "group": self.group,
            "attribute": self.attribute,
            "num_frequencies": self.num_frequencies,
            "base": self.base,
            "layout": self.layout,
            "seed": self.seed,
            "learnable": self.learnable,
        }


@dataclass(frozen=True)
class _IrrepListFactor:
    irreps: tuple[tuple[int, int], ...]
    attribute: str = ""
    group = ""
    label_name = ""

    def __post_init__(self):
        if not self.attribute:
            object.__setattr__(self, "attribute", DEFAULT_ATTRIBUTES[self.group])
        _check_attribute(self.attribute)
        items = []
        if isinstance(self.irreps, (str, bytes)) or not self.irreps:
            raise _error(
                f"{self.group}: expected a non-empty list of [multiplicity, {self.label_name}] pairs"
            )
        for item in self.irreps:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise _error(f"{self.group}: expected [multiplicity, {self.label_name}] pairs, got {item!r}")
            mult, label = item
            for value in (mult, label):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise _error(
                        f"{self.group}: multiplicities and {self.label_name}s must be integers, got {item!r}"
                    )
            if mult < 1 or label < 0:
                raise _error(
                    f"{self.group}: expected multiplicity >= 1 and {self.label_name} >= 0, got {item!r}"
                )
            items.append((mult, label))
        object.__setattr__(self, "irreps", tuple(items))

    def body(self, in_product: bool = False) -> str:
        text = "+".join(f"{m}x{label}" for m, label in self.irreps)
        return f"({text})" if in_product and len(self.irreps) > 1 else text

    def to_dict(self) -> dict:
        return {"group": self.group, "attribute": self.attribute, "irreps": [list(i) for i in self.irreps]}


@dataclass(frozen=True)
class SO2Factor(_IrrepListFactor):
    """SO(2) irreps ``((multiplicity, m), ...)`` with integer frequencies m >= 0."""

    group = "so2"
    label_name = "frequency m"

    @property
    def dim(self) -> int:
        return sum(mult * (1 if m == 0 else 2) for mult, m in self.irreps)

    def build(self) -> Representation:
        return SO2Rep(self.irreps, attribute=self.attribute)


@dataclass(frozen=True)
class SO3Factor(_IrrepListFactor):
    """SO(3) irreps ``((multiplicity, l), ...)`` with degrees l >= 0."""

    group = "so3"
    label_name = "degree l"

    @property
    def dim(self) -> int:
        return sum(mult * (2 * l + 1) for mult, l in self.irreps)

    def build(self) -> Representation:
        return SO3Rep(self.irreps, attribute=self.attribute)


@dataclass(frozen=True)
class SphereFactor(_IrrepListFactor):
    """Directions on S^2, zonal harmonics of degrees ``((multiplicity, l), ...)`` (see `SphereRep`)."""

    group = "s2"
    label_name = "degree l"

    @property
    def dim(self) -> int:
        return sum(mult * (2 * l + 1) for mult, l in self.irreps)

    def build(self) -> Representation:
        return SphereRep(self.irreps, attribute=self.attribute)


@dataclass(frozen=True)
class SE3Factor:
    """Rigid poses: ``((multiplicity, "h" or degree l), ...)`` with a translation scale (`SE3Rep`)."""

    irreps: tuple[tuple[int, int | str], ...]
    attribute: str = "pose"
    translation_scale: float = 1.0
    learnable_scale: bool = False
    group = "se3"

    def __post_init__(self):
        _check_attribute(self.attribute)
        if isinstance(self.irreps, (str, bytes)) or not self.irreps:
            raise _error("se3: expected a non-empty list of [multiplicity, 'h' or degree l] pairs")
        items = []
        for item in self.irreps:
            ok = isinstance(item, (list, tuple)) and len(item) == 2
            mult, label = item if ok else (None, None)
            ok = ok and isinstance(mult, int) and not isinstance(mult, bool) and mult >= 1
            ok = ok and (
                label == HOMOGENEOUS
                or (isinstance(label, int) and not isinstance(label, bool) and label >= 0)
            )
            if not ok:
                raise _error(f"se3: expected [multiplicity >= 1, 'h' or degree l >= 0] pairs, got {item!r}")
            items.append((mult, label))
        object.__setattr__(self, "irreps", tuple(items))
        scale = self.translation_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise _error(f"se3: the translation scale must be a positive number, got {scale!r}")
        object.__setattr__(self, "translation_scale", float(scale))
        if not isinstance(self.learnable_scale, bool):
            raise _error(f"se3: learnable_scale must be true or false, got {self.learnable_scale!r}")

    @property
    def dim(self) -> int:
        return sum(mult * (4 if label == HOMOGENEOUS else 2 * label + 1) for mult, label in self.irreps)

    def build(self) -> Representation:
        return SE3Rep(
            self.irreps,
            attribute=self.attribute,
            translation_scale=self.translation_scale,
            learnable_scale=self.learnable_scale,
        )

    def options(self) -> str:
        options = [f"scale={self.translation_scale:g}"] if self.translation_scale != 1.0 else []
        options += ["learnable"] if self.learnable_scale else []
        return f"({','.join(options)})" if options else ""

    def body(self, in_product: bool = False) -> str:
        text = "+".join(f"{m}x{label}" for m, label in self.irreps)
        return f"({text})" if in_product and len(self.irreps) > 1 else text

    def to_dict(self) -> dict:
        return {
            "group": self.group,
            "attribute": self.attribute,
            "irreps": [list(i) for i in self.irreps],
            "translation_scale": self.translation_scale,
            "learnable_scale": self.learnable_scale,
        }


Factor = TranslationFactor | SO2Factor | SO3Factor | SphereFactor | SE3Factor
_LIST_FACTORS = {"so2": SO2Factor, "so3": SO3Factor, "s2": SphereFactor}


@dataclass(frozen=True)
class IrrepsSpec:
    """A direct sum of parts; each part a tensor product of factors on distinct attributes."""

    parts: tuple[tuple[Factor, ...], ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not self.parts or any(not part for part in self.parts):
            raise _error("expected at least one part, each with at least one factor")
        seen: dict[str, str] = {}
        for part in self.parts:
            names = [f.attribute for f in part]
            if len(set(names)) != len(names):
                raise _error(f"a tensor product needs factors on different attributes, got {names}")
            for f in part:
                if seen.setdefault(f.attribute, f.group) != f.group:
                    raise _error(
                        f"attribute {f.attribute!r} is used for both {seen[f.attribute]} and {f.group}; "
                        "name one of them with '@'"
                    )

    # --- constructors ----------------------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: str | Mapping | IrrepsSpec) -> IrrepsSpec:
        """An `IrrepsSpec` from its string form, its dict form, or itself."""
        if isinstance(spec, IrrepsSpec):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        if not isinstance(spec, str):
            raise _error(f"expected a string, a dict or an IrrepsSpec, got {type(spec).__name__}")
        return cls(_parse_string(spec))

    @classmethod
    def from_dict(cls, data: Mapping) -> IrrepsSpec:
        if not isinstance(data, Mapping) or "parts" not in data:
            raise _error(f"expected a dict with keys 'version' and 'parts', got {data!r}")
        version = data.get("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise _error(f"unsupported version {version!r} (this geo_pe reads version {SPEC_VERSION})")
        unknown = set(data) - {"version", "parts"}
        if unknown:
            raise _error(f"unknown keys {sorted(unknown)}")
        parts = data["parts"]
        if not isinstance(parts, (list, tuple)):
            raise _error(f"'parts' must be a list of lists of factor dicts, got {parts!r}")
        return cls(tuple(tuple(_factor_from_dict(f) for f in _as_list(part)) for part in parts))

    # --- views -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dict (all defaults written out)."""
        return {"version": SPEC_VERSION, "parts": [[f.to_dict() for f in part] for part in self.parts]}

    def __str__(self) -> str:
        return "+".join("*".join(_factor_string(f, len(part) > 1) for f in part) for part in self.parts)

    @property
    def dim(self) -> int:
        total = 0
        for part in self.parts:
            d = 1
            for f in part:
                d *= f.dim
            total += d
        return total

    @property
    def attributes(self) -> dict[str, str]:
        """Attribute name -> group name (``t1``, ``so2``, ``so3``...)."""
        return {f.attribute: f.group for part in self.parts for f in part}

    def build(self) -> Representation:
        """The `Representation` this spec describes."""
        reps = []
        for part in self.parts:
            rep = part[0].build()
            for f in part[1:]:
                rep = TensorProduct(rep, f.build())
            reps.append(rep)
        return reps[0] if len(reps) == 1 else DirectSum(reps)


def _as_list(part: object) -> list:
    if isinstance(part, Mapping):
        return [part]
    if not isinstance(part, (list, tuple)):
        raise _error(f"each part must be a list of factor dicts, got {part!r}")
    return list(part)


def _factor_from_dict(data: object) -> Factor:
    if not isinstance(data, Mapping) or "group" not in data:
        raise _error(f"each factor must be a dict with a 'group' key, got {data!r}")
    data = dict(data)
    group = data.pop("group")
    match = _TRANSLATION.match(group) if isinstance(group, str) else None
    if match:
        allowed = {"attribute", "num_frequencies", "base", "layout", "seed", "learnable"}
        _check_keys(data, allowed, group)
        if "num_frequencies" not in data:
            raise _error(f"{group}: missing 'num_frequencies'")
        return TranslationFactor(int(match.group(1)), **data)
    if group == "se3":
        _check_keys(data, {"attribute", "irreps", "translation_scale", "learnable_scale"}, group)
        irreps = data.pop("irreps", None)
        if not isinstance(irreps, (list, tuple)):
            raise _error(f"se3: 'irreps' must be a list of [multiplicity, label] pairs, got {irreps!r}")
        return SE3Factor(tuple(tuple(i) if isinstance(i, (list, tuple)) else i for i in irreps), **data)
    if group in _LIST_FACTORS:
        _check_keys(data, {"attribute", "irreps"}, group)
        irreps = data.get("irreps")
        if not isinstance(irreps, (list, tuple)):
            raise _error(f"{group}: 'irreps' must be a list of [multiplicity, label] pairs, got {irreps!r}")
        cls = _LIST_FACTORS[group]
        return cls(
            tuple(tuple(i) if isinstance(i, (list, tuple)) else i for i in irreps), data.get("attribute", "")
        )
    raise _error(f"unknown group {group!r} (expected t1, t2, ..., so2, so3, s2 or se3)")


def _check_keys(data: Mapping, allowed: set[str], group: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise _error(f"{group}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def _factor_string(f: Factor, in_product: bool) -> str:
    default = "position" if isinstance(f, TranslationFactor) else DEFAULT_ATTRIBUTES[f.group]
    group = f.group + f.options() if isinstance(f, SE3Factor) else f.group
    head = group if f.attribute == default else f"{group}@{f.attribute}"
    body = f.body() if isinstance(f, TranslationFactor) else f.body(in_product)
    return f"{head}:{body}"


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _error(f"unbalanced ')' in {text!r}")
        elif ch == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
    if depth:
        raise _error(f"unbalanced '(' in {text!r}")
    out.append(text[start:])
    return out


def _parse_string(text: str) -> tuple[tuple[Factor, ...], ...]:
    source = text
    text = "".join(text.split())
    if not text:
        raise _error("empty spec")
    parts: list[list[Factor]] = []
    for token in _split_top_level(text, "+"):
        if not token:
            raise _error(f"empty term in {source!r}")
        if ":" not in token:  # continues the irreps list of the last factor
            if not parts or isinstance(parts[-1][-1], TranslationFactor):
                raise _error(f"{token!r} in {source!r} has no group prefix (expected e.g. 'so3:{token}')")
            last = parts[-1][-1]
            item = _parse_item(token, last.group, source)
            parts[-1][-1] = dataclasses.replace(last, irreps=(*last.irreps, item))
            continue
        parts.append([_parse_factor(f, source) for f in _split_top_level(token, "*")])
    return tuple(tuple(p) for p in parts)


def _parse_item(token: str, group: str, source: str) -> tuple[int, int | str]:
    match = (_SE3_ITEM if group == "se3" else _ITEM).match(token)
    if not match:
        labels = "'h' or a non-negative integer" if group == "se3" else "non-negative integers"
        raise _error(
            f"bad {group} irrep {token!r} in {source!r}: expected '<multiplicity>x<label>' with "
            f"{labels}, e.g. '2x1'"
        )
    label = match.group(2)
    return int(match.group(1)), (label if label == HOMOGENEOUS else int(label))


def _parse_factor(token: str, source: str) -> Factor:
    if ":" not in token:
        raise _error(f"{token!r} in {source!r} has no group prefix (expected '<group>:<irreps>')")
    head, body = token.split(":", 1)
    group, _, attribute = head.partition("@")
    if "@" in head and not attribute:
        raise _error(f"empty attribute name in {token!r}")
    match = _TRANSLATION.match(group)
    if match:
        return _parse_translation(int(match.group(1)), body, attribute or "position", token)
    se3_head = _SE3_HEAD.match(group)
    if se3_head or group in _LIST_FACTORS:
        if body.startswith("(") and body.endswith(")"):
            body = body[1:-1]
        name = "se3" if se3_head else group
        items = tuple(_parse_item(item, name, source) for item in body.split("+"))
        if se3_head:
            return SE3Factor(items, attribute or "pose", **_se3_options(se3_head.group(1) or "", token))
        return _LIST_FACTORS[group](items, attribute)
    raise _error(f"unknown group {group!r} in {source!r} (expected t1, t2, ..., so2, so3, s2 or se3)")


def _parse_options(text: str, token: str, valued: dict, flags: dict, expected: str) -> dict:
    """Keyword arguments from ``"key=value,flag"``: ``valued`` maps a key to ``(kwarg, converter)``,
    ``flags`` a bare word to the kwarg it sets to True; anything else names the option and ``expected``."""
    kwargs: dict = {}
    for option in filter(None, text.split(",")):
        key, eq, value = option.partition("=")
        try:
            if not eq and key in flags:
                kwargs[flags[key]] = True
            elif eq and key in valued:
                name, convert = valued[key]
                kwargs[name] = convert(value)
            else:
                raise KeyError(key)
        except (KeyError, ValueError):
            raise _error(f"bad option {option!r} in {token!r} (expected {expected})") from None
    return kwargs


def _se3_options(text: str, token: str) -> dict:
    return _parse_options(
        text, token, {"scale": ("translation_scale", float)}, {"learnable": "learnable_scale"},
        "scale=<float>, learnable",
    )  # fmt: skip


def _parse_translation(ndim: int, body: str, attribute: str, token: str) -> TranslationFactor:
    match = re.match(r"(\d+)(?:\((.*)\))?\Z", body)
    if not match:
        raise _error(f"bad translation factor {token!r}: expected 't<n>:<F>' or 't<n>:<F>(options)'")
    kwargs = _parse_options(
        match.group(2) or "",
        token,
        {"base": ("base", float), "seed": ("seed", int), "layout": ("layout", str)},
        {"learnable": "learnable"},
        "base=<float>, layout=axial|mixed, seed=<int>, learnable",
    )
    return TranslationFactor(ndim, int(match.group(1)), attribute, **kwargs)
