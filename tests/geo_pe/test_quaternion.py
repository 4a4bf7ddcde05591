import math

import numpy as np
import pytest
import quaternion as npq  # numpy-quaternion, the oracle
import torch

from geo_pe import quaternion as Q
from geo_pe.testing import tolerance


def close(a, b, dtype, scale=1.0):
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(a, b.to(a.dtype), atol=atol * scale, rtol=rtol * scale)


def half_turns(dtype):
    """180-degree rotations: about the axes, about diagonals, about random axes."""
    axes = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 1, 1], [0.3, -0.2, 0.9]], dtype=dtype
    )
    axes = torch.cat([axes, torch.randn(10, 3, dtype=dtype, generator=torch.Generator().manual_seed(3))])
    return Q.from_axis_angle(axes, torch.full((len(axes),), math.pi, dtype=dtype))


def test_multiply_matches_numpy_quaternion(dtype):
    p, q = Q.random(50, generator=0, dtype=dtype), Q.random(50, generator=1, dtype=dtype)
    expected = npq.as_float_array(Q.to_numpy_quaternion(p) * Q.to_numpy_quaternion(q))
    close(Q.multiply(p, q), torch.as_tensor(expected), dtype)


def test_to_matrix_matches_numpy_quaternion_and_is_a_rotation(dtype):
    q = Q.random(50, generator=2, dtype=dtype)
    R = Q.to_matrix(q)
    close(R, torch.as_tensor(npq.as_rotation_matrix(Q.to_numpy_quaternion(q))), dtype)
    close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=dtype).expand_as(R), dtype)
    close(torch.linalg.det(R), torch.ones(50, dtype=dtype), dtype)


def test_to_matrix_is_a_homomorphism(dtype):
    p, q = Q.random(50, generator=3, dtype=dtype), Q.random(50, generator=4, dtype=dtype)
    close(Q.to_matrix(Q.multiply(p, q)), Q.to_matrix(p) @ Q.to_matrix(q), dtype)


def test_non_unit_quaternions_are_normalised(dtype):
    q = Q.random(10, generator=5, dtype=dtype)
    scale = torch.linspace(0.1, 30, 10, dtype=dtype)[:, None]
    close(Q.to_matrix(q * scale), Q.to_matrix(q), dtype)
    close(Q.normalize(q * scale), q, dtype)


def test_apply_matches_numpy_quaternion(dtype):
    q = Q.random(20, generator=6, dtype=dtype)
    v = torch.randn(20, 3, dtype=dtype)
    expected = np.stack(
        [npq.rotate_vectors(Q.to_numpy_quaternion(q[i]), v[i].double().numpy()) for i in range(20)]
    )
    close(Q.apply(q, v), torch.as_tensor(expected), dtype)


@pytest.mark.parametrize("kind", ["random", "half_turns", "identity", "near_half_turn"])
def test_from_matrix_round_trip(kind, dtype):
    if kind == "random":
        q = Q.random(200, generator=7, dtype=dtype)
    elif kind == "half_turns":
        q = half_turns(dtype)
    elif kind == "identity":
        q = Q.identity(3, dtype=dtype)
    else:
        axes = torch.randn(20, 3, dtype=dtype)
        q = Q.from_axis_angle(axes, torch.full((20,), math.pi - 1e-4, dtype=dtype))
    R = Q.to_matrix(q)
    q_back = Q.from_matrix(R)
    close(Q.to_matrix(q_back), R, dtype)
    close(torch.linalg.vector_norm(q_back, dim=-1), torch.ones(len(q), dtype=dtype), dtype)
    assert bool((q_back[..., 0] >= 0).all())
    # the same rotation means q_back = +-q
    dots = (Q.normalize(q) * q_back).sum(-1).abs()
    close(dots, torch.ones_like(dots), dtype, scale=10)


def test_from_matrix_matches_numpy_quaternion():
    R = Q.to_matrix(Q.random(100, generator=8, dtype=torch.float64))
    ours = Q.from_matrix(R)
    theirs = Q.standardize(torch.as_tensor(npq.as_float_array(npq.from_rotation_matrix(R.numpy()))))
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


@pytest.mark.parametrize("which", ["identity", "half_turns"])
def test_from_matrix_has_finite_gradients(which):
    q = Q.identity(1, dtype=torch.float64) if which == "identity" else half_turns(torch.float64)
    R = Q.to_matrix(q).requires_grad_(True)
    Q.from_matrix(R).sum().backward()
    assert torch.isfinite(R.grad).all()


def test_conjugate_and_inverse(dtype):
    q = Q.random(20, generator=9, dtype=dtype)
    close(Q.multiply(q, Q.conjugate(q)), Q.identity(20, dtype=dtype), dtype)
    p = q * 3.0
    close(Q.multiply(p, Q.inverse(p)), Q.identity(20, dtype=dtype), dtype)


def test_axis_angle(dtype):
    t = torch.linspace(-3, 3, 7, dtype=dtype)
    q = Q.from_axis_angle(torch.tensor([0.0, 0.0, 2.0], dtype=dtype).expand(7, 3), t)
    Rz = torch.zeros(7, 3, 3, dtype=dtype)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1] = t.cos(), -t.sin(), t.sin(), t.cos()
    Rz[:, 2, 2] = 1
    close(Q.to_matrix(q), Rz, dtype)
    close(Q.rotation_angle(q), t.abs(), dtype)
    axis, angle = Q.to_axis_angle(q[1:])
    close(Q.from_axis_angle(axis, angle), Q.standardize(q[1:]), dtype)


def test_random_is_uniform_and_seedable():
    q = Q.random(40000, generator=10, dtype=torch.float64)
    torch.testing.assert_close(q, Q.random(40000, generator=10, dtype=torch.float64))
    assert not torch.equal(q, Q.random(40000, generator=11, dtype=torch.float64))
    R = Q.to_matrix(q)
    # Haar moments: E[R] = 0; the l=1 character (trace) has E[chi] = 0, E[chi^2] = 1 (Schur orthogonality).
    se = 1 / math.sqrt(len(q))
    assert R.mean(0).abs().max() < 5 * se
    trace = R.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert abs(trace.mean()) < 5 * se * 1.0
    assert abs((trace**2).mean() - 1) < 5 * se * math.sqrt(2)
    # The rotation angle t has density (1 - cos t) / pi on [0, pi]: E[t] = pi/2 + 2/pi.
    assert abs(Q.rotation_angle(q).mean() - (math.pi / 2 + 2 / math.pi)) < 5 * se


def test_numpy_quaternion_round_trip(dtype):
    q = Q.random(3, 4, generator=12, dtype=dtype)
    arr = Q.to_numpy_quaternion(q)
    assert arr.shape == (3, 4) and arr.dtype == npq.quaternion
    close(Q.from_numpy_quaternion(arr, dtype=dtype), q, dtype)


@pytest.mark.parametrize("bad", [[0.0, 0.0, 0.0, 0.0], [float("nan"), 0, 0, 1], [float("inf"), 0, 0, 1]])
@pytest.mark.parametrize("fn", [Q.normalize, Q.to_matrix, Q.inverse])
def test_zero_nan_inf_quaternions_raise(bad, fn):
    q = torch.tensor([[1.0, 0, 0, 0], bad])
    with pytest.raises(ValueError, match=r"^q: expected non-zero finite quaternions"):
        fn(q)


def test_wrong_shapes_and_types_raise():
    with pytest.raises(
        ValueError, match=r"q: expected quaternions .* shape \(\.\.\., 4\), got shape \(2, 3\)"
    ):
        Q.to_matrix(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="R: expected rotation matrices"):
        Q.from_matrix(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"R: expected rotation matrices \(orthogonal, det \+1\)"):
        Q.from_matrix(torch.diag(torch.tensor([1.0, 1.0, -1.0])))
    with pytest.raises(ValueError, match="q: expected a floating-point tensor"):
        Q.to_matrix(torch.ones(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"q: expected a torch\.Tensor"):
        Q.to_matrix([1.0, 0, 0, 0])
    with pytest.raises(ValueError, match="array: expected a numpy-quaternion array"):
        Q.from_numpy_quaternion(np.zeros((2, 4)))
