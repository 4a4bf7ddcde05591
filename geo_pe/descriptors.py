"""Local descriptors of points in the plane that rotations and translations leave unchanged.

Around each point i, the other points j are binned by their distance into Gaussian shells centred at
r_1 .. r_K, and by their direction into circular harmonics of frequency m = 1 .. M::

    z_ikm = sum_{j != i} w_j exp(-(|x_j - x_i| - r_k)^2 / (2 s^2)) e^{i m phi_ij},

with phi_ij the angle of x_j - x_i and w_j a weight per point (an intensity, say). A rotation of the
plane by alpha multiplies every z_ikm by e^{i m alpha}, so the products z_ikm conj(z_ik'm), the power
spectrum of the neighbourhood (the planar counterpart of SOAP; Bartók, Kondor and Csányi 2013), are
invariant, as is the weighted count n_ik in each shell (m = 0). A point's descriptor is

    n_ik (K numbers), Re z_ikm conj(z_ik'm) for k <= k' (M K (K + 1) / 2), Im z_ikm conj(z_ik'm) for
    k < k' (M K (K - 1) / 2),

K + M K^2 numbers, each compressed as sign(f) log(1 + |f|) so that a crowded neighbourhood does not
swamp a sparse one. The imaginary parts tell a neighbourhood from its mirror image (a reflection
negates them): the descriptors are SO(2)-invariant, not O(2)-invariant. Where the points rotate about
the origin, a descriptor is also invariant under translations, since it reads only differences.

    >>> import math, torch
    >>> from geo_pe.descriptors import planar_power_spectrum
    >>> x = torch.randn(2, 10, 2, dtype=torch.float64)
    >>> turn = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64)
    >>> shells = (1.0, math.sqrt(2), 2.0)
    >>> a = planar_power_spectrum(x, shells, width=0.3, frequencies=2)
    >>> b = planar_power_spectrum(x @ turn.T + 3.0, shells, width=0.3, frequencies=2)
    >>> a.shape, bool(torch.allclose(a, b))
    (torch.Size([2, 10, 21]), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from geo_pe._checks import check_floating, check_tensor

__all__ = ["planar_power_spectrum", "planar_power_spectrum_size"]


def planar_power_spectrum_size(shells: int, frequencies: int) -> int:
    """The length of a point's descriptor: K + M K^2 for ``shells`` K and ``frequencies`` M."""
    return shells + frequencies * shells * shells


def planar_power_spectrum(
    points: torch.Tensor,
    shells: Sequence[float],
    width: float,
    frequencies: int,
    weights: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, T, K + M K^2)`` descriptors of the planar ``points`` (B, T, 2) (see the module docstring),
    in their dtype; ``shells`` the K shell radii, ``width`` the shells' Gaussian width s, ``frequencies``
    M, ``weights`` (B, T) each point's weight w_j (1 where None), ``mask`` (B, T) True on the valid
    points: padded points add nothing to the others' descriptors and get zeros (they may hold NaN)."""
    check_tensor(points, "points")
    check_floating(points, "points")
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(
            f"points: expected planar points of shape (batch, points, 2), got {tuple(points.shape)}"
        )
    B, T = points.shape[:2]
    radii = torch.as_tensor(list(shells), dtype=points.dtype, device=points.device)
    if radii.dim() != 1 or radii.numel() == 0 or not bool((radii >= 0).all()):
        raise ValueError(f"shells: expected one or more non-negative radii, got {list(shells)!r}")
    if not width > 0:
        raise ValueError(f"width: expected a positive shell width, got {width!r}")
    if isinstance(frequencies, bool) or not isinstance(frequencies, int) or frequencies < 0:
        raise ValueError(f"frequencies: expected a non-negative int, got {frequencies!r}")
    for name, value in (("weights", weights), ("mask", mask)):
        if value is not None and tuple(value.shape) != (B, T):
            raise ValueError(
                f"{name}: expected shape ({B}, {T}) (the batch and points), got {tuple(value.shape)}"
            )
    keep = torch.ones(B, T, dtype=torch.bool, device=points.device) if mask is None else mask.bool()
    x = torch.where(keep[..., None], points, torch.zeros((), dtype=points.dtype, device=points.device))
    w = (
        torch.ones(B, T, dtype=points.dtype, device=points.device)
        if weights is None
        else weights.to(points.dtype)
    )
    w = torch.where(keep, w, torch.zeros((), dtype=w.dtype, device=w.device))
    offset = x[:, None, :, :] - x[:, :, None, :]  # (B, T, T, 2): [b, i, j] = x_j - x_i
    distance = torch.linalg.vector_norm(offset, dim=-1)
    others = ~torch.eye(T, dtype=torch.bool, device=points.device)
    # exponents held below 80, as the distance biases' (float32's subnormal range is slow on CPUs)
    exponent = (((distance[..., None] - radii) / width) ** 2 / 2).clamp(max=80.0)
    binned = torch.exp(-exponent) * (others[..., None] * w[:, None, :, None])  # (B, T, T, K)
    parts = [binned.sum(2)]
    # e^{i phi_ij} as (cos, sin); coincident points have no direction and add nothing for m >= 1
    unit = offset / distance.clamp_min(torch.finfo(points.dtype).tiny)[..., None]
    unit = unit * (distance > 0)[..., None]
    cos_1, sin_1 = unit[..., 0], unit[..., 1]
    cos_m, sin_m = torch.ones_like(cos_1), torch.zeros_like(sin_1)
    upper = torch.triu_indices(len(radii), len(radii), device=points.device)
    strict = upper[0] < upper[1]
    for _ in range(frequencies):
        cos_m, sin_m = cos_m * cos_1 - sin_m * sin_1, sin_m * cos_1 + cos_m * sin_1  # angle addition
        re = torch.einsum("bijk,bij->bik", binned, cos_m)  # (B, T, K): Re z_ikm
        im = torch.einsum("bijk,bij->bik", binned, sin_m)
        re_a, im_a, re_b, im_b = re[..., upper[0]], im[..., upper[0]], re[..., upper[1]], im[..., upper[1]]
        parts.append(re_a * re_b + im_a * im_b)  # Re z_ik conj(z_ik')
        parts.append((im_a * re_b - re_a * im_b)[..., strict])  # Im z_ik conj(z_ik'), k < k'
    spectrum = torch.cat(parts, dim=-1)
    spectrum = torch.sign(spectrum) * torch.log1p(spectrum.abs())
    return spectrum * keep[..., None].to(spectrum.dtype)
