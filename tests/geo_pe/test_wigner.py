import math

import numpy as np
import pytest
import quaternion as npq
import torch

from geo_pe import quaternion as Q
from geo_pe.reps import L1_PERMUTATION, spherical_harmonics, wigner_D, wigner_D_all, wigner_D_from_matrix
from geo_pe.reps import wigner as W
from geo_pe.testing import assert_close_to_rounding, tolerance

DEGREES = list(range(17))


def close(a, b, dtype, scale=1.0):
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(a, b.to(a.dtype), atol=atol * scale, rtol=rtol * scale)


def fp32_scale(dtype, l):
    """fp32 rounding grows with the recursion depth; fp64 stays at the default tolerance."""
    return 1.0 if dtype == torch.float64 else max(1.0, l / 4)


@pytest.fixture(scope="module")
def rotations():
    return {
        d: (Q.random(8, generator=0, dtype=d), Q.random(8, generator=1, dtype=d))
        for d in (torch.float32, torch.float64)
    }


def test_homomorphism_orthogonality_and_evenness_up_to_degree_16(rotations, dtype):
    q1, q2 = rotations[dtype]
    D1, D2 = wigner_D_all(q1, 16), wigner_D_all(q2, 16)
    D12 = wigner_D_all(Q.multiply(q1, q2), 16)
    Dneg = wigner_D_all(-q1, 16)
    for l in DEGREES:
        eye = torch.eye(2 * l + 1, dtype=dtype).expand_as(D1[l])
        close(D12[l], D1[l] @ D2[l], dtype, fp32_scale(dtype, l))
        close(D1[l] @ D1[l].transpose(-1, -2), eye, dtype, fp32_scale(dtype, l))
        close(Dneg[l], D1[l], dtype)


def test_identity_and_inverse(rotations, dtype):
    q, _ = rotations[dtype]
    for l, (D, Dinv, Did) in enumerate(
        zip(
            wigner_D_all(q, 8),
            wigner_D_all(Q.conjugate(q), 8),
            wigner_D_all(Q.identity(dtype=dtype), 8),
            strict=True,
        )
    ):
        close(Did, torch.eye(2 * l + 1, dtype=dtype), dtype)
        close(Dinv, D.transpose(-1, -2), dtype, fp32_scale(dtype, l))


def test_character_formula(dtype):
    q = Q.random(64, generator=2, dtype=dtype)
    t = Q.rotation_angle(q)
    for l, D in enumerate(wigner_D_all(q, 16)):
        expected = torch.sin((2 * l + 1) * t / 2) / torch.sin(t / 2)
        close(D.diagonal(dim1=-2, dim2=-1).sum(-1), expected, dtype, fp32_scale(dtype, l) * 4)


def test_degree_one_is_the_permuted_rotation_matrix(dtype):
    q = Q.random(20, generator=3, dtype=dtype)
    perm = list(L1_PERMUTATION)
    R = Q.to_matrix(q)
    close(wigner_D(q, 1), R[..., perm, :][..., :, perm], dtype)
    oracle = torch.as_tensor(npq.as_rotation_matrix(Q.to_numpy_quaternion(q)))
    close(wigner_D(q, 1), oracle[..., perm, :][..., :, perm], dtype)


def test_from_matrix_agrees(dtype):
    q = Q.random(10, generator=4, dtype=dtype)
    R = Q.to_matrix(q)
    close(wigner_D_from_matrix(R, 5), wigner_D(q, 5), dtype)
    for a, b in zip(wigner_D_from_matrix(R, 3, all_degrees=True), wigner_D_all(q, 3), strict=True):
        close(a, b, dtype)


def test_spherical_harmonics_are_equivariant(dtype):
    q = Q.random(32, generator=5, dtype=dtype)
    x = torch.randn(32, 3, dtype=dtype, generator=torch.Generator().manual_seed(6))
    for l, D in enumerate(wigner_D_all(q, 10)):
        Y = spherical_harmonics(x, l)
        Y_rot = spherical_harmonics(Q.apply(q, x), l)
        close(Y_rot, (D @ Y[..., None])[..., 0], dtype, fp32_scale(dtype, l) * 2)


def test_spherical_harmonics_are_orthonormal_on_the_sphere():
    """Gauss-Legendre in cos(theta) x uniform phi integrates polynomials of degree < 2n exactly."""
    lmax, n = 6, 16
    nodes, weights = np.polynomial.legendre.leggauss(n)
    phi = torch.arange(2 * n, dtype=torch.float64) * (2 * math.pi / (2 * n))
    z = torch.as_tensor(nodes)[:, None].expand(n, 2 * n)
    r = torch.sqrt(1 - z**2)
    x = torch.stack((r * phi.cos(), r * phi.sin(), z), -1).reshape(-1, 3)
    w = (torch.as_tensor(weights)[:, None] * (2 * math.pi / (2 * n))).expand(n, 2 * n).reshape(-1)
    Y = spherical_harmonics(x, list(range(lmax + 1)), normalization="integral")
    gram = Y.T @ (w[:, None] * Y)
    torch.testing.assert_close(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-12, rtol=0)


def test_spherical_harmonics_match_scipy_real_form():
    """Real harmonics without Condon-Shortley phase: sqrt(2) (-1)^m Re/Im of scipy's complex Y_l^m."""
    special = pytest.importorskip("scipy.special")
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    u = x / x.norm(dim=-1, keepdim=True)
    theta, phi = torch.arccos(u[:, 2]).numpy(), torch.atan2(u[:, 1], u[:, 0]).numpy()
    for l in range(9):
        ours = spherical_harmonics(x, l, normalization="integral").numpy()
        for m in range(-l, l + 1):
            y = special.sph_harm_y(l, abs(m), theta, phi)
            if m == 0:
                expected = y.real
            elif m > 0:
                expected = math.sqrt(2) * (-1) ** m * y.real
            else:
                expected = math.sqrt(2) * (-1) ** m * y.imag
            np.testing.assert_allclose(ours[:, m + l], expected, atol=1e-12)


@pytest.mark.parametrize(
    "normalization,expected", [("component", lambda l: 2 * l + 1), ("norm", lambda l: 1)]
)
def test_spherical_harmonics_normalizations(normalization, expected, dtype):
    x = torch.randn(20, 3, dtype=dtype)
    for l in range(6):
        Y = spherical_harmonics(x, l, normalization=normalization)
        close((Y**2).sum(-1), torch.full((20,), float(expected(l)), dtype=dtype), dtype, 2)


@pytest.fixture
def float64_default():
    """e3nn builds its constants in the default dtype; make its oracle values float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_same_representation_as_e3nn_up_to_a_change_of_basis(float64_default):
    """e3nn's real basis differs (y is its polar axis); find Q_l from the harmonics, then D = Q D_e3nn Q^T."""
    o3 = pytest.importorskip("e3nn.o3")
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(200, 3, dtype=torch.float64, generator=gen)
    q = Q.random(20, generator=9, dtype=torch.float64)
    R = Q.to_matrix(q)
    angles = o3.matrix_to_angles(R)
    for l in range(1, 7):
        ours = spherical_harmonics(x, l)
        theirs = o3.spherical_harmonics(l, x, normalize=True, normalization="component")
        basis = torch.linalg.lstsq(theirs, ours).solution.T  # ours = basis @ theirs
        torch.testing.assert_close(
            basis @ basis.T, torch.eye(2 * l + 1, dtype=torch.float64), atol=1e-10, rtol=0
        )
        D_theirs = o3.wigner_D(l, *angles)
        torch.testing.assert_close(wigner_D(q, l), basis @ D_theirs @ basis.T, atol=1e-9, rtol=0)


@pytest.mark.parametrize("l", [1, 2, 5])
@pytest.mark.parametrize("which", ["identity", "half_turn_x", "half_turn_diag", "generic"])
def test_gradients_are_finite_and_correct(l, which):
    q = {
        "identity": torch.tensor([[1.0, 0, 0, 0]]),
        "half_turn_x": torch.tensor([[0.0, 1, 0, 0]]),
        "half_turn_diag": torch.tensor([[0.0, 1, 1, 1]]) / math.sqrt(3),
        "generic": Q.random(1, generator=10, dtype=torch.float64),
    }[which].double()
    q.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: wigner_D(v, l), (q,), eps=1e-6, atol=1e-6)
    R = Q.to_matrix(q.detach()).requires_grad_(True)
    wigner_D_from_matrix(R, l).square().sum().backward()
    assert torch.isfinite(R.grad).all()


def test_chunked_recursion_matches_a_single_pass(monkeypatch):
    q = Q.random(3000, generator=11, dtype=torch.float64)
    whole = wigner_D_all(q, 6)
    monkeypatch.setattr(W, "_CACHE_FLOATS", 1)  # forces chunks of 256 rotations
    for a, b in zip(whole, wigner_D_all(q, 6), strict=True):
        assert_close_to_rounding(b, a)  # another batch shape may take another vectorised kernel


def test_shapes_and_dtypes():
    q = Q.random(2, 3, generator=12)
    assert wigner_D(q, 4).shape == (2, 3, 9, 9)
    assert wigner_D(q[0, 0], 2).shape == (5, 5)
    assert wigner_D(Q.random(0, 4), 3).shape == (0, 4, 7, 7)
    assert spherical_harmonics(torch.randn(2, 3), [0, 1, 2]).shape == (2, 9)
    assert wigner_D(q.double(), 2).dtype == torch.float64
    assert wigner_D(q.to(torch.bfloat16), 2).dtype == torch.float32  # computed in fp32, never bf16


def test_autocast_does_not_lower_precision():
    q = Q.random(64, generator=13)
    reference = wigner_D(q.double(), 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        D = wigner_D(q, 6)
    assert D.dtype == torch.float32
    torch.testing.assert_close(D.double(), reference, atol=1e-4, rtol=0)


def test_bad_inputs_raise():
    q = Q.random(3)
    with pytest.raises(ValueError, match="l: expected a non-negative integer degree, got -1"):
        wigner_D(q, -1)
    with pytest.raises(ValueError, match=r"l: expected a non-negative integer degree, got 1\.5"):
        wigner_D(q, 1.5)
    with pytest.raises(ValueError, match=r"q: expected quaternions .* got shape \(3, 3\)"):
        wigner_D(torch.randn(3, 3), 2)
    with pytest.raises(ValueError, match="q: expected non-zero finite quaternions"):
        wigner_D(torch.zeros(2, 4), 2)
    with pytest.raises(ValueError, match="x: expected non-zero vectors"):
        spherical_harmonics(torch.zeros(1, 3), 2)
    with pytest.raises(ValueError, match="normalization: expected one of"):
        spherical_harmonics(torch.randn(1, 3), 2, normalization="unit")
    with pytest.raises(ValueError, match="R: expected finite rotation matrices"):
        wigner_D_from_matrix(torch.full((3, 3), float("nan")), 2)
