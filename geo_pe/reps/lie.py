"""Representations of translations, SO(2) and SO(3) as direct sums of their real irreps.

Each reads one named token attribute (``attribute``), so several can be combined into a
representation of a product group with `DirectSum` or `TensorProduct`. Block matrices are computed in
float32 (float64 for float64 input) with autocast disabled, whatever the model's dtype.

=================  ====================================  =========================================
class              irreps (block, Schur type)            element
=================  ====================================  =========================================
`TranslationRep`   R(w_k . x), 2x2, complex, k < F       ``(...)`` for R^1, ``(..., n)`` for R^n
`SO2Rep`           m = 0: [1], real; m > 0: R(m theta)   angle ``(...)``
`SO3Rep`           Wigner-D of degree l, real            quaternion ``(..., 4)``
`SphereRep`        zonal Y_l(x) e_0^T (not a group rep)  direction ``(..., 3)``
`SE3Rep`           [[R, s t], [0, 1]] 4x4, and D_l(R)    pose ``(..., 7)``: quaternion, translation
=================  ====================================  =========================================

with ``R(t) = [[cos t, -sin t], [sin t, cos t]]``.

`SphereRep` serves tokens that carry a direction rather than a rotation. A direction fixes a rotation
only up to a spin about itself, so its blocks keep the spin-invariant (zonal, m = 0) column only:
``M_l(x) = Y_l(x) e_0^T`` with unit-norm harmonics. They satisfy ``M_l(R x) = D_l(R) M_l(x)``, the
property the positional encodings rely on, and ``M_l(x)^T M_l(y) = P_l(x . y) e_0 e_0^T`` (Legendre
addition theorem): rotary logits become a Legendre kernel of the angle between the directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from geo_pe import quaternion
from geo_pe._checks import (
    check_floating,
    check_tensor,
    check_trailing_shape,
    compute_dtype,
    full_precision,
    value_checks_enabled,
)
from geo_pe.reps.base import TRIVIAL, Irrep, Representation, element_of
from geo_pe.reps.groups import SE3, SO2, SO3, Group, ProductGroup, Sphere, Translations
from geo_pe.reps.wigner import _R1_from_matrix, _wigner_from_R1, spherical_harmonics, wigner_D_all

__all__ = [
    "HOMOGENEOUS",
    "AttributeRep",
    "SE3Rep",
    "SO2Rep",
    "SO3Rep",
    "SphereRep",
    "TranslationRep",
    "Trivial",
    "default_frequencies",
    "rotation_blocks",
    "share_rotation",
]

TRANSLATION_LAYOUTS = ("axial", "mixed")
HOMOGENEOUS = "h"  # the label of SE(3)'s 4x4 homogeneous block in irreps lists and specs


ROTATION_J = (
    (0.0, -1.0),
    (1.0, 0.0),
)  # commutes with every R(t): the complex structure of 2x2 rotation blocks


_CONSTANTS: dict = {}


def device_constant(values, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.tensor(values)`` on ``device``, made once per (values, dtype, device): building it per call
    would copy it from the host in every forward, a host sync on a GPU. ``values`` must be hashable."""
    key = (values, dtype, torch.device(device))
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return _CONSTANTS[key]


def _rotation_J() -> torch.Tensor:
    return torch.tensor(ROTATION_J, dtype=torch.float64, device="cpu")


def rotation_blocks(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``[[cos, -sin], [sin, cos]]`` as a ``(..., 2, 2)`` tensor."""
    return torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)


def default_frequencies(
    ndim: int, num_frequencies: int, base: float = 10000.0, layout: str = "axial", seed: int = 0
) -> torch.Tensor:
    """Frequency vectors ``(num_frequencies, ndim)`` of a sinusoidal (RoPE-style) encoding, float64.

    ``axial``: the frequencies are split evenly over the axes (axis-major); on each axis they are
    geometric, ``w_k = base ** (-k / n_axis)``, k = 0..n_axis-1, which for ndim = 1 is exactly RoPE's
    ``base ** (-2k / head_dim)``. ``mixed``: the same geometric magnitudes over all F frequencies, with
    directions drawn uniformly on the sphere from ``seed`` (as in RoPE-Mixed, Heo et al. 2024).
    """
    if layout not in TRANSLATION_LAYOUTS:
        raise ValueError(f"layout: expected one of {TRANSLATION_LAYOUTS}, got {layout!r}")
    if not (isinstance(base, (int, float)) and base > 1.0):
        raise ValueError(f"base: expected a number > 1, got {base!r}")
    if layout == "axial":
        if num_frequencies % ndim:
            raise ValueError(
                f"num_frequencies: the axial layout splits frequencies evenly over the {ndim} axes, "
                f"so expected a multiple of {ndim}, got {num_frequencies}"
            )
        per_axis = num_frequencies // ndim
        magnitudes = base ** (-torch.arange(per_axis, dtype=torch.float64, device="cpu") / per_axis)
        freqs = torch.zeros(num_frequencies, ndim, dtype=torch.float64, device="cpu")
        for axis in range(ndim):
            freqs[axis * per_axis : (axis + 1) * per_axis, axis] = magnitudes
        return freqs
    magnitudes = base ** (-torch.arange(num_frequencies, dtype=torch.float64) / num_frequencies)
    directions = torch.randn(
        num_frequencies, ndim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    directions = directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
    return magnitudes[:, None] * directions


class AttributeRep(Representation):
    """A representation of one Lie group, read from one named token attribute; blocks are its irreps."""

    def __init__(self, group: Group, attribute: str):
        super().__init__()
        self._group, self.attribute = group, attribute
        self.frame: str | None = None  # set by `share_rotation`: attributes of one frame share irreps

    @property
    def group(self) -> Group:
        return self._group

    @property
    def attribute_groups(self) -> dict[str, Group]:
        return {self.attribute: self._group}

    @property
    def layout(self):
        return tuple((mult, irrep.dim) for mult, irrep in self.irreps)

    def element(self, g, name: str = "g") -> torch.Tensor:
        """This representation's group element in ``g`` (a tensor, or a dict of attributes), validated."""
        return element_of(g, self.attribute, self._group, name)

    @property
    def irrep_group(self) -> str:
        """Group name of its irreps, with the attribute (or its shared frame, see `share_rotation`):
        irreps of attributes turned independently never match."""
        group = self._group.acting_group.name
        return f"{group}@{self.frame or self.attribute}"


def share_rotation(module: nn.Module, attributes: Sequence[str], frame: str | None = None) -> None:
    """Declare that one global rotation turns every attribute in ``attributes`` (for example a particle's
    position and velocity directions, or an orientation and a direction): the SO(3) irreps of equal
    degree on them become one and the same irrep, so Schur's commutant mixes their channels (k copies of
    degree l in all give k^2 maps instead of the sum of the squares per attribute). Acts in place on every
    `AttributeRep` inside ``module`` (a representation, a PE module or a model). Only attributes acted on
    by SO(3) (``so3`` orientations, ``s2`` directions) can share a rotation."""
    names = list(attributes)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"attributes: expected two or more distinct attribute names, got {names}")
    frame = frame or "+".join(names)
    found = set()
    for rep in module.modules():
        if isinstance(rep, AttributeRep) and rep.attribute in names:
            if not isinstance(rep.group.acting_group, SO3):
                raise ValueError(
                    f"attributes: {rep.attribute!r} is a {rep.group.name} attribute; only so3 and s2 "
                    "attributes share a rotation"
                )
            rep.frame = frame
            found.add(rep.attribute)
    missing = sorted(set(names) - found)
    if missing:
        raise ValueError(f"attributes: {missing} are not read by any encoding in the module")


class TranslationRep(AttributeRep):
    """Sinusoidal representation of R^n: rho(x) = (+)_k R(w_k . x), dim 2F.

    Args:
        ndim: dimension n of the translations.
        num_frequencies: F, the number of 2x2 blocks.
        base, layout, seed: default frequencies, see `default_frequencies`.
        frequencies: explicit ``(F, ndim)`` frequency vectors instead of the default.
        learnable: make the frequencies an ``nn.Parameter`` (``learned_frequencies``, float32).
        attribute: the token attribute it reads.

    Fixed frequencies are float64 constants, not buffers: they turn into a tensor of the compute dtype
    in `angles`, so float64 positions get float64 frequencies, ``model.to(torch.bfloat16)`` cannot round
    them, and nothing needs rebuilding after meta-device initialisation or ``from_pretrained``.
    With ndim = 1 and the defaults, `act` is RoPE's rotation on interleaved pairs (2k, 2k+1).
    """

    def __init__(
        self,
        ndim: int = 1,
        num_frequencies: int = 32,
        *,
        base: float = 10000.0,
        layout: str = "axial",
        seed: int = 0,
        frequencies: torch.Tensor | None = None,
        learnable: bool = False,
        attribute: str = "position",
    ):
        super().__init__(Translations(ndim), attribute)
        if isinstance(num_frequencies, bool) or not isinstance(num_frequencies, int) or num_frequencies < 1:
            raise ValueError(f"num_frequencies: expected a positive integer, got {num_frequencies!r}")
        self.ndim, self.num_frequencies = ndim, num_frequencies
        self.base, self.freq_layout, self.seed = float(base), layout, seed
        self.learnable = learnable
        if frequencies is not None:
            values = torch.as_tensor(frequencies, dtype=torch.float64, device="cpu")
            if values.dim() == 1 and ndim == 1:
                values = values[:, None]
            if tuple(values.shape) != (num_frequencies, ndim):
                raise ValueError(
                    f"frequencies: expected shape ({num_frequencies}, {ndim}), got {tuple(values.shape)}"
                )
        else:
            values = default_frequencies(ndim, num_frequencies, base, layout, seed)
        self._values = tuple(tuple(float(v) for v in row) for row in values.tolist())
        if learnable:
            self.learned_frequencies = nn.Parameter(torch.tensor(self._values, dtype=torch.float32))

    @property
    def frequencies(self) -> torch.Tensor:
        """``(F, ndim)``: the learned parameter, or the fixed frequencies in float64."""
        if self.learnable:
            return self.learned_frequencies
        return torch.tensor(self._values, dtype=torch.float64, device="cpu")

    def reset_parameters(self) -> None:
        """Re-initialise learned frequencies to their initial values (fixed ones are constants)."""
        if self.learnable:
            with torch.no_grad():
                self.learned_frequencies.copy_(torch.tensor(self._values, dtype=torch.float32, device="cpu"))

    @property
    def irreps(self):
        """One complex-type irrep per frequency, labelled by its frequency vector (rounded to 12 digits),
        so that two representations share an irrep exactly when they share a frequency."""
        values = self.frequencies.detach().double().tolist()
        return tuple(
            (1, Irrep(self.irrep_group, tuple(round(v, 12) for v in w), 2, "complex")) for w in values
        )

    @property
    def layout(self):
        return ((1, 2),) * self.num_frequencies

    def complex_structures(self):
        return [_rotation_J() for _ in range(self.num_frequencies)]

    def angles(self, g, name: str = "g") -> torch.Tensor:
        """The angles w_k . x, ``(*batch, F)``, in float32 (float64 for float64 positions)."""
        x = self.element(g, name)
        dtype = compute_dtype(x)
        with full_precision(x):
            if self.learnable:
                w = self.learned_frequencies.to(dtype)
            else:
                w = device_constant(self._values, dtype, x.device)
            x = x.to(dtype)
            if self.ndim == 1:
                return x[..., None] * w[:, 0]
            return (x[..., None, :] * w).sum(-1)  # elementwise, so autocast never lowers it

    def blocks(self, g):
        theta = self.angles(g)
        return list(rotation_blocks(torch.cos(theta), torch.sin(theta)).unbind(-3))

    def extra_repr(self) -> str:
        return (
            f"ndim={self.ndim}, num_frequencies={self.num_frequencies}, base={self.base}, "
            f"layout={self.freq_layout!r}, learnable={self.learnable}, attribute={self.attribute!r}"
        )


def _check_irreps(irreps: Sequence, what: str) -> tuple[tuple[int, int], ...]:
    """Validate ``[(multiplicity, label), ...]`` with non-negative integer labels."""
    out = []
    if isinstance(irreps, (str, bytes)) or not isinstance(irreps, Sequence) or not irreps:
        raise ValueError(f"irreps: expected a non-empty list of (multiplicity, {what}) pairs, got {irreps!r}")
    for item in irreps:
        if not (isinstance(item, Sequence) and len(item) == 2):
            raise ValueError(f"irreps: expected (multiplicity, {what}) pairs, got {item!r}")
        mult, label = item
        for value, name in ((mult, "multiplicity"), (label, what)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"irreps: {name} must be an integer, got {value!r} in {item!r}")
        if mult < 1 or label < 0:
            raise ValueError(f"irreps: expected multiplicity >= 1 and {what} >= 0, got {item!r}")
        out.append((int(mult), int(label)))
    return tuple(out)


class _IrrepListRep(AttributeRep):
    """(+) of the irreps ``[(multiplicity, label), ...]`` of one group."""

    label_name = "label"

    def __init__(self, irreps: Sequence[tuple[int, int]], group: Group, attribute: str):
        super().__init__(group, attribute)
        self._irreps_spec = _check_irreps(irreps, self.label_name)

    def _irrep(self, label: int) -> Irrep:
        raise NotImplementedError

    @property
    def irreps(self):
        return tuple((mult, self._irrep(label)) for mult, label in self._irreps_spec)

    def extra_repr(self) -> str:
        return f"irreps={list(self._irreps_spec)}, attribute={self.attribute!r}"


class SO2Rep(_IrrepListRep):
    """(+) of SO(2) irreps ``[(multiplicity, m), ...]``: m = 0 is the trivial 1x1 block, m > 0 is R(m theta).

    Elements are angles; `blocks_from_vectors` reads unit 2-vectors (cos theta, sin theta) directly.
    """

    label_name = "frequency m"

    def __init__(self, irreps: Sequence[tuple[int, int]], *, attribute: str = "angle"):
        super().__init__(irreps, SO2(), attribute)

    def _irrep(self, m: int) -> Irrep:
        return TRIVIAL if m == 0 else Irrep(self.irrep_group, m, 2, "complex")

    def complex_structures(self):
        return [None if m == 0 else _rotation_J() for _, m in self._irreps_spec]

    @property
    def frequencies(self) -> tuple[int, ...]:
        return tuple(m for _, m in self._irreps_spec)

    def blocks(self, g):
        theta = self.element(g)
        with full_precision(theta):
            theta = theta.to(compute_dtype(theta))
            return [self._block(m, torch.cos(m * theta), torch.sin(m * theta)) for m in self.frequencies]

    def blocks_from_vectors(self, v: torch.Tensor) -> list[torch.Tensor]:
        """`blocks` of the rotations taking (1, 0) to the non-zero 2-vectors ``v`` ``(..., 2)``.

        cos(m theta) and sin(m theta) come from (x + iy)^m / |v|^m, with no angle in between.
        """
        v = check_tensor(v, "v")
        check_trailing_shape(v, (2,), "v", "2-vectors")
        check_floating(v, "v")
        with full_precision(v):
            v = v.to(compute_dtype(v))
            norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
            if value_checks_enabled() and bool((~torch.isfinite(norm) | (norm == 0)).any()):
                raise ValueError("v: expected finite non-zero 2-vectors")
            c1, s1 = (v / norm).unbind(-1)
            powers = [(torch.ones_like(c1), torch.zeros_like(c1))]
            for _ in range(max(self.frequencies)):
                c, s = powers[-1]
                powers.append((c * c1 - s * s1, s * c1 + c * s1))
            return [self._block(m, *powers[m]) for m in self.frequencies]

    @staticmethod
    def _block(m: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(cos)[..., None, None] if m == 0 else rotation_blocks(cos, sin)


class SO3Rep(_IrrepListRep):
    """(+) of SO(3) irreps ``[(multiplicity, l), ...]``: Wigner-D matrices of degree l, dim 2l+1.

    Elements are quaternions (normalised on input); `blocks_from_matrix` reads rotation matrices.
    All degrees come from one Wigner recursion per call.
    """

    label_name = "degree l"

    def __init__(self, irreps: Sequence[tuple[int, int]], *, attribute: str = "orientation"):
        super().__init__(irreps, SO3(), attribute)

    def _irrep(self, l: int) -> Irrep:
        return TRIVIAL if l == 0 else Irrep(self.irrep_group, l, 2 * l + 1, "real")

    def complex_structures(self):
        return [None for _ in self._irreps_spec]

    @property
    def degrees(self) -> tuple[int, ...]:
        return tuple(l for _, l in self._irreps_spec)

    def blocks(self, g):
        q = self.element(g)
        by_degree = wigner_D_all(q, max(self.degrees))
        return [by_degree[l] for l in self.degrees]

    def blocks_from_matrix(self, R: torch.Tensor) -> list[torch.Tensor]:
        """`blocks` of rotation matrices ``(..., 3, 3)``."""
        R = check_tensor(R, "R")
        check_trailing_shape(R, (3, 3), "R", "rotation matrices")
        check_floating(R, "R")
        with full_precision(R):
            by_degree = _wigner_from_R1(_R1_from_matrix(R.to(compute_dtype(R))), max(self.degrees))
        return [by_degree[l] for l in self.degrees]


class SphereRep(_IrrepListRep):
    """Directions on S^2 through zonal harmonics, degrees ``[(multiplicity, l), ...]`` (module docstring).

    Its channels transform under SO(3) by `acting_rep` (an `SO3Rep` of the same irreps); it is not a
    representation of the sphere (which is not a group), so `matrices` are rank one.
    """

    label_name = "degree l"

    def __init__(self, irreps: Sequence[tuple[int, int]], *, attribute: str = "direction"):
        super().__init__(irreps, Sphere(), attribute)
        self._acting = SO3Rep(irreps, attribute=attribute)

    def _irrep(self, l: int) -> Irrep:
        return TRIVIAL if l == 0 else Irrep(self.irrep_group, l, 2 * l + 1, "real")

    @property
    def acting_rep(self) -> Representation:
        return self._acting

    def complex_structures(self):
        return [None for _ in self._irreps_spec]

    @property
    def degrees(self) -> tuple[int, ...]:
        return tuple(l for _, l in self._irreps_spec)

    def harmonics(self, g, name: str = "g") -> list[torch.Tensor]:
        """Unit-norm Y_l(x) ``(*batch, 2l+1)`` for each entry, in float32/float64."""
        x = self.element(g, name)
        return [spherical_harmonics(x, l, normalization="norm") for l in self.degrees]

    def blocks(self, g):
        out = []
        for l, Y in zip(self.degrees, self.harmonics(g), strict=True):
            block = Y.new_zeros(*Y.shape, 2 * l + 1)
            block[..., l] = Y  # column m = 0
            out.append(block)
        return out


class Trivial(Representation):
    """``dim`` invariant channels, rho(g) = I, for the group of ``attribute_groups`` (a model's scalars)."""

    def __init__(self, dim: int, attribute_groups: dict[str, Group]):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        if not attribute_groups:
            raise ValueError("attribute_groups: expected the token attributes of the group it is trivial for")
        self._dim, self._attribute_groups = dim, dict(attribute_groups)
        groups = list(self._attribute_groups.values())
        self._group = groups[0] if len(groups) == 1 else ProductGroup(self._attribute_groups)

    @property
    def group(self) -> Group:
        return self._group

    @property
    def attribute_groups(self) -> dict[str, Group]:
        return dict(self._attribute_groups)

    @property
    def layout(self):
        return ((self._dim, 1),)

    @property
    def irreps(self):
        return ((self._dim, TRIVIAL),)

    def complex_structures(self):
        return [None]

    def blocks(self, g):
        if isinstance(g, dict) and len(self._attribute_groups) == 1:
            g = g[next(iter(self._attribute_groups))]
        g = self._group.validate(g)
        floats = [t for t in (g.values() if isinstance(g, dict) else [g]) if t.is_floating_point()]
        dtype = torch.float64 if any(t.dtype == torch.float64 for t in floats) else torch.float32
        return [torch.ones(*self._group.batch_shape(g), 1, 1, dtype=dtype)]


class SE3Rep(AttributeRep):
    """Rigid poses: (+) of ``[(multiplicity, label), ...]`` with label ``"h"`` for the 4x4 homogeneous
    block ``[[R, s t], [0, 1]]`` or a degree l for the Wigner-D of the rotation part.

    The homogeneous block is a representation (rho(a b) = rho(a) rho(b)) but not an orthogonal one:
    encodings that need rho^-1 read `inverse_blocks` (``[[R^T, -s R^T t], [0, 1]]``); `orthogonal` says
    whether any block needs that. Its commutant is the scalars, one map per pair of copies, as for a
    real irrep (a matrix commuting with every translation is ``[[a I, 0], [0, a]]``).

    ``translation_scale`` s divides the coordinate unit, as GTA scales camera translations (Miyato et
    al. 2024): with |s t| of order one the homogeneous entries, and so the condition number of rho(g)
    (about 1 + |s t|^2 for large |s t|), stay bounded. ``learnable_scale`` makes log s a parameter.
    """

    def __init__(
        self,
        irreps: Sequence[tuple[int, int | str]],
        *,
        attribute: str = "pose",
        translation_scale: float = 1.0,
        learnable_scale: bool = False,
    ):
        super().__init__(SE3(), attribute)
        items = []
        for item in irreps:
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise ValueError(f"irreps: expected (multiplicity, 'h' or degree l) pairs, got {item!r}")
            mult, label = item
            valid_label = label == HOMOGENEOUS or (
                isinstance(label, int) and not isinstance(label, bool) and label >= 0
            )
            if isinstance(mult, bool) or not isinstance(mult, int) or mult < 1 or not valid_label:
                raise ValueError(f"irreps: expected (multiplicity >= 1, 'h' or degree l >= 0), got {item!r}")
            items.append((mult, label))
        if not items:
            raise ValueError("irreps: expected a non-empty list of (multiplicity, 'h' or degree l) pairs")
        if not (isinstance(translation_scale, (int, float)) and translation_scale > 0):
            raise ValueError(f"translation_scale: expected a positive number, got {translation_scale!r}")
        self._irreps_spec = tuple(items)
        log_scale = torch.tensor(float(np.log(translation_scale)), dtype=torch.float64)
        if learnable_scale:
            self.log_scale = nn.Parameter(log_scale.float())
        else:
            self.register_buffer("log_scale", log_scale.float(), persistent=False)
        self._scale_value, self.learnable_scale = float(translation_scale), learnable_scale

    def reset_parameters(self) -> None:
        """Rebuild the fixed scale (a non-persistent buffer) after meta-device construction."""
        if not self.learnable_scale:
            value = torch.tensor(float(np.log(self._scale_value)), dtype=torch.float32, device="cpu")
            self.register_buffer("log_scale", value.to(self.log_scale.device), persistent=False)

    def _irrep(self, label) -> Irrep:
        if label == HOMOGENEOUS:
            return Irrep(self.irrep_group, HOMOGENEOUS, 4, "real")
        return TRIVIAL if label == 0 else Irrep(self.irrep_group, label, 2 * label + 1, "real")

    @property
    def irreps(self):
        return tuple((mult, self._irrep(label)) for mult, label in self._irreps_spec)

    def complex_structures(self):
        if not self.orthogonal:  # the homogeneous block is not irreducible: no Schur shortcut
            raise NotImplementedError(
                "SE3Rep: the homogeneous block 'h' is indecomposable but not irreducible (it contains D_1, "
                "the translation directions, and maps onto the trivial irrep), so its intertwiners are "
                "solved numerically"
            )
        return [None for _ in self._irreps_spec]

    @property
    def orthogonal(self) -> bool:
        return all(label != HOMOGENEOUS for _, label in self._irreps_spec)

    @property
    def degrees(self) -> tuple[int, ...]:
        return tuple(label for _, label in self._irreps_spec if label != HOMOGENEOUS)

    def scale(self, dtype: torch.dtype) -> torch.Tensor:
        return self.log_scale.to(dtype).exp()

    def _parts(self, g, name: str):
        pose = self.element(g, name)
        with full_precision(pose):
            pose = pose.to(compute_dtype(pose))
            q, t = pose[..., :4], pose[..., 4:]
            R = quaternion.to_matrix(q)
            wigner = wigner_D_all(q, max(self.degrees)) if self.degrees else {}
            return R, self.scale(pose.dtype) * t, wigner

    def _assemble(self, R, st, wigner, inverse: bool) -> list[torch.Tensor]:
        with full_precision(R):
            if inverse:  # (R, s t)^-1 = (R^T, -R^T s t)
                R = R.transpose(-1, -2)
                st = -(R @ st[..., None])[..., 0]
            top = torch.cat((R, st[..., None]), dim=-1)
            bottom = torch.zeros(*R.shape[:-2], 1, 4, dtype=R.dtype, device=R.device)
            bottom[..., 0, 3] = 1
            homogeneous = torch.cat((top, bottom), dim=-2)
            blocks = []
            for _, label in self._irreps_spec:
                if label == HOMOGENEOUS:
                    blocks.append(homogeneous)
                else:
                    D = wigner[label]
                    blocks.append(D.transpose(-1, -2) if inverse else D)
            return blocks

    def blocks(self, g):
        return self._assemble(*self._parts(g, "g"), inverse=False)

    def inverse_blocks(self, g, name: str = "g") -> list[torch.Tensor]:
        """The blocks of rho(g)^-1 = rho(g^-1), computed in closed form."""
        return self._assemble(*self._parts(g, name), inverse=True)

    def blocks_and_inverses(self, g, name: str = "g") -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """`blocks` and `inverse_blocks` from one pass over the poses."""
        parts = self._parts(g, name)
        return self._assemble(*parts, inverse=False), self._assemble(*parts, inverse=True)

    def extra_repr(self) -> str:
        scale = "learnable" if self.learnable_scale else f"{self._scale_value:g}"
        return f"irreps={list(self._irreps_spec)}, attribute={self.attribute!r}, translation_scale={scale}"
