"""Layerwise equivariance (Shahverdi et al. 2026), pictures, and the parity-regression example."""

import struct

import pytest
import torch
from torch import nn

from geo_pe.equivariance import (
    DeepSetsLinear,
    compare_layerwise,
    draw_weight_sharing,
    equivariance_error,
    fit_parity_polynomial,
    layer_activations,
    layerwise_equivariance,
    weight_sharing_pattern,
)
from geo_pe.reps import symmetric

D, H = 8, 12  # input width and hidden units (pairs of mirrored filters)


def mirror(x):
    return x.flip(-1)


def shift(x):
    return x.roll(1, dims=-1)


def planted_network(seed=0):
    """Tanh MLP whose hidden units come in mirror pairs: h(mirror x) = P h(x), P the planted permutation."""
    gen = torch.Generator().manual_seed(seed)
    half = torch.randn(H // 2, D, generator=gen, dtype=torch.float64)
    first = nn.Linear(D, H, bias=False).double()
    with torch.no_grad():
        first.weight.copy_(torch.cat((half, half.flip(-1))))  # unit j + H/2 is unit j mirrored
    net = nn.Sequential(first, nn.Tanh())
    planted = torch.cat((torch.arange(H // 2) + H // 2, torch.arange(H // 2)))
    return net, planted


def test_layerwise_analysis_recovers_a_planted_permutation():
    net, planted = planted_network()
    probes = torch.randn(200, D, dtype=torch.float64)
    for report in layerwise_equivariance(layer_activations(net), probes, mirror):
        assert torch.equal(report.permutation, planted)
        assert torch.equal(report.signs, torch.ones(H, dtype=torch.float64))
        assert report.permutation_error < 1e-12 and report.linear_error < 1e-10
        assert report.matched_fraction == 1.0


def test_random_network_and_control_element_report_large_errors():
    net = nn.Sequential(nn.Linear(D, H), nn.Tanh()).double()
    probes = torch.randn(200, D, dtype=torch.float64)
    tanh = layerwise_equivariance(layer_activations(net), probes, mirror)[1]
    assert tanh.permutation_error > 0.3 and tanh.matched_fraction < 0.5
    planted, _ = planted_network()
    both = compare_layerwise(layer_activations(planted), probes, mirror, shift)
    assert both["trained"][1].permutation_error < 1e-12
    assert both["control"][1].permutation_error > 0.3  # the network was not built for shifts
    assert "matched" in both["control"][1].row()


def test_equivariance_error_of_modules():
    layer = DeepSetsLinear(6, 2, 2).double()
    x = torch.randn(4, 6, 2, dtype=torch.float64)

    def act(g, t):
        return t.index_select(-2, torch.argsort(g))

    assert equivariance_error(layer, x, symmetric(6), act_in=act, act_out=act) < 1e-12
    dense = nn.Sequential(nn.Flatten(-2), nn.Linear(12, 12), nn.Unflatten(-1, (6, 2))).double()
    assert equivariance_error(dense, x, symmetric(6), act_in=act, act_out=act) > 0.1


def test_parity_polynomials_extrapolate_across_zero():
    """Fitted on x >= 0 only: the even (odd) model is right on x <= 0, the unconstrained one is not."""
    gen = torch.Generator().manual_seed(0)
    x_train = torch.rand(200, generator=gen, dtype=torch.float64) * 2
    x_test = -torch.rand(200, generator=gen, dtype=torch.float64) * 2
    for parity, target in (
        ("even", lambda t: torch.exp(-(t**2)) * torch.cos(3 * t)),
        ("odd", lambda t: torch.sin(2 * t)),
    ):
        y = target(x_train) + 0.01 * torch.randn(200, generator=gen, dtype=torch.float64)
        constrained = fit_parity_polynomial(x_train, y, 12, parity)
        free = fit_parity_polynomial(x_train, y, 12)
        in_range = (constrained(x_train) - target(x_train)).abs().mean()
        err_constrained = (constrained(x_test) - target(x_test)).abs().mean()
        err_free = (free(x_test) - target(x_test)).abs().mean()
        assert err_constrained < 0.01 and err_constrained < 1.5 * in_range, (
            parity,
            err_constrained,
            in_range,
        )
        assert err_free > 100 * err_constrained, (parity, err_free)


def test_pictures(tmp_path):
    pytest.importorskip("matplotlib")
    path = draw_weight_sharing(DeepSetsLinear(8), tmp_path / "deepsets.png")
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width > 50 and height > 50
    basis = torch.zeros(2, 3, 3)
    basis[0, 0, 0] = basis[1, 1, 2] = 1
    pattern = weight_sharing_pattern(basis)
    assert pattern[0, 0] == 0 and pattern[1, 2] == 1 and pattern[2, 2] == -1
    with pytest.raises(ValueError, match="source: expected a layer"):
        draw_weight_sharing("not a layer", tmp_path / "x.png")
