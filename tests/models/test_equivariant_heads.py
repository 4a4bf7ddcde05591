"""Equivariant outputs: vectors turn as R v, symmetric matrices as R M R^T, positions as R x + t, per token
and per sequence, exactly in phase I; phase II can learn to break the symmetry; saved and loaded."""

from __future__ import annotations

import math

import pytest
import torch

from geo_pe import quaternion, se3
from geo_pe.descriptors import planar_power_spectrum
from geo_pe.reps import spherical_harmonics, wigner_D
from geo_pe.testing import assert_close_to_rounding, assert_equivariant, assert_same_weights
from models import (
    GeoTransformerConfig,
    GeoTransformerForEquivariantRegression,
    GeoTransformerForSequenceClassification,
    harmonic_to_traceless,
    traceless_to_harmonic,
)

B, T = 3, 5

CASES = {  # target, attribute kind, sizes (heads aligned with the blocks of pe_absolute)
    "vector-so3": ("vector", "so3", dict(pe_absolute="so3:1x1", pe_relative="so3:1x0+1x1+1x2", hidden_size=36,
                                         num_attention_heads=4)),
    "vector-s2": ("vector", "s2", dict(pe_absolute="s2:1x1", pe_relative="s2:1x1", hidden_size=9,
                                       num_attention_heads=3)),
    "matrix-so3": ("symmetric_matrix", "so3", dict(pe_absolute="so3:1x2", pe_relative="so3:1x2",
                                                   hidden_size=40, num_attention_heads=8)),
    "matrix-s2": ("symmetric_matrix", "s2", dict(pe_absolute="s2:1x1+1x2", pe_relative="s2:1x1+5x0",
                                                 hidden_size=24, num_attention_heads=3)),
    "general-s2": ("matrix", "s2", dict(pe_absolute="s2:1x1+1x2", pe_relative="s2:1x1+5x0", hidden_size=24,
                                        num_attention_heads=3)),
    "position-se3": ("position", "se3", dict(pe_absolute="se3:1x1", pe_relative="se3(scale=0.5):1xh+1x2",
                                             hidden_size=27, num_attention_heads=3)),
}  # fmt: skip


def make(case: str, level: str, dtype, **overrides) -> GeoTransformerForEquivariantRegression:
    target, _, sizes = CASES[case]
    settings = dict(
        feature_size=2, phase_history=["equivariant"], initializer_range=0.3, pe_gate=True,
        equivariant_target=target, equivariant_level=level,
    )  # fmt: skip
    config = GeoTransformerConfig(**{**settings, **sizes, **overrides})
    torch.manual_seed(0)
    return GeoTransformerForEquivariantRegression(config).to(dtype).eval()


def sample(kind: str, shape, generator: int, dtype):
    if kind == "so3":
        return quaternion.random(*shape, generator=generator, dtype=dtype)
    if kind == "se3":
        return se3.random(*shape, generator=generator, dtype=dtype, translation_scale=2.0)
    return torch.randn(*shape, 3, generator=torch.Generator().manual_seed(generator), dtype=dtype)


def move(kind: str, h, g):
    """A global rigid motion h (a pose) of the elements g; returns (moved g, R, t)."""
    R, t = se3.to_rotation_translation(h)
    if kind == "so3":
        return quaternion.multiply(h[..., :4], g), R, torch.zeros_like(t)
    if kind == "se3":
        return se3.compose(h, g), R, t
    return quaternion.apply(h[..., :4], g), R, torch.zeros_like(t)


@pytest.mark.parametrize("level", ["sequence", "token"])
@pytest.mark.parametrize("case", list(CASES))
def test_outputs_turn_with_the_global_motion(case, level, dtype):
    target, kind, _ = CASES[case]
    model = make(case, level, dtype)
    features = torch.randn(B, T, 2, dtype=dtype)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 3:] = 0
    g = sample(kind, (B, T), 1, dtype)
    h = se3.random(B, 1, generator=2, dtype=dtype, translation_scale=3.0)
    moved, R, t = move(kind, h, g)
    y = model(features=features, positions=g, attention_mask=mask).predictions
    y_moved = model(features=features, positions=moved, attention_mask=mask).predictions
    if level == "token":  # one R and t per sequence, broadcast over tokens
        R, t = R.expand(B, T, 3, 3), t.expand(B, T, 3)
    else:
        R, t = R[:, 0], t[:, 0]
    if target == "symmetric_matrix":
        expected = R @ y @ R.transpose(-1, -2)
        torch.testing.assert_close(y, y.transpose(-1, -2))
    elif target == "matrix":  # a general matrix: its antisymmetric part is not zero
        expected = R @ y @ R.transpose(-1, -2)
        assert (y - y.transpose(-1, -2)).abs().max() > 1e-3
    else:
        expected = (R @ y[..., None])[..., 0] + t
    atol = 1e-10 if dtype == torch.float64 else 1e-4
    valid = mask.bool() if level == "token" else slice(None)
    torch.testing.assert_close(y_moved[valid], expected[valid], rtol=0, atol=atol)
    assert y.abs().max() > 1e-3  # not trivially zero


def test_harmonic_components_map_to_traceless_matrices(dtype):
    x = torch.randn(20, 3, dtype=dtype)
    x = x / x.norm(dim=-1, keepdim=True)
    expected = x[:, :, None] * x[:, None, :] - torch.eye(3, dtype=dtype) / 3
    torch.testing.assert_close(
        harmonic_to_traceless(spherical_harmonics(x, 2, normalization="norm")), expected
    )
    y = torch.randn(20, 5, dtype=dtype)
    q = quaternion.random(20, generator=3, dtype=dtype)
    R = quaternion.to_matrix(q)
    turned = harmonic_to_traceless((wigner_D(q, 2) @ y[..., None])[..., 0])
    torch.testing.assert_close(turned, R @ harmonic_to_traceless(y) @ R.transpose(-1, -2))


def test_phase_two_learns_what_the_symmetry_forbids():
    """A target fixed in space (e_z whatever the orientation): an equivariant head cannot fit it, the
    same model freed after the switch does."""
    target = torch.tensor([0.0, 0.0, 1.0])

    def fit(model, steps=150):
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        gen = torch.Generator().manual_seed(4)
        for _ in range(steps):
            q = quaternion.random(16, T, generator=gen)
            loss = model(features=torch.ones(16, T, 2), positions=q, labels=target.expand(16, 3)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return loss.item()

    equivariant = make("vector-so3", "sequence", torch.float32).train()
    assert fit(equivariant) > 0.2  # at best the zero vector: 1/3 per component
    freed = make("vector-so3", "sequence", torch.float32).train()
    freed.set_phase("free")
    assert fit(freed) < 0.05


@pytest.mark.parametrize("second", ["free", "subspace"])
def test_switch_save_and_load_keep_the_outputs(second, tmp_path):
    model = make("matrix-so3", "token", torch.float64, subspace_dim=32)
    g = sample("so3", (B, T), 5, torch.float64)
    x = {"features": torch.randn(B, T, 2, dtype=torch.float64), "positions": g}
    assert_switch_save_and_load_keep_outputs(model, x, second, tmp_path)


def assert_switch_save_and_load_keep_outputs(model, inputs: dict, phase: str, folder) -> None:
    """``model.set_phase(phase)`` keeps the float64 outputs on ``inputs``; saved to ``folder`` and loaded,
    the weights are the same bit for bit and the outputs the same to float64 rounding (tensors loaded
    from the file may sit at another memory alignment, where BLAS may sum in another order)."""
    before = model(**inputs).predictions
    model.set_phase(phase)
    torch.testing.assert_close(model(**inputs).predictions, before, rtol=0, atol=1e-12)
    model.save_pretrained(folder)
    loaded = GeoTransformerForEquivariantRegression.from_pretrained(folder).double().eval()
    assert_same_weights(loaded, model)
    assert_close_to_rounding(loaded(**inputs).predictions, model(**inputs).predictions)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(equivariant_target="symmetric_matrix"), r"pe_absolute: 'so3:1x1' has no degree-2 channels"),
        (
            dict(equivariant_target="position"),
            r"output_attribute: position outputs need one SE\(3\) pose attribute or one point",
        ),
        (dict(output_attribute="angle"), r"output_attribute: 'angle' is not a rotation attribute"),
        (dict(equivariant_level="atom"), r"equivariant_level: expected one of"),
    ],
)
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        make("vector-so3", "sequence", torch.float32, **overrides)


def particle_model(shared: bool, dtype) -> GeoTransformerForEquivariantRegression:
    config = GeoTransformerConfig(
        feature_size=3,  # charge, |x|, |v|
        hidden_size=24,
        num_attention_heads=4,  # 18 scalars + Y_1 of the position and of the velocity direction
        pe_absolute="s2@position:1x1+s2@velocity:1x1",
        pe_relative="s2@position:1x1+3x0",
        pe_gate=True,
        shared_rotations=[["position", "velocity"]] if shared else None,
        equivariant_target="vector",
        equivariant_level="token",
        output_attribute="position",
        phase_history=["equivariant"],
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    return GeoTransformerForEquivariantRegression(config).to(dtype).eval()


def test_position_and_velocity_under_one_rotation_predict_displacements(dtype):
    """Shared: the phase I maps mix position and velocity channels (more coefficients), and the
    displacement turns with the one rotation; turning the two by different rotations is then another
    input. Independent attributes keep the smaller commutant."""
    x, v = torch.randn(2, 5, 3, dtype=dtype), torch.randn(2, 5, 3, dtype=dtype)
    features = torch.cat((torch.sign(torch.randn(2, 5, 1, dtype=dtype)), x.norm(dim=-1, keepdim=True),
                          v.norm(dim=-1, keepdim=True)), dim=-1)  # fmt: skip
    h, other = (
        quaternion.random(2, 1, generator=6, dtype=dtype),
        quaternion.random(2, 1, generator=7, dtype=dtype),
    )
    R = quaternion.to_matrix(h)
    counts = {}
    for shared in (False, True):
        model = particle_model(shared, dtype)
        counts[shared] = model.model.layers[0].self_attn.q_proj.weight_param.coefficients.numel()
        y = model(features=features, positions={"position": x, "velocity": v}).predictions
        turned = {"position": quaternion.apply(h, x), "velocity": quaternion.apply(h, v)}
        y_turned = model(features=features, positions=turned).predictions
        atol = 1e-10 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(y_turned, (R @ y[..., None])[..., 0], rtol=0, atol=atol)
        apart = {"position": quaternion.apply(h, x), "velocity": quaternion.apply(other, v)}
        y_apart = model(features=features, positions=apart).predictions
        assert ((y_apart - (R @ y[..., None])[..., 0]).abs().max() > 1e-3) == shared
    assert counts[True] > counts[False]


@pytest.mark.parametrize(
    "groups, message",
    [
        ([["position"]], r"shared_rotations: each group lists two or more"),
        ([["position", "speed"]], r"shared_rotations: \['speed'\] are not attributes"),
    ],
)
def test_bad_shared_rotations_are_named(groups, message):
    with pytest.raises(ValueError, match=message):
        GeoTransformerConfig(
            feature_size=1, pe_absolute="s2@position:1x1+s2@velocity:1x1", pe_relative=None, hidden_size=12,
            num_attention_heads=2, shared_rotations=groups,
        )  # fmt: skip


def cloud_model(
    target: str, level: str, dtype, distance_bias: int = 0, point_values: bool = False
) -> GeoTransformerForEquivariantRegression:
    config = GeoTransformerConfig(
        feature_size=1,  # a mass; the distance to the centroid is added by the model
        hidden_size=24,
        num_attention_heads=3,
        pe_absolute="s2:1x1+1x2",
        pe_relative="s2:1x1+5x0",
        pe_gate=True,
        point_attributes=["direction"],
        distance_bias=distance_bias,
        relative_point_values=point_values,
        equivariant_target=target,
        equivariant_level=level,
        phase_history=["equivariant"],
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    return GeoTransformerForEquivariantRegression(config).to(dtype).eval()


@pytest.mark.parametrize(
    "target, level, distance_bias", [("vector", "token", 0), ("symmetric_matrix", "sequence", 0),
                                     ("position", "token", 0), ("position", "sequence", 0),
                                     ("position", "token", 6), ("symmetric_matrix", "sequence", 6),
                                     ("position", "token", -6), ("vector", "sequence", -6)],
)  # fmt: skip
def test_point_clouds_need_no_preprocessing(target, level, distance_bias, dtype):
    """Raw points: the model centres them on the valid centroid and adds their distances, so a rigid motion
    x -> R x + t of the cloud turns vectors and matrices and moves positions; padding holds NaN. With
    ``distance_bias`` the pairwise distances bias attention, with relative point values (marked by a
    negative count) attention moves offsets x_j - x_i into the vector channels, and this still holds."""
    model = cloud_model(target, level, dtype, abs(distance_bias), point_values=distance_bias < 0)
    points = 3 + torch.randn(B, T, 3, dtype=dtype)
    mass = torch.rand(B, T, 1, dtype=dtype)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[2, 3:] = 0
    points[2, 3:] = float("nan")
    h = se3.random(B, 1, generator=8, dtype=dtype, translation_scale=10.0)
    R, t = se3.to_rotation_translation(h)
    moved = se3.apply(h, points)
    y = model(features=mass, positions={"direction": points}, attention_mask=mask).predictions
    y_moved = model(features=mass, positions={"direction": moved}, attention_mask=mask).predictions
    if level == "sequence":
        R, t = R[:, 0], t[:, 0]
    else:
        R, t = R.expand(B, T, 3, 3), t.expand(B, T, 3)
    if target == "symmetric_matrix":
        expected = R @ y @ R.transpose(-1, -2)
    else:
        expected = (R @ y[..., None])[..., 0] + (t if target == "position" else 0)
    valid = mask.bool() if level == "token" else slice(None)
    atol = 1e-9 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(y_moved[valid], expected[valid], rtol=0, atol=atol)
    assert torch.isfinite(y[valid]).all()


def test_a_point_at_its_centroid_is_named():
    model = cloud_model("vector", "sequence", torch.float32)
    alone = torch.zeros(1, 2, 3)
    alone[0, 1] = 1.0
    with pytest.raises(ValueError, match=r"positions\['direction'\]: a point lies at the centroid"):
        model(
            features=torch.ones(1, 2, 1),
            positions={"direction": alone},
            attention_mask=torch.tensor([[1, 0]]),
        )


def test_distance_bias_reads_pairwise_distances():
    """The radial basis against a loop over pairs; the bias changes the outputs (it is read), padded
    pairs get none; a reflection of the cloud (an O(3) element) leaves the basis unchanged."""
    model = cloud_model("position", "token", torch.float64, distance_bias=5)
    points = torch.randn(2, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    basis = model.model.inputs.pair_distance_basis({"direction": points}, mask.bool())
    centres = torch.linspace(0, 5.0, 5, dtype=torch.float64)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                d = float((points[b, i] - points[b, j]).norm())
                expected = torch.exp(-(((d - centres) / 1.25) ** 2)) * float(mask[b, i] * mask[b, j])
                torch.testing.assert_close(basis[b, i, j], expected)
    reflected = model.model.inputs.pair_distance_basis({"direction": -points}, mask.bool())
    torch.testing.assert_close(reflected, basis)
    inputs = {"features": torch.rand(2, 4, 1, dtype=torch.float64), "positions": {"direction": 3 + points},
              "attention_mask": mask}  # fmt: skip
    before = model(**inputs).predictions
    with torch.no_grad():
        model.model.layers[0].self_attn.distance_bias.weight.add_(1.0)
    assert (model(**inputs).predictions - before)[mask.bool()].abs().max() > 1e-3


def planar_model(
    origin: str, dtype, point_values: bool = False, descriptors: bool = False
) -> GeoTransformerForSequenceClassification:
    config = GeoTransformerConfig(
        feature_size=1,  # an intensity; the distance to the origin or centroid is added by the model
        hidden_size=32,
        num_attention_heads=4,
        pe_absolute="so2:2x1+2x2",
        pe_relative="so2:1x1+1x2+1x3+1x4",
        point_attributes=["angle"],
        point_origin=origin,
        distance_bias=6,
        relative_point_values=point_values,
        local_descriptor_shells=[1.0, 2.0, 3.0] if descriptors else None,
        local_descriptor_weight=0 if descriptors else None,
        num_labels=5,
        phase_history=["equivariant"],
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    return GeoTransformerForSequenceClassification(config).to(dtype).eval()


def _planar_motion(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    angle = (2 * torch.rand((), generator=generator, dtype=torch.float64) - 1) * math.pi
    return angle, 5 * torch.randn(2, generator=generator, dtype=torch.float64)


def _turn_plane(angle: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    c, s = angle.cos().to(points.dtype), angle.sin().to(points.dtype)
    return torch.stack((c * points[..., 0] - s * points[..., 1], s * points[..., 0] + c * points[..., 1]), -1)


@pytest.mark.parametrize(
    "origin, point_values, descriptors",
    [
        ("centroid", False, False),
        ("origin", False, False),
        ("centroid", True, False),
        ("origin", False, True),
    ],
)
def test_planar_points_give_invariant_logits(origin, point_values, descriptors, dtype):
    """so2 point attributes given as points in the plane: the logits are invariant under rotations about
    the origin, and with ``point_origin="centroid"`` under rigid motions of the plane (padding holds NaN);
    with ``"origin"`` a translation changes them (the model reads the points from the origin). With
    ``relative_point_values`` the offsets x_j - x_i enter the frequency-1 blocks, and with
    ``local_descriptor_shells`` each point's neighbourhood enters the scalars; this still holds."""
    model = planar_model(origin, dtype, point_values, descriptors)
    points = 1 + 2 * torch.randn(B, T, 2, dtype=dtype)
    intensity = torch.rand(B, T, 1, dtype=dtype)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[2, 3:] = 0
    points[2, 3:] = float("nan")

    def logits(x):
        return model(features=intensity, positions={"angle": x}, attention_mask=mask).logits

    def rigid(g, x):
        angle, shift = g
        moved = _turn_plane(angle, x)
        return moved + shift.to(x.dtype) if origin == "centroid" else moved

    assert_equivariant(logits, points, _planar_motion, act_in=rigid)
    encoded, centred, distances = model.model.inputs.center_points({"angle": points}, B, T, mask.bool())
    valid = mask.bool()
    expected = points.clone()
    if origin == "centroid":
        expected = points - torch.stack([points[b][valid[b]].mean(0) for b in range(B)])[:, None]
    torch.testing.assert_close(centred["angle"][valid], expected[valid])
    angles = torch.atan2(expected[..., 1], expected[..., 0])
    torch.testing.assert_close(encoded["angle"][valid], angles[valid])
    torch.testing.assert_close(distances[..., 0][valid], expected.norm(dim=-1)[valid])
    shifted = logits(points + torch.tensor([1.5, -0.5], dtype=dtype))
    assert ((shifted - logits(points)).abs().max() > 1e-3) == (origin == "origin")


def test_planar_point_values_turn_with_the_state(dtype):
    """With ``relative_point_values`` on planar points the whole token state is equivariant: a rotation
    of the points by g turns every state by the state representation's matrix of g (scalars fixed,
    frequency-k blocks by k g); the offsets are read (zeroing their map changes the state)."""
    model = planar_model("centroid", dtype, point_values=True).model
    points = 2 * torch.randn(B, T, 2, dtype=dtype)
    intensity = torch.rand(B, T, 1, dtype=dtype)

    def states(x):
        return model(features=intensity, positions={"angle": x}).last_hidden_state

    def turn_state(angle, y):
        return y @ model.state_rep.matrices({"angle": angle.to(y.dtype)}).T

    def rotation(generator):
        return _planar_motion(generator)[0]

    assert_equivariant(states, points, rotation, act_in=_turn_plane, act_out=turn_state)
    before = states(points)
    with torch.no_grad():
        for layer in model.layers:
            layer.self_attn.point_value_proj["angle"].weight.zero_()
    assert (states(points) - before).abs().max() > 1e-3


def test_local_descriptors_are_read_and_weighed_by_their_feature():
    """The descriptors reach the logits (zeroing their map changes them), their map starts at
    initializer_range / sqrt(inputs), and the neighbours are weighed by the named feature: the
    descriptors, and so the logits, move when another point's intensity does, beyond what the
    intensity's own embedding explains."""
    model = planar_model("origin", torch.float64, descriptors=True)
    embed = model.model.embed_descriptors
    assert embed.in_features == 3 + 3 * 3**2 and embed.out_features == model.config.scalar_size
    assert embed.weight.std().item() == pytest.approx(0.3 / embed.in_features**0.5, rel=0.2)
    points = 2 * torch.randn(2, 6, 2, dtype=torch.float64)
    intensity = torch.rand(2, 6, 1, dtype=torch.float64)
    x = {"angle": points}
    descriptors = model.model._local_descriptors(x, intensity, None)
    expected = planar_power_spectrum(points, [1.0, 2.0, 3.0], 0.2, 3, intensity[..., 0])
    torch.testing.assert_close(descriptors, expected)
    before = model(features=intensity, positions=x).logits
    with torch.no_grad():
        embed.weight.zero_()
    assert (model(features=intensity, positions=x).logits - before).abs().max() > 1e-3
    with pytest.raises(ValueError, match="features: local_descriptor_weight=0 reads each neighbour's weight"):
        model.model._local_descriptors(x, None, None)


def test_planar_points_refuse_what_they_cannot_serve():
    model = planar_model("origin", torch.float32)
    shape = r"positions\['angle'\]: expected planar points of shape \(1, 3, 2\)"
    with pytest.raises(ValueError, match=shape):
        model(features=torch.ones(1, 3, 1), positions={"angle": torch.randn(1, 3, 3)})
    on_origin = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])
    with pytest.raises(ValueError, match=r"positions\['angle'\]: a point lies at the origin"):
        model(features=torch.ones(1, 3, 1), positions=on_origin)
    common = dict(feature_size=1, hidden_size=32, num_attention_heads=4, pe_absolute="so2:2x1+2x2",
                  pe_relative="so2:1x1+1x2+1x3+1x4", point_attributes=["angle"], distance_bias=4)  # fmt: skip
    with pytest.raises(
        ValueError,
        match="coordinate_updates: moves and input vectors are taken with points "
        "in R\\^3; \\['angle'\\] are planar",
    ):
        GeoTransformerConfig(**common, relative_point_values=True, coordinate_updates=True)
    with pytest.raises(ValueError, match="point_origin: expected one of"):
        GeoTransformerConfig(**common, point_origin="image centre")
    with pytest.raises(
        ValueError, match="local_descriptor_shells: descriptors are taken around planar points"
    ):
        GeoTransformerConfig(feature_size=1, pe_absolute="so2:2x1", local_descriptor_shells=[1.0])
    with pytest.raises(ValueError, match=r"local_descriptor_shells: expected non-negative radii"):
        GeoTransformerConfig(**common, local_descriptor_shells=[1.0, -1.0])
    with pytest.raises(ValueError, match="local_descriptor_frequencies: expected a non-negative int, got -1"):
        GeoTransformerConfig(**common, local_descriptor_shells=[1.0], local_descriptor_frequencies=-1)
    with pytest.raises(ValueError, match="local_descriptor_width: expected a positive width, got 0"):
        GeoTransformerConfig(**common, local_descriptor_shells=[1.0], local_descriptor_width=0.0)
    with pytest.raises(
        ValueError, match=r"local_descriptor_weight: expected None or a feature index in \[0, 1\)"
    ):
        GeoTransformerConfig(**common, local_descriptor_shells=[1.0], local_descriptor_weight=1)


def test_distance_basis_stays_out_of_the_subnormal_range():
    """Far from a centre a Gaussian underflows; float32 exp and everything fed its subnormal results run a
    slow path on CPUs, so the basis is held at e^-80, a value no layer can tell from zero."""
    model = cloud_model("position", "token", torch.float32, distance_bias=5)
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [100.0, 0.0, 0.0]]])
    basis = model.model.inputs.pair_distance_basis({"direction": points}, None)
    assert basis.min() >= torch.finfo(torch.float32).tiny
    assert basis[0, 0, 2].max() == pytest.approx(math.exp(-80), rel=1e-4)  # 100 apart: every function
    torch.testing.assert_close(basis[0, 0, 1], torch.exp(-(((0.5 - torch.linspace(0, 5.0, 5)) / 1.25) ** 2)))


def test_relative_point_values_are_weighted_offsets():
    """The update against a loop: sum_j a_ij^h (x_j - x_i) per head, mixed into the degree-1 block in
    (y, z, x) order; padded keys carry no weight."""
    model = cloud_model("vector", "token", torch.float64, point_values=True)
    attention = model.model.layers[0].self_attn
    (start,) = attention.point_value_channels["direction"]
    assert start == model.config.scalar_size  # s2:1x1 is the first block after the scalars
    points = torch.randn(2, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).bool()
    pairs = model.model.inputs.pair_geometry({"direction": points}, mask, model.dtype)
    weights = torch.rand(2, 3, 4, 4, dtype=torch.float64) * mask[:, None, None, :]
    weights = weights / weights.sum(-1, keepdim=True)
    update = attention._point_values(weights, pairs.offsets)
    mix = attention.point_value_proj["direction"].weight[0]  # (heads,)
    for b in range(2):
        for i in range(4):
            expected = sum(
                mix[h]
                * weights[b, h, i, j]
                * (points[b, j] - points[b, i])
                * float(mask[b, i] and mask[b, j])
                for h in range(3)
                for j in range(4)
            )
            torch.testing.assert_close(update[b, i, start : start + 3], expected[[1, 2, 0]])
    assert update[..., :start].abs().max() == 0 and update[..., start + 3 :].abs().max() == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"relative_point_values": True, "point_attributes": None}, r"relative_point_values: offsets are"),
        ({"distance_bias": 1}, r"distance_bias: expected 0 or at least 2"),
        (
            {"distance_bias": 4, "point_attributes": None},
            r"distance_bias: distances are taken between points",
        ),
        ({"distance_bias": 4, "distance_bias_max": 0.0}, r"distance_bias_max: expected a positive"),
    ],
)
def test_bad_distance_bias_is_named(overrides, message):
    settings = {"feature_size": 1, "pe_absolute": "s2:1x1", "pe_relative": None, "hidden_size": 12,
                "num_attention_heads": 2, "point_attributes": ["direction"], **overrides}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        GeoTransformerConfig(**settings)


def test_traceless_matrices_map_back_to_their_harmonic_components(dtype):
    y = torch.randn(20, 5, dtype=dtype)
    torch.testing.assert_close(traceless_to_harmonic(harmonic_to_traceless(y)), y)
    a = torch.randn(20, 3, 3, dtype=dtype)
    symmetric = a + a.transpose(-1, -2)
    traceless = (
        symmetric
        - symmetric.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None] * torch.eye(3, dtype=dtype) / 3
    )
    torch.testing.assert_close(harmonic_to_traceless(traceless_to_harmonic(traceless)), traceless)


MOMENTS = dict(  # raw position vectors (an inertia-like input): the moments carry their magnitude
    feature_size=2, hidden_size=24, num_attention_heads=3, pe_absolute="s2@position:1x1+1x2",
    pe_relative="s2@position:1x1+5x0", pe_gate=True, vector_inputs=["position"], moment_readout=["position"],
    phase_history=["equivariant"], initializer_range=0.3,
)  # fmt: skip


def moment_model(target: str, level: str, dtype, **overrides) -> GeoTransformerForEquivariantRegression:
    """A phase I head with ``moment_readout``; its moment coefficients drawn (they start at zero)."""
    config = GeoTransformerConfig(**{**MOMENTS, "equivariant_target": target, "equivariant_level": level,
                                     **overrides})  # fmt: skip
    torch.manual_seed(0)
    model = GeoTransformerForEquivariantRegression(config)
    assert model.moment_weights.weight.abs().max() == 0 and model.moment_weights.bias.abs().max() == 0
    with torch.no_grad():
        model.moment_weights.weight.normal_(0.0, 0.5)
        model.moment_weights.bias.normal_(0.0, 0.5)
    return model.to(dtype).eval()


def cloud(dtype, scale: float = 2.0) -> dict:
    """Features, raw 3-vectors of several magnitudes (NaN on padding) and a mask."""
    gen = torch.Generator().manual_seed(8)
    x = scale * torch.randn(B, T, 3, generator=gen, dtype=dtype)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[2, 3:] = 0
    x[2, 3:] = float("nan")
    features = torch.randn(B, T, 2, generator=gen, dtype=dtype)
    return {"features": features, "positions": {"position": x}, "attention_mask": mask}


def _rotations(dtype):
    return lambda generator: quaternion.random(B, 1, generator=generator, dtype=dtype)


@pytest.mark.parametrize("level", ["sequence", "token"])
@pytest.mark.parametrize("target", ["vector", "symmetric_matrix", "matrix"])
def test_moment_readout_turns_with_the_vectors(target, level, dtype):
    model = moment_model(target, level, dtype)
    batch = cloud(dtype)
    mask = batch["attention_mask"].bool()

    def predict(x):
        y = model(**{**batch, "positions": {"position": x}}).predictions
        return y if level == "sequence" else y.masked_fill(~mask.reshape(B, T, *[1] * (y.dim() - 2)), 0.0)

    def turn(q, y):
        R = quaternion.to_matrix(q if level == "token" else q[:, 0])
        if target == "vector":
            return (R @ y[..., None])[..., 0]
        return R @ y @ R.transpose(-1, -2)

    assert_equivariant(
        predict, (batch["positions"]["position"],), _rotations(dtype),
        act_in=lambda q, x: quaternion.apply(q, x), act_out=turn, num_samples=3,
    )  # fmt: skip
    y = predict(batch["positions"]["position"])
    with torch.no_grad():  # the moments are a large part of the output
        model.moment_weights.bias.zero_()
        model.moment_weights.weight.zero_()
    assert (y - predict(batch["positions"]["position"])).abs().max() > 1e-2


def test_moment_readout_is_the_mean_of_the_weighted_second_moments():
    """Phase I maps each irrep of the moments by one scalar (Schur): the output is then lambda_0 mean_i
    a_i |v_i|^2 I + lambda_2 mean_i b_i (v_i v_i^T - |v_i|^2 I / 3), summed here token by token."""
    dtype = torch.float64
    model = moment_model("symmetric_matrix", "sequence", dtype)
    batch = cloud(dtype)
    weight = model.moment_proj.weight.detach()
    lam0, lam2 = weight[0, 0], weight[1, 1]
    torch.testing.assert_close(weight, torch.diag(torch.stack([lam0, *[lam2] * 5])))  # Schur
    invariants = model.model(**batch).invariants
    coefficients = model.moment_weights(invariants).detach()
    x, mask = batch["positions"]["position"], batch["attention_mask"]
    expected = torch.zeros(B, 3, 3, dtype=dtype)
    eye = torch.eye(3, dtype=dtype)
    for b in range(B):
        valid = [t for t in range(T) if mask[b, t]]
        for t in valid:
            v, (a, c) = x[b, t], coefficients[b, t]
            square = v @ v
            expected[b] += (
                lam0 * a * square * eye + lam2 * c * (torch.outer(v, v) - square * eye / 3)
            ) / len(valid)
    moments = model._moments(invariants, mask, batch["positions"], dtype)
    torch.testing.assert_close(moments, expected, rtol=0, atol=1e-12)


def test_moment_readout_switches_saves_and_loads(tmp_path):
    model = moment_model("matrix", "sequence", torch.float64)
    assert model.moment_proj.weight_param.coefficients.numel() == 2  # phase I: one scalar per irrep
    assert_switch_save_and_load_keep_outputs(model, cloud(torch.float64), "free", tmp_path)
    assert sum(p.numel() for p in model.moment_proj.parameters() if p.requires_grad) == 9 * 6


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(vector_inputs=None), r"moment_readout: \['position'\] are not vector_inputs"),
        (dict(pe_absolute="s2@position:1x1+1x2+s2@velocity:1x1", vector_inputs=["position", "velocity"],
              moment_readout=["velocity"], output_attribute="position"),
         r"moment_readout: \['velocity'\] do not turn with the output attribute 'position'"),
    ],
)  # fmt: skip
def test_bad_moment_readout_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        GeoTransformerForEquivariantRegression(
            GeoTransformerConfig(**{**MOMENTS, "equivariant_target": "symmetric_matrix", **overrides})
        )


def test_moment_readout_of_positions_is_refused():
    config = GeoTransformerConfig(
        feature_size=1, hidden_size=24, num_attention_heads=3, pe_absolute="s2@position:1x1+s2@velocity:1x1",
        pe_relative="s2@position:1x1+5x0", shared_rotations=[["position", "velocity"]],
        point_attributes=["position"], vector_inputs=["velocity"], moment_readout=["velocity"],
        equivariant_target="position", equivariant_level="token",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"moment_readout: position outputs move with their points"):
        GeoTransformerForEquivariantRegression(config)
