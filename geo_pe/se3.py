"""Rigid poses, elements of SE(3), as ``(..., 7)`` tensors: a unit quaternion (w, x, y, z), then a
translation (x, y, z).

A pose g = (q, t) maps a point x to R(q) x + t. Composition is "first b, then a":
``compose(a, b) = (q_a q_b, R(q_a) t_b + t_a)``, so ``to_homogeneous(compose(a, b)) ==
to_homogeneous(a) @ to_homogeneous(b)``, the 4x4 matrices [[R, t], [0, 1]]. Functions that read a pose
normalise its quaternion; a zero, NaN or infinite quaternion or a non-finite translation raises
`ValueError` naming the argument.

    >>> import torch
    >>> from geo_pe import se3
    >>> a, b = se3.random(5, generator=0), se3.random(5, generator=1)
    >>> T = se3.to_homogeneous(se3.compose(a, b))
    >>> bool(torch.allclose(T, se3.to_homogeneous(a) @ se3.to_homogeneous(b), atol=1e-5))
    True
"""

from __future__ import annotations

import torch

from geo_pe import quaternion
from geo_pe._checks import check_floating, check_tensor, check_trailing_shape, value_checks_enabled

__all__ = [
    "apply",
    "compose",
    "from_homogeneous",
    "from_rotation_translation",
    "identity",
    "inverse",
    "random",
    "to_homogeneous",
    "to_rotation_translation",
    "validate",
]


def validate(g: object, name: str = "g") -> torch.Tensor:
    """``g`` as a pose with a unit quaternion; `ValueError` naming ``name`` for a bad shape or value."""
    g = check_tensor(g, name)
    check_trailing_shape(g, (7,), name, "poses (quaternion w, x, y, z, then translation x, y, z)")
    check_floating(g, name)
    q, t = g[..., :4], g[..., 4:]
    try:
        q = quaternion.normalize(q)
    except ValueError as err:
        raise ValueError(str(err).replace("q:", f"{name} (quaternion part):", 1)) from None
    if value_checks_enabled() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: expected finite translations, got NaN or infinite entries")
    return torch.cat((q, t), dim=-1)


def identity(*shape: int, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """The identity pose, ``(*shape, 7)``."""
    q = quaternion.identity(*shape, dtype=dtype, device=device)
    return torch.cat((q, torch.zeros(*shape, 3, dtype=q.dtype, device=device)), dim=-1)


def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a b``: first b, then a (batched, broadcasting)."""
    qa, ta, qb, tb = a[..., :4], a[..., 4:], b[..., :4], b[..., 4:]
    return torch.cat((quaternion.multiply(qa, qb), quaternion.apply(qa, tb) + ta), dim=-1)


def inverse(g: torch.Tensor) -> torch.Tensor:
    """``g^-1 = (q*, -R^T t)``."""
    q_inv = quaternion.conjugate(g[..., :4])
    return torch.cat((q_inv, -quaternion.apply(q_inv, g[..., 4:])), dim=-1)


def apply(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``R x + t`` for points ``x`` ``(..., 3)``."""
    return quaternion.apply(g[..., :4], x) + g[..., 4:]


def random(
    *shape: int,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
    translation_scale: float = 1.0,
) -> torch.Tensor:
    """Poses with uniform rotations and normal translations of standard deviation
    ``translation_scale``, ``(*shape, 7)``."""
    gen = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    q = quaternion.random(*shape, generator=gen, dtype=dtype)
    t = translation_scale * torch.randn(*shape, 3, generator=gen, dtype=q.dtype)
    out = torch.cat((q, t), dim=-1)
    return out.to(device) if device is not None else out


def from_rotation_translation(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Poses from rotation matrices ``(..., 3, 3)`` and translations ``(..., 3)``."""
    check_trailing_shape(check_tensor(t, "t"), (3,), "t", "translations")
    q = quaternion.from_matrix(R)
    batch = torch.broadcast_shapes(q.shape[:-1], t.shape[:-1])
    return torch.cat((q.expand(*batch, 4), t.to(q.dtype).expand(*batch, 3)), dim=-1)


def to_rotation_translation(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R (..., 3, 3), t (..., 3))`` of poses ``g``."""
    g = validate(g, "g")
    return quaternion.to_matrix(g[..., :4]), g[..., 4:]


def from_homogeneous(T: torch.Tensor) -> torch.Tensor:
    """Poses from 4x4 homogeneous matrices [[R, t], [0, 0, 0, 1]] ``(..., 4, 4)``."""
    T = check_tensor(T, "T")
    check_trailing_shape(T, (4, 4), "T", "homogeneous matrices")
    if value_checks_enabled():
        bottom = T[..., 3, :]
        expected = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype, device=T.device)
        if not bool(torch.allclose(bottom, expected.expand_as(bottom), atol=1e-6)):
            raise ValueError("T: expected homogeneous matrices whose last row is (0, 0, 0, 1)")
    return from_rotation_translation(T[..., :3, :3], T[..., :3, 3])


def to_homogeneous(g: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The 4x4 matrices [[R, s t], [0, 1]] of poses ``g`` (``scale`` s = 1: the rigid motion itself)."""
    R, t = to_rotation_translation(g)
    top = torch.cat((R, (scale * t)[..., None]), dim=-1)
    bottom = torch.zeros(*R.shape[:-2], 1, 4, dtype=R.dtype, device=R.device)
    bottom[..., 0, 3] = 1
    return torch.cat((top, bottom), dim=-2)
