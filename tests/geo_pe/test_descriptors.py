"""The planar power spectrum: a slow reference, invariance under rigid motions, the sign of the
imaginary parts under reflections, padding, and errors that name the argument."""

import cmath
import math

import pytest
import torch

from geo_pe.descriptors import planar_power_spectrum, planar_power_spectrum_size
from geo_pe.testing import assert_equivariant

SHELLS = (1.0, math.sqrt(2), 2.0, 3.0)
WIDTH, FREQUENCIES = 0.4, 3


def reference(points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One point at a time in Python complex numbers, from the definition."""
    B, T, _ = points.shape
    K = len(SHELLS)
    out = torch.zeros(B, T, planar_power_spectrum_size(K, FREQUENCIES), dtype=torch.float64)
    for b in range(B):
        for i in range(T):
            counts = [0.0] * K
            z = [[0j] * K for _ in range(FREQUENCIES + 1)]
            for j in range(T):
                if j == i:
                    continue
                dx, dy = (points[b, j] - points[b, i]).tolist()
                r, phi = math.hypot(dx, dy), math.atan2(dy, dx)
                for k, shell in enumerate(SHELLS):
                    g = float(weights[b, j]) * math.exp(-((r - shell) ** 2) / (2 * WIDTH**2))
                    counts[k] += g
                    for m in range(1, FREQUENCIES + 1):
                        z[m][k] += g * cmath.exp(1j * m * phi)
            row = list(counts)
            for m in range(1, FREQUENCIES + 1):
                pairs = [(k, q) for k in range(K) for q in range(k, K)]
                row += [(z[m][k] * z[m][q].conjugate()).real for k, q in pairs]
                row += [(z[m][k] * z[m][q].conjugate()).imag for k, q in pairs if k < q]
            out[b, i] = torch.tensor([math.copysign(math.log1p(abs(f)), f) for f in row], dtype=torch.float64)
    return out


def test_descriptors_match_the_definition():
    generator = torch.Generator().manual_seed(0)
    points = 2 * torch.randn(2, 7, 2, generator=generator, dtype=torch.float64)
    weights = torch.rand(2, 7, generator=generator, dtype=torch.float64)
    got = planar_power_spectrum(points, SHELLS, WIDTH, FREQUENCIES, weights)
    assert got.shape == (2, 7, len(SHELLS) + FREQUENCIES * len(SHELLS) ** 2)
    torch.testing.assert_close(got, reference(points, weights), rtol=1e-12, atol=1e-12)
    # m = 0 only: the weighted shell counts
    counts = planar_power_spectrum(points, SHELLS, WIDTH, 0, weights)
    torch.testing.assert_close(counts, got[..., : len(SHELLS)])
    # with no weights every neighbour weighs 1
    ones = planar_power_spectrum(points, SHELLS, WIDTH, FREQUENCIES)
    torch.testing.assert_close(ones, reference(points, torch.ones(2, 7, dtype=torch.float64)))


def _rigid_motion(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    angle = (2 * torch.rand((), generator=generator, dtype=torch.float64) - 1) * math.pi
    return angle, 4 * torch.randn(2, generator=generator, dtype=torch.float64)


def _move(g, points: torch.Tensor) -> torch.Tensor:
    angle, shift = g
    c, s = angle.cos().to(points.dtype), angle.sin().to(points.dtype)
    turned = torch.stack(
        (c * points[..., 0] - s * points[..., 1], s * points[..., 0] + c * points[..., 1]), -1
    )
    return turned + shift.to(points.dtype)


def test_descriptors_are_invariant_under_rotations_and_translations(dtype):
    points = 1.5 * torch.randn(3, 9, 2, dtype=dtype)
    weights = torch.rand(3, 9, dtype=dtype)

    def descriptors(x):
        return planar_power_spectrum(x, SHELLS, WIDTH, FREQUENCIES, weights)

    assert_equivariant(descriptors, points, _rigid_motion, act_in=_move)


def test_a_reflection_negates_only_the_imaginary_parts():
    """A mirror image has the same shell counts and real parts; its imaginary parts change sign (the
    descriptors tell a neighbourhood from its mirror image: SO(2), not O(2))."""
    points = 1.5 * torch.randn(2, 9, 2, dtype=torch.float64)
    mirrored = points * torch.tensor([1.0, -1.0], dtype=torch.float64)
    a = planar_power_spectrum(points, SHELLS, WIDTH, FREQUENCIES)
    b = planar_power_spectrum(mirrored, SHELLS, WIDTH, FREQUENCIES)
    K = len(SHELLS)
    real, imaginary = K * (K + 1) // 2, K * (K - 1) // 2
    sign = torch.cat([torch.ones(K)] + [torch.cat((torch.ones(real), -torch.ones(imaginary)))] * FREQUENCIES)
    torch.testing.assert_close(b, a * sign.to(a.dtype))
    assert (a[..., sign < 0]).abs().max() > 1e-3  # the imaginary parts are not all zero


def test_padded_points_add_nothing_and_get_zeros():
    points = 1.5 * torch.randn(2, 8, 2, dtype=torch.float64)
    weights = torch.rand(2, 8, dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    padded = points.clone()
    padded[1, 5:] = float("nan")
    got = planar_power_spectrum(padded, SHELLS, WIDTH, FREQUENCIES, weights, mask)
    alone = planar_power_spectrum(points[1:, :5], SHELLS, WIDTH, FREQUENCIES, weights[1:, :5])
    torch.testing.assert_close(got[1, :5], alone[0])
    assert bool((got[1, 5:] == 0).all()) and bool(torch.isfinite(got).all())
    torch.testing.assert_close(
        got[0], planar_power_spectrum(points[:1], SHELLS, WIDTH, FREQUENCIES, weights[:1])[0]
    )


def test_coincident_points_have_no_direction():
    """Two points at one place: no NaN, and the pair adds to the shell at 0 only."""
    points = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    got = planar_power_spectrum(points, (0.0, 1.0), 0.2, 2)
    assert bool(torch.isfinite(got).all())
    lone = planar_power_spectrum(points[:, 1:], (0.0, 1.0), 0.2, 2)  # the twin removed
    # the twin adds its weight to the shell at 0, and nothing to any circular harmonic
    torch.testing.assert_close(got[0, 0, 0], torch.log1p(1 + lone[0, 0, 0].expm1()))
    torch.testing.assert_close(got[0, 0, 2:], lone[0, 0, 2:])


def test_bad_arguments_are_named():
    x = torch.randn(2, 5, 2)
    with pytest.raises(ValueError, match=r"points: expected planar points of shape \(batch, points, 2\)"):
        planar_power_spectrum(torch.randn(2, 5, 3), SHELLS, WIDTH, FREQUENCIES)
    with pytest.raises(ValueError, match="points: expected a floating-point tensor"):
        planar_power_spectrum(torch.ones(2, 5, 2, dtype=torch.long), SHELLS, WIDTH, FREQUENCIES)
    with pytest.raises(ValueError, match="shells: expected one or more non-negative radii"):
        planar_power_spectrum(x, (), WIDTH, FREQUENCIES)
    with pytest.raises(ValueError, match="shells: expected one or more non-negative radii"):
        planar_power_spectrum(x, (1.0, -2.0), WIDTH, FREQUENCIES)
    with pytest.raises(ValueError, match="width: expected a positive shell width, got 0"):
        planar_power_spectrum(x, SHELLS, 0, FREQUENCIES)
    with pytest.raises(ValueError, match=r"frequencies: expected a non-negative int, got 1\.5"):
        planar_power_spectrum(x, SHELLS, WIDTH, 1.5)
    with pytest.raises(ValueError, match=r"weights: expected shape \(2, 5\)"):
        planar_power_spectrum(x, SHELLS, WIDTH, FREQUENCIES, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 5\)"):
        planar_power_spectrum(x, SHELLS, WIDTH, FREQUENCIES, mask=torch.ones(5, dtype=torch.bool))
