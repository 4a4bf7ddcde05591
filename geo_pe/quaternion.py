"""Unit quaternions as rotations: batched, differentiable, torch.

Convention (docs/design.md, "Conventions"):

* a quaternion is a tensor of shape ``(..., 4)`` in **(w, x, y, z)** order, w the scalar part;
* products are Hamilton products, ``multiply(p, q)`` is the rotation "first q, then p";
* ``to_matrix(q)`` is the active rotation ``v -> q v q*`` acting on column vectors, so
  ``to_matrix(multiply(p, q)) == to_matrix(p) @ to_matrix(q)``;
* q and -q are the same rotation; ``from_matrix`` returns the representative with w >= 0;
* functions that read a rotation from q accept non-unit quaternions and normalise them first; zero,
  NaN and infinite quaternions raise ``ValueError`` (see `geo_pe.set_input_validation`).

Example::

    >>> import torch
    >>> from geo_pe import quaternion
    >>> q = quaternion.random(5, generator=0)                          # (5, 4), uniform on SO(3)
    >>> R = quaternion.to_matrix(q)                                  # (5, 3, 3)
    >>> torch.allclose(quaternion.to_matrix(quaternion.from_matrix(R)), R, atol=1e-5)
    True
"""

from __future__ import annotations

import numpy as np
import torch

from geo_pe._checks import (
    check_finite,
    check_floating,
    check_tensor,
    check_trailing_shape,
    value_checks_enabled,
)

__all__ = [
    "apply",
    "conjugate",
    "from_axis_angle",
    "from_matrix",
    "from_numpy_quaternion",
    "identity",
    "inverse",
    "multiply",
    "normalize",
    "random",
    "rotation_angle",
    "standardize",
    "to_axis_angle",
    "to_matrix",
    "to_numpy_quaternion",
]


def _check_quaternion(q: object, name: str) -> torch.Tensor:
    q = check_tensor(q, name)
    check_trailing_shape(q, (4,), name, "quaternions in (w, x, y, z) order")
    check_floating(q, name)
    return q


def _check_norm(norm: torch.Tensor, name: str) -> None:
    """Reject zero, NaN and infinite quaternions (`norm` is their Euclidean norm)."""
    if value_checks_enabled():
        bad = ~torch.isfinite(norm) | (norm <= torch.finfo(norm.dtype).tiny ** 0.5)
        if bool(bad.any()):
            raise ValueError(
                f"{name}: expected non-zero finite quaternions, got {int(bad.sum())} of {norm.numel()} "
                "with zero, NaN or infinite norm"
            )


def identity(*shape: int, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """The identity rotation (1, 0, 0, 0), shape ``(*shape, 4)``."""
    q = torch.zeros(*shape, 4, dtype=dtype, device=device)
    q[..., 0] = 1
    return q


def multiply(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``p q`` of ``(..., 4)`` tensors (broadcasting over the leading dims)."""
    p = _check_quaternion(p, "p")
    q = _check_quaternion(q, "q")
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack(
        (
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ),
        dim=-1,
    )


def conjugate(q: torch.Tensor) -> torch.Tensor:
    """(w, -x, -y, -z); the inverse rotation of a unit quaternion."""
    q = _check_quaternion(q, "q")
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def normalize(q: torch.Tensor) -> torch.Tensor:
    """Scale to unit norm. Raises ``ValueError`` for zero, NaN or infinite quaternions."""
    q = _check_quaternion(q, "q")
    norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    _check_norm(norm, "q")
    return q / norm


def inverse(q: torch.Tensor) -> torch.Tensor:
    """Multiplicative inverse ``q* / |q|^2`` (equal to `conjugate` for unit quaternions)."""
    q = _check_quaternion(q, "q")
    norm_sq = (q * q).sum(-1, keepdim=True)
    _check_norm(norm_sq.sqrt(), "q")
    return conjugate(q) / norm_sq


def standardize(q: torch.Tensor) -> torch.Tensor:
    """Pick the representative with w >= 0 of each pair {q, -q} (unit norm is not enforced)."""
    q = _check_quaternion(q, "q")
    return torch.where(q[..., :1] < 0, -q, q)


def _quadratic_forms() -> torch.Tensor:
    """``C`` (16, 9) with ``vec(R) |q|^2 = vec(q q^T) @ C``: each entry of R is a quadratic form in q."""
    C = torch.zeros(4, 4, 3, 3, dtype=torch.float64)
    w, x, y, z = range(4)

    def put(i, j, terms):
        for sign, a, b in terms:
            C[a, b, i, j] += sign

    put(0, 0, [(1, w, w), (1, x, x), (-1, y, y), (-1, z, z)])
    put(1, 1, [(1, w, w), (-1, x, x), (1, y, y), (-1, z, z)])
    put(2, 2, [(1, w, w), (-1, x, x), (-1, y, y), (1, z, z)])
    put(0, 1, [(2, x, y), (-2, w, z)])
    put(1, 0, [(2, x, y), (2, w, z)])
    put(0, 2, [(2, x, z), (2, w, y)])
    put(2, 0, [(2, x, z), (-2, w, y)])
    put(1, 2, [(2, y, z), (-2, w, x)])
    put(2, 1, [(2, y, z), (2, w, x)])
    return C.reshape(16, 9)


_QUADRATIC_FORMS = _quadratic_forms()


def _rotation_matrix(q: torch.Tensor, order: tuple[int, int, int] = (0, 1, 2)) -> torch.Tensor:
    """Rotation matrices of (checked) quaternions with rows and columns in ``order``; one small GEMM."""
    idx = [3 * i + j for i in order for j in order]
    C = _QUADRATIC_FORMS[:, idx].to(dtype=q.dtype, device=q.device)
    outer = (q[..., :, None] * q[..., None, :]).reshape(*q.shape[:-1], 16)
    norm_sq = (q * q).sum(-1, keepdim=True)
    _check_norm(norm_sq.sqrt(), "q")
    device_type = q.device.type if q.device.type in ("cpu", "cuda", "xpu", "mps") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        return ((outer @ C) / norm_sq).unflatten(-1, (3, 3))


def to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` of quaternions ``(..., 4)``; non-unit q are normalised.

    Each entry is a quadratic form in q divided by ``|q|^2`` (e.g. ``R_00 = w^2 + x^2 - y^2 - z^2``),
    so the map is smooth everywhere except 0 and exact in the dtype of q (autocast is disabled).
    """
    q = _check_quaternion(q, "q")
    return _rotation_matrix(q)


def from_matrix(R: torch.Tensor, *, check: bool = True, atol: float | None = None) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` with w >= 0 from rotation matrices ``(..., 3, 3)``.

    Shepperd's method (J. Guidance Control 1(3), 1978): of the four algebraically equivalent formulas
    the one whose pivot (1 + trace, or 1 + 2 R_ii - trace) is largest is used, so the divisor is at
    least 1/2 and the result is accurate for every rotation, 180 degrees included. All four candidates
    are computed with guarded divisors so that gradients stay finite.

    With ``check=True`` (default) matrices that are not rotations within ``atol`` (default: 1e-4 in
    float32, 1e-10 in float64) raise ``ValueError``.
    """
    R = check_tensor(R, "R")
    check_trailing_shape(R, (3, 3), "R", "rotation matrices")
    check_floating(R, "R")
    check_finite(R, "R", "rotation matrices")
    if check and value_checks_enabled():
        tol = atol if atol is not None else (1e-10 if R.dtype == torch.float64 else 1e-4)
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        orth = torch.linalg.matrix_norm(R.transpose(-1, -2) @ R - eye, ord="fro")
        det = torch.linalg.det(R)
        bad = (orth > tol * 10) | ((det - 1).abs() > tol * 10)
        if bool(bad.any()):
            raise ValueError(
                f"R: expected rotation matrices (orthogonal, det +1), got {int(bad.sum())} matrices off "
                f"by up to {float(orth.max()):.3g} in orthogonality"
            )
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2) from the diagonal.
    pivots = torch.stack(
        (1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22), dim=-1
    )
    # Row k of `candidates` is 4 * q_k * q: exact for whichever component q_k is the pivot.
    candidates = torch.stack(
        (
            torch.stack((pivots[..., 0], r21 - r12, r02 - r20, r10 - r01), dim=-1),
            torch.stack((r21 - r12, pivots[..., 1], r01 + r10, r02 + r20), dim=-1),
            torch.stack((r02 - r20, r01 + r10, pivots[..., 2], r12 + r21), dim=-1),
            torch.stack((r10 - r01, r02 + r20, r12 + r21, pivots[..., 3]), dim=-1),
        ),
        dim=-2,
    )
    # 2 |q_k| = sqrt(pivot); floor it so the unselected candidates never divide by ~0.
    root = pivots.clamp_min(0.1).sqrt()
    candidates = candidates / (2.0 * root[..., None])
    best = pivots.argmax(dim=-1, keepdim=True)
    q = candidates.gather(-2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return standardize(q)


def apply(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors ``v`` of shape ``(..., 3)`` by ``q`` ``(..., 4)`` (broadcasting)."""
    v = check_tensor(v, "v")
    check_trailing_shape(v, (3,), "v", "3-vectors")
    return (to_matrix(q) @ v.unsqueeze(-1)).squeeze(-1)


def from_axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Quaternion of the rotation by ``angle`` (radians, ``(...)``) about ``axis`` (``(..., 3)``)."""
    axis = check_tensor(axis, "axis")
    check_trailing_shape(axis, (3,), "axis", "rotation axes")
    angle = torch.as_tensor(angle, dtype=axis.dtype, device=axis.device)
    norm = torch.linalg.vector_norm(axis, dim=-1, keepdim=True)
    _check_norm(norm, "axis")
    half = angle[..., None] / 2
    return torch.cat((torch.cos(half), torch.sin(half) * axis / norm), dim=-1)


def rotation_angle(q: torch.Tensor) -> torch.Tensor:
    """Rotation angle in [0, pi] of each quaternion, shape ``(...)``."""
    q = _check_quaternion(q, "q")
    vec = torch.linalg.vector_norm(q[..., 1:], dim=-1)
    return 2 * torch.atan2(vec, q[..., 0].abs())


def to_axis_angle(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(axis (..., 3), angle (...))`` with angle in [0, pi]; the axis of the identity is (1, 0, 0)."""
    q = standardize(normalize(q))
    vec = q[..., 1:]
    norm = torch.linalg.vector_norm(vec, dim=-1, keepdim=True)
    default = torch.zeros_like(vec)
    default[..., 0] = 1
    axis = torch.where(norm > 0, vec / norm.clamp_min(torch.finfo(q.dtype).tiny), default)
    return axis, 2 * torch.atan2(norm[..., 0], q[..., 0])


def random(
    *shape: int,
    generator: torch.Generator | int | None = None,
    dtype: torch.dtype | None = None,
    device=None,
) -> torch.Tensor:
    """Unit quaternions ``(*shape, 4)`` drawn uniformly from SO(3) (Haar measure), w >= 0.

    A normalised 4-d standard Gaussian is uniform on S^3, which double-covers SO(3) uniformly.
    ``generator`` is a ``torch.Generator`` or an int seed.
    """
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    dtype = dtype or torch.get_default_dtype()
    gen_device = generator.device if generator is not None else "cpu"
    q = torch.randn(*shape, 4, generator=generator, dtype=dtype, device=gen_device)
    q = standardize(q / torch.linalg.vector_norm(q, dim=-1, keepdim=True))
    return q if device is None else q.to(device)


def to_numpy_quaternion(q: torch.Tensor) -> np.ndarray:
    """A numpy-quaternion array (dtype ``quaternion``) of shape ``q.shape[:-1]``; same (w, x, y, z) order."""
    import quaternion as npq  # numpy-quaternion

    q = _check_quaternion(q, "q")
    return npq.from_float_array(q.detach().cpu().double().numpy())


def from_numpy_quaternion(
    array: np.ndarray, *, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    """A ``(..., 4)`` tensor from a numpy-quaternion array of shape ``(...)``."""
    import quaternion as npq  # numpy-quaternion

    array = np.asarray(array)
    if array.dtype != npq.quaternion:
        raise ValueError(
            f"array: expected a numpy-quaternion array (dtype quaternion), got dtype {array.dtype}"
        )
    floats = npq.as_float_array(array)
    return torch.as_tensor(floats, dtype=dtype or torch.get_default_dtype(), device=device)
