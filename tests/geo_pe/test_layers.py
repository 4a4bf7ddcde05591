"""Weight-sharing layers: equivariant, equal to their dense export, with the literature's parameter counts."""

import pytest
import torch

from geo_pe.equivariance import (
    CirculantLinear,
    DeepSetsLinear,
    EquivarianceWarning,
    EquivariantLinear,
    InvariantPooling,
    ProductSetLinear,
    SnTensorLinear,
    set_partitions,
    span_distance,
)
from geo_pe.equivariance.intertwiners import _orbit_basis, schur_basis
from geo_pe.reps import IrrepsSpec, PermutationRep, SO3Rep, cyclic, direct_product, symmetric
from geo_pe.testing import action_of, assert_equivariant, invariant

N, BATCH = 5, 3


def permute_axes(g, x, axes):
    """Apply the permutation g (moving entry i to g[i]) along each of ``axes`` of x."""
    inverse = torch.argsort(g)
    for axis in axes:
        x = x.index_select(axis, inverse)
    return x


def set_action(axes):
    return lambda g, x: permute_axes(g, x, axes)


@pytest.fixture(autouse=True)
def _dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    yield
    torch.set_default_dtype(previous)


def test_deepsets(dtype):
    layer = DeepSetsLinear(N, 3, 4)
    x = torch.randn(BATCH, N, 3)
    assert sum(p.numel() for p in layer.parameters()) == 2 * 3 * 4 + 4
    assert_equivariant(layer, x, symmetric(N), act_in=set_action([-2]), act_out=set_action([-2]))
    torch.testing.assert_close(layer.to_dense()(x.flatten(1)), layer(x).flatten(1))


@pytest.mark.parametrize("k,l", [(0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (0, 2), (2, 0)])
def test_sn_tensor_layers(k, l, dtype):
    layer = SnTensorLinear(N, k, l, 2, 3)
    x = torch.randn(BATCH, *([N] * k), 2)
    axes_in = [-2 - i for i in range(k)]
    axes_out = [-2 - i for i in range(l)]
    assert_equivariant(layer, x, symmetric(N), act_in=set_action(axes_in), act_out=set_action(axes_out))
    torch.testing.assert_close(layer.to_dense()(x.flatten(1)), layer(x).flatten(1))


def test_sn_tensor_basis_is_the_orbit_basis():
    """Each partition map, as a dense matrix, spans exactly the orbits of index pairs (the 15 of 2 -> 2)."""
    torch.set_default_dtype(torch.float64)
    for n, k, l, count in [(5, 2, 2, 15), (3, 2, 2, 14), (2, 2, 2, 8), (4, 1, 2, 5)]:
        layer = SnTensorLinear(n, k, l, bias=False)
        assert len(layer.partitions) == count == int(layer.weight_sharing_pattern().max()) + 1
        mats = []
        for i in range(count):
            with torch.no_grad():
                layer.weight.zero_()
                layer.weight[i] = 1
            mats.append(layer.to_dense().weight.detach())
        assert span_distance(torch.stack(mats), _orbit_basis(layer.weight_sharing_pattern())) < 1e-10


def test_set_partitions_are_counted_by_bell_numbers():
    assert [len(set_partitions(list(range(k)))) for k in range(7)] == [1, 1, 2, 5, 15, 52, 203]


@pytest.mark.parametrize("sizes", [(4,), (3, 4), (2, 3, 2)])
def test_product_set_layers(sizes, dtype):
    layer = ProductSetLinear(sizes, 2, 3)
    assert layer.weight.shape[0] == 2 ** len(sizes)
    x = torch.randn(BATCH, *sizes, 2)
    group = symmetric(sizes[0]) if len(sizes) == 1 else direct_product(*(symmetric(s) for s in sizes))

    def act(g, t):
        parts = [g] if len(sizes) == 1 else group.split(g)
        for axis, part in enumerate(parts):
            t = permute_axes(part, t, [axis - len(sizes) - 1])
        return t

    assert_equivariant(layer, x, group, act_in=act, act_out=act)
    torch.testing.assert_close(layer.to_dense()(x.flatten(1)), layer(x).flatten(1))
    assert int(layer.weight_sharing_pattern().max()) + 1 == 2 ** len(sizes)


@pytest.mark.parametrize("n", [1, 6, 7])
def test_circulant(n, dtype):
    layer = CirculantLinear(n, 2, 3)
    x = torch.randn(BATCH, n, 2)
    assert_equivariant(layer, x, cyclic(n), act_in=set_action([-2]), act_out=set_action([-2]))
    torch.testing.assert_close(layer(x), layer.dense_forward(x))  # FFT == expanded circulant matrices
    torch.testing.assert_close(layer.to_dense()(x.flatten(1)), layer(x).flatten(1))
    assert int(layer.weight_sharing_pattern().max()) + 1 == n


def test_invariant_pooling(dtype):
    layer = InvariantPooling(N, 3, 2)
    x = torch.randn(BATCH, N, 3)
    assert_equivariant(layer, x, symmetric(N), act_in=set_action([-2]), act_out=invariant)
    torch.testing.assert_close(layer.to_dense()(x.flatten(1)), layer(x))


@pytest.mark.parametrize(
    "spec_in,spec_out",
    [
        ("so3:1x0+2x1+1x2", "so3:1x1+2x2+1x0"),
        ("t1:3+so2:1x0+1x2", "so2:2x0+1x2+t1:3"),
        ("t1:2*so3:1x1", "t1:2*so3:2x1"),
    ],
)
def test_equivariant_linear_on_lie_representations(spec_in, spec_out, dtype):
    rep_in, rep_out = IrrepsSpec.parse(spec_in).build(), IrrepsSpec.parse(spec_out).build()
    layer = EquivariantLinear(rep_in, rep_out)
    with torch.no_grad():
        if layer.bias_coefficients is not None:
            layer.bias_coefficients.normal_()
    x = torch.randn(BATCH, rep_in.dim)
    group = rep_out.group if len(rep_out.attribute_groups) >= len(rep_in.attribute_groups) else rep_in.group
    assert layer.structure == "schur"
    assert_equivariant(layer, x, group, act_in=action_of(rep_in), act_out=action_of(rep_out))
    torch.testing.assert_close(layer.to_dense()(x), layer(x))
    closed = schur_basis(rep_out, rep_in)
    assert sum(p.numel() for p in layer.parameters()) == closed.shape[0] + layer.bias_basis.shape[0]
    # the expanded weight lies in the closed-form space and the general solver's basis reproduces it
    solved = EquivariantLinear(rep_in, rep_out, structure="basis", bias=False)
    torch.testing.assert_close(solved.space.project(layer.weight), layer.weight)
    torch.testing.assert_close(layer.space.project(layer.weight), layer.weight)


@pytest.mark.parametrize("structure", ["orbits", "basis"])
def test_equivariant_linear_on_a_finite_representation(structure, dtype):
    rep = PermutationRep(symmetric(4))
    layer = EquivariantLinear(rep, rep, structure=structure)
    assert layer.num_maps == 2 and layer.bias_basis.shape[0] == 1
    x = torch.randn(BATCH, 4)
    assert_equivariant(layer, x, rep.group, act_in=action_of(rep), act_out=action_of(rep))
    torch.testing.assert_close(layer.to_dense()(x), layer(x))


def test_large_closed_form_layer_needs_no_dense_basis():
    """SO(3) with 62 copies of each degree 0..3 (dim 992): 15,376 maps, stored as 4 coefficient blocks."""
    torch.set_default_dtype(torch.float64)
    rep = SO3Rep([(62, 0), (62, 1), (62, 2), (62, 3)])
    layer = EquivariantLinear(rep, rep, bias=False)
    assert layer.num_maps == 4 * 62 * 62 and len(layer.space.blocks) == 4
    x = torch.randn(2, rep.dim)
    assert_equivariant(layer, x, rep.group, act_in=action_of(rep), act_out=action_of(rep), num_samples=2)


def test_zero_dimensional_layer_warns():
    with pytest.warns(EquivarianceWarning):
        layer = EquivariantLinear(SO3Rep([(1, 1)]), SO3Rep([(1, 2)]), bias=False)
    assert torch.equal(layer(torch.randn(2, 3)), torch.zeros(2, 5))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 5, 3\), got \(2, 4, 3\)"):
        DeepSetsLinear(5, 3, 1)(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="order_in: expected 0, 1 or 2, got 3"):
        SnTensorLinear(4, 3, 1)
    with pytest.raises(ValueError, match="n: expected a positive integer, got 0"):
        CirculantLinear(0)
    with pytest.raises(ValueError, match=r"x: expected a last dimension of 3 \(rep_in.dim\)"):
        EquivariantLinear(SO3Rep([(1, 1)]), SO3Rep([(1, 1)]))(torch.zeros(2, 4))
