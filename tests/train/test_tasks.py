"""The tasks' symmetries against independent computations: exact variants are invariant, broken ones are
not, and the plain baselines' raw coordinates move exactly as the group elements do."""

import math

import numpy as np
import pytest
import torch

from geo_pe import quaternion
from train.tasks import Motifs, RotatedDigits, RotorChain, _rotor_energy
from train.validation import ConfigError


def _first(task, split="train", count=16):
    data = task.build()[split]
    return data[:count]


def test_digit_plain_coordinates_match_the_angles_and_rotate_with_them():
    plain = _first(RotatedDigits(RotatedDigits.Options(plain_features=True, train_size=40)))
    geo = _first(RotatedDigits(RotatedDigits.Options(train_size=40)))
    mask = geo["attention_mask"].bool()
    radius = plain["features"][..., 1] * 5.0
    x, y = radius * geo["positions"].cos() / 5.0, radius * geo["positions"].sin() / 5.0
    torch.testing.assert_close(plain["features"][..., 2][mask], x[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(plain["features"][..., 3][mask], y[mask], atol=1e-5, rtol=0)
    task = RotatedDigits(RotatedDigits.Options(plain_features=True, train_size=40))
    moved = task.transform({"features": plain["features"]}, torch.Generator().manual_seed(3))["features"]
    # a rotation keeps radii and the invariant columns, and turns every pixel of an image by one angle
    torch.testing.assert_close(moved[..., :2], plain["features"][..., :2])
    turn = torch.atan2(moved[..., 3], moved[..., 2]) - torch.atan2(plain["features"][..., 3], x)
    turn = torch.remainder(turn + math.pi, 2 * math.pi) - math.pi
    spread = (turn - turn[:, :1]).abs().mul(mask).amax()
    assert spread < 1e-4


def test_tilt_labels_follow_the_rotation():
    options = RotatedDigits.Options(rotation_range=90, tilt_digits=10, train_size=200)
    data = RotatedDigits(options).build()["train"][:200]
    tilted = data["labels"] >= 10
    assert torch.equal(tilted, data["rotation"].abs() > math.radians(45))
    assert 0.3 < tilted.double().mean() < 0.7


def _wrapped(angles: torch.Tensor) -> torch.Tensor:
    return torch.remainder(angles + math.pi, 2 * math.pi) - math.pi


@pytest.mark.parametrize("plain", [False, True], ids=["angles", "plain"])
def test_in_range_resampling_turns_each_upright_image_to_a_fresh_angle_in_range(plain):
    """Against the same images built upright (rotation_range 0): every pixel sits at its upright angle
    plus the new rotation, the rotations stay within the range, and tilt labels follow them."""
    options = dict(rotation_range=45.0, tilt_digits=4, train_size=300, plain_features=plain)
    task = RotatedDigits(RotatedDigits.Options(**options))
    batch = task.build()["train"][:300]
    upright = RotatedDigits(RotatedDigits.Options(**{**options, "rotation_range": 0.0})).build()["train"][
        :300
    ]
    out = task.resample_orientation(batch, torch.Generator().manual_seed(5))
    mask = batch["attention_mask"].bool()
    new = out["rotation"]
    assert new.abs().max() <= math.radians(45.0)
    assert (new - batch["rotation"]).abs().min() > 0  # every image turned afresh
    offset = _wrapped(out["positions"].double() - new[:, None] - upright["positions"].double())
    assert offset[mask].abs().max() < 1e-5
    digit = upright["labels"]
    expected = torch.where((digit < 4) & (new.abs() > math.radians(22.5)), digit + 10, digit)
    assert torch.equal(out["labels"], expected)
    assert 0 < (out["labels"] >= 10).sum() < (digit < 4).sum()
    torch.testing.assert_close(out["features"][..., :2], batch["features"][..., :2])
    if plain:  # the plain coordinates turn with the angles
        radius = out["features"][..., 1]
        turned = torch.stack((radius * out["positions"].cos(), radius * out["positions"].sin()), dim=-1)
        torch.testing.assert_close(out["features"][..., 2:][mask], turned[mask], atol=1e-5, rtol=0)


def test_digit_planar_points_are_the_turned_pixel_centres():
    """Planar points against the angle encoding of the same images: radius and angle agree; the in-range
    resampling and the full-circle transform turn every point of an image by its image's one angle."""
    options = dict(rotation_range=45.0, train_size=100)
    planar_task = RotatedDigits(RotatedDigits.Options(planar_points=True, **options))
    planar = planar_task.build()["train"][:100]
    geo = RotatedDigits(RotatedDigits.Options(**options)).build()["train"][:100]
    mask = geo["attention_mask"].bool()
    points = planar["positions"]
    assert points.shape[-1] == 2 and planar["features"].shape[-1] == 1
    torch.testing.assert_close(points.norm(dim=-1)[mask], 5.0 * geo["features"][..., 1][mask])
    angle = torch.atan2(points[..., 1], points[..., 0])
    assert _wrapped(angle - geo["positions"])[mask].abs().max() < 1e-5
    assert points[~mask].abs().max() == 0  # padding at 0
    out = planar_task.resample_orientation(planar, torch.Generator().manual_seed(5))
    turn = _wrapped(torch.atan2(out["positions"][..., 1], out["positions"][..., 0]) - angle)
    expected = (out["rotation"] - planar["rotation"])[:, None].float()
    assert _wrapped(turn - expected)[mask].abs().max() < 1e-4
    torch.testing.assert_close(out["positions"].norm(dim=-1), points.norm(dim=-1))
    moved = planar_task.transform(dict(planar), torch.Generator().manual_seed(3))["positions"]
    turn = _wrapped(torch.atan2(moved[..., 1], moved[..., 0]) - angle)
    assert ((turn - turn[:, :1]).abs() * mask).amax() < 1e-4
    with pytest.raises(ConfigError, match="planar_points: the plain features"):
        RotatedDigits.Options(planar_points=True, plain_features=True)


@pytest.mark.parametrize("absolute_fraction", [0.0, 1.0])
def test_motif_labels_are_relative_unless_broken(absolute_fraction):
    options = Motifs.Options(absolute_fraction=absolute_fraction, train_size=300)
    data = _first(Motifs(options), count=300)
    tokens, labels = data["input_ids"], data["labels"]
    has_motif = ((tokens[:, :-3] == 1) & (tokens[:, 3:] == 2)).any(1).long()
    if absolute_fraction == 0:
        assert torch.equal(labels, has_motif)  # a function of relative positions only
    else:
        upper = data["positions"][:, 0] > options.max_offset // 2
        assert torch.equal(labels, has_motif ^ upper.long())
        assert 0.3 < upper.double().mean() < 0.7


def test_motif_transform_shifts_positions_and_plain_coordinates_alike():
    geo = _first(Motifs(Motifs.Options(train_size=20)))
    plain_task = Motifs(Motifs.Options(plain_features=True, train_size=20))
    plain = _first(plain_task)
    scale = plain_task.options.max_offset + plain_task.options.seq_len
    torch.testing.assert_close(plain["features"][..., 0] * scale, geo["positions"])
    generator = torch.Generator().manual_seed(0)
    moved = Motifs(Motifs.Options()).transform(dict(geo), generator)["positions"]
    shifted = Motifs(Motifs.Options(plain_features=True)).transform(
        {"input_ids": plain["input_ids"], "features": plain["features"]}, torch.Generator().manual_seed(0)
    )["features"]
    torch.testing.assert_close(shifted[..., 0] * scale, moved)
    gaps = moved[:, 1:] - moved[:, :-1]
    assert torch.equal(gaps, torch.ones_like(gaps))  # a translation keeps relative positions


@pytest.mark.parametrize(("eps", "field"), [(0.0, "linear"), (1.0, "linear"), (1.0, "quadratic")])
def test_rotor_energy_is_invariant_exactly_when_the_field_is_off(eps, field):
    q = quaternion.random(64, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = quaternion.random(64, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    R, turned = quaternion.to_matrix(q).numpy(), quaternion.to_matrix(quaternion.multiply(h, q)).numpy()
    before, after = (_rotor_energy(x, eps, "exp", field) for x in (R, turned))
    if eps == 0:
        np.testing.assert_allclose(after, before, atol=1e-10)
    else:
        assert np.abs(after - before).max() > 0.1
    # slow reference: the double sum written out
    J = lambda d: math.exp(-(d - 1))  # noqa: E731
    k = 5
    pair = sum(J(j - i) * np.trace(R[k, i].T @ R[k, j]) for i in range(6) for j in range(i + 1, 6))
    zz = R[k, :, 2, 2]
    assert math.isclose(before[k], -pair - eps * (zz if field == "linear" else zz**2).sum(), rel_tol=1e-12)


def test_rotor_targets_are_standardised_and_plain_entries_rotate_with_the_quaternions():
    task = RotorChain(RotorChain.Options(eps=1.0, train_size=2000, test_size=10, validation_size=10))
    labels = task.build()["train"][:]["labels"]
    assert abs(float(labels.mean())) < 0.1 and abs(float(labels.std()) - 1) < 0.1
    plain_task = RotorChain(RotorChain.Options(plain_features=True, train_size=8))
    plain = _first(plain_task, count=8)
    R = quaternion.to_matrix(plain["orientations"].double())
    torch.testing.assert_close(plain["features"][..., :9].double(), R.reshape(8, -1, 9), atol=1e-6, rtol=0)
    inputs, _ = plain_task.inputs(plain)
    moved = plain_task.transform(inputs, torch.Generator().manual_seed(4))["features"]
    geo_task = RotorChain(RotorChain.Options(train_size=8))
    geo_inputs, _ = geo_task.inputs(_first(geo_task, count=8))
    turned = geo_task.transform(geo_inputs, torch.Generator().manual_seed(4))["positions"]["orientation"]
    expected = quaternion.to_matrix(turned.double()).reshape(8, -1, 9)
    torch.testing.assert_close(moved[..., :9].double(), expected, atol=1e-5, rtol=0)
