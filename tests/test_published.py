"""The published-protocol benchmarks: the N-body simulator against physics (Newton's third law, energy,
rotations), its calibration against the protocol's trivial baselines, EGNN's E(3) equivariance, and the
runner in quick mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.published import field
from benchmarks.published.__main__ import main
from benchmarks.published.digits import rasterise
from benchmarks.published.egnn import EGNN
from benchmarks.published.field import ONSET_STEP, parse_cells, random_rotations
from benchmarks.published.inertia import equivariant_floor, inertia_tensors, make_splits
from benchmarks.published.nbody import (
    DT,
    SAMPLE_EVERY,
    Systems,
    forces,
    linear_dynamics_mse,
    linear_dynamics_time,
    load_splits,
    make_split,
    simulate,
    time_reversed,
    trivial_baselines,
)
from benchmarks.published.report import reversal_rows
from geo_pe import quaternion
from geo_pe.testing import assert_equivariant


def spread_out(count: int, seed: int) -> np.ndarray:
    """Particles far enough apart that no force component reaches the clip at 100."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, 5, 3)) * 3


def test_forces_are_coulomb_pairs_rotating_with_the_system():
    x, charges = spread_out(6, 0), np.random.default_rng(1).choice([-1.0, 1.0], size=(6, 5))
    f = forces(x, charges)
    np.testing.assert_allclose(f.sum(axis=1), 0, atol=1e-12)  # Newton's third law
    r = x[0, 0] - x[0, 1]
    two = forces(x[:1, :2], charges[:1, :2])[0, 0]
    np.testing.assert_allclose(two, charges[0, 0] * charges[0, 1] * r / np.linalg.norm(r) ** 3)
    R = quaternion.to_matrix(quaternion.random(generator=2, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(forces(x @ R.T, charges), f @ R.T, atol=1e-12)
    close = np.array([[[0, 0, 0], [1e-3, 0, 0]]], dtype=float)
    assert np.abs(forces(close, np.ones((1, 2)))).max() == 100.0  # clipped per component


def test_the_simulation_conserves_energy_and_starts_as_specified():
    run = simulate(64, seed=3, frames=10)
    p, v, q = run["positions"], run["velocities"], run["charges"]
    assert p.shape == (64, 11, 5, 3) and set(np.unique(q)) == {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(v[:, 0], axis=-1), 0.5)  # frame 0: speeds 0.5

    def energy(x, v):
        r = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)
        i, j = np.triu_indices(5, 1)
        return 0.5 * (v**2).sum((-1, -2)) + (q[:, i] * q[:, j] / r[:, i, j]).sum(-1)

    # energy is conserved up to the integrator's O(dt) error, except in close encounters (clipped
    # forces, which may fall between the sampled frames)
    drift = np.abs(energy(p[:, -1], v[:, -1]) - energy(p[:, 0], v[:, 0]))
    assert np.median(drift) < 2 * DT and np.mean(drift < 10 * DT) > 0.6


def test_the_protocol_is_calibrated_against_its_trivial_baselines(tmp_path):
    """On 400 / 400 systems the three trivial baselines land at the protocol's 0.27 / 0.11 / 0.07."""
    splits = load_splits(tmp_path, sizes={"train": 400, "test": 400})
    baselines = trivial_baselines(splits["train"], splits["test"])
    assert abs(baselines["start_position"] - 0.27) < 0.04
    assert abs(baselines["constant_velocity"] - 0.11) < 0.025
    assert abs(baselines["pooled_linear"] - 0.07) < 0.02
    assert abs(baselines["linear_dynamics"] - 0.0819) < 0.012  # EGNN's "Linear", Table 2
    again = load_splits(tmp_path, sizes={"train": 400, "test": 400})  # from the cache, unchanged
    np.testing.assert_array_equal(again["test"].positions, splits["test"].positions)


def test_a_field_switched_on_at_the_input_frame_is_invisible_and_costs_eps_squared_over_12():
    """Same seed with and without the field: identical inputs; the targets differ by the drift
    0.5 q eps e_z, so a model that cannot see the field's direction misses by eps^2 / 12 (median system;
    close encounters amplify the difference in a few)."""
    free, onset = make_split(300, 5), make_split(300, 5, field=0.3, field_from=ONSET_STEP)
    np.testing.assert_array_equal(onset.positions, free.positions)
    np.testing.assert_array_equal(onset.velocities, free.velocities)
    per_system = ((onset.target_positions - free.target_positions) ** 2).mean(axis=(1, 2))
    assert np.median(per_system) == pytest.approx(field.equivariant_floor(0.3, "onset"), rel=0.05)
    assert field.equivariant_floor(0.3, "throughout") == 0.0


def test_a_field_acting_throughout_shows_in_the_input_velocities():
    """The control: the charge-weighted velocities at the input frame point along the field."""
    systems = make_split(300, 6, field=1.0, field_from=0)
    drift = (systems.charges[..., None] * systems.velocities).sum(1)  # (N, 3)
    assert drift[:, 2].mean() > 10 * np.abs(drift[:, :2].mean(0)).max()
    assert drift[:, 2].mean() > 1.0  # 3 time units of q eps on 5 particles, less the interactions


def test_random_rotations_are_rotations_spread_over_so3():
    rotations = random_rotations(4000, torch.Generator().manual_seed(0)).double()
    eye = torch.eye(3, dtype=torch.float64).expand(4000, 3, 3)
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        torch.linalg.det(rotations), torch.ones(4000, dtype=torch.float64), atol=1e-5, rtol=0
    )
    assert rotations.mean(0).abs().max() < 0.05  # Haar: E[R] = 0


def test_field_cells_name_the_bad_entry():
    assert parse_cells("onset:0, throughout:0.3") == [("onset", 0.0), ("throughout", 0.3)]
    with pytest.raises(ValueError, match="--field-cells: 'sideways:1'"):
        parse_cells("onset:1,sideways:1")


@pytest.mark.parametrize("input_distance_edges", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_egnn_is_e3_equivariant_and_permutation_equivariant(dtype, input_distance_edges):
    torch.manual_seed(0)
    model = EGNN(input_distance_edges=input_distance_edges).to(dtype)
    if input_distance_edges:  # the released script's details: a second edge attribute, no bias in phi_x
        layer = model.layers[0]
        assert layer.edge[0].in_features == 2 * 64 + 1 + 2 and layer.coordinate[-1].bias is None
    gen = torch.Generator().manual_seed(1)
    x, v = torch.randn(4, 5, 3, generator=gen, dtype=dtype), torch.randn(4, 5, 3, generator=gen, dtype=dtype)
    q = torch.randint(0, 2, (4, 5), generator=gen).to(dtype) * 2 - 1

    def sample(generator):
        R = quaternion.to_matrix(quaternion.random(generator=generator, dtype=dtype))
        return R, torch.randn(3, generator=generator, dtype=dtype)

    def moved(g, inputs):
        R, t = g
        x, v, q = inputs
        return x @ R.T + t, v @ R.T, q

    assert_equivariant(model, (x, v, q), sample, act_in=moved, act_out=lambda g, y: y @ g[0].T + g[1])
    order = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(model(x[:, order], v[:, order], q[:, order]), model(x, v, q)[:, order])


def test_a_peer_with_a_weight_average_keeps_and_scores_the_average():
    """``train_peer(..., ema_decay)``: the returned model is the average at its best evaluation, and its
    validation MSE is that model's (one evaluation per epoch, the last one the best or not)."""
    splits = {
        k: make_split(n, seed) for k, n, seed in (("train", 40, 0), ("validation", 20, 1), ("test", 20, 2))
    }
    plain = field.train_peer(EGNN, splits, epochs=3, eval_every=1, log=False)
    averaged = field.train_peer(EGNN, splits, epochs=3, eval_every=1, log=False, ema_decay=0.9)
    assert averaged["validation_mse"] != plain["validation_mse"]
    torch.testing.assert_close(
        field.evaluate(averaged["model"], splits["validation"]), averaged["validation_mse"]
    )


def test_inertia_targets_and_the_equivariant_floor():
    """The inertia tensor against a loop; ModifiedInertia scales its third column by 1.3; an O(3) map's
    best error on the broken task (the closed form) equals a Monte Carlo rotation average's."""
    splits = make_splits(0, 0.3, {"test": 200})
    s = splits["test"]
    m, r = s.masses[0], s.positions[0]
    loop = sum(m[i] * (r[i] @ r[i] * np.eye(3) - np.outer(r[i], r[i])) for i in range(5))
    np.testing.assert_allclose(s.targets[0][:, :2], loop[:, :2])
    np.testing.assert_allclose(s.targets[0][:, 2], 1.3 * loop[:, 2])
    inertia = inertia_tensors(s.masses, s.positions)
    averaged = np.zeros_like(inertia)
    rotations = quaternion.to_matrix(quaternion.random(4000, generator=1, dtype=torch.float64)).numpy()
    for R in rotations:  # R^T B(R I R^T) R, with B the breaking map
        broken = R @ inertia @ R.T
        broken[..., :, 2] *= 1.3
        averaged += R.T @ broken @ R
    averaged /= len(rotations)
    monte_carlo = float(((averaged - s.targets) ** 2).mean())
    assert abs(monte_carlo - equivariant_floor(s, 0.3)) < 0.03 * equivariant_floor(s, 0.3)
    assert equivariant_floor(make_splits(0, 0.0, {"test": 50})["test"], 0.0) == 0.0


@pytest.mark.parametrize("sigma", [None, 0.75], ids=["bilinear", "gaussian"])
def test_rasterised_digits_turn_with_the_cloud(sigma):
    """Rotating the points by a quarter turn rotates the rasterised image by a quarter turn (the grid is
    symmetric about its centre), and intensity is conserved inside the grid."""
    gen = torch.Generator().manual_seed(0)
    features = torch.stack((torch.rand(3, 20, generator=gen), torch.rand(3, 20, generator=gen) * 0.9), -1)
    angles, mask = torch.rand(3, 20, generator=gen) * 6.28, torch.ones(3, 20)
    image = rasterise(features, angles, mask, sigma=sigma)
    turned = rasterise(features, angles, mask, torch.full((3,), torch.pi / 2), sigma=sigma)
    torch.testing.assert_close(turned, torch.rot90(image, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(image.sum((1, 2, 3)), features[..., 0].sum(-1))
    if sigma is not None:  # a point's Gaussian peaks at the pixel nearest to it
        point = rasterise(features[:1, :1], torch.zeros(1, 1), torch.ones(1, 1), sigma=sigma)[0, 0]
        x = features[0, 0, 1] * 5.0  # on the x axis: the middle rows, the column nearest to x
        column = int(torch.argmin((torch.linspace(-6.0, 6.0, 16) - x).abs()))
        assert int(point.argmax()) % 16 == column and int(point.argmax()) // 16 in (7, 8)


def test_time_reversed_systems_run_forward_to_the_input_frame():
    """Leapfrog is time-reversible: the simulator run from a reversed example lands on the input frame,
    exactly once the one kick only the force law knows is added, and within that kick's drift without
    it (the stored data alone, which is what `time_reversed` uses)."""
    run = simulate(50, 5, frames=2)
    p, v, q = run["positions"], run["velocities"], run["charges"]
    systems = Systems(q, p[:, 1], v[:, 1], p[:, 2], v[:, 2])  # 100 steps apart
    backwards = time_reversed(systems)
    np.testing.assert_array_equal(backwards.velocities, -systems.target_velocities)  # no force law used
    np.testing.assert_array_equal(time_reversed(backwards).positions, systems.positions)
    kick = DT * forces(backwards.positions, q)  # v_{T+1/2} - v_{T-1/2}: the oracle's, not the data's

    def forward(u):
        x, u = backwards.positions, u + DT * forces(backwards.positions, q)  # the simulator's first kick
        for _ in range(SAMPLE_EVERY):
            x = x + DT * u
            u = u + DT * forces(x, q)
        return x

    np.testing.assert_allclose(forward(backwards.velocities - kick), systems.positions, rtol=0, atol=1e-12)
    drift = np.abs(forward(backwards.velocities) - systems.positions).max(axis=(1, 2))
    one_kick = SAMPLE_EVERY * DT * np.abs(kick).max(axis=(1, 2))  # that kick's drift over the 100 steps
    assert np.all(drift <= 4 * one_kick + 1e-12) and drift.max() > 0


def test_linear_dynamics_is_the_least_squares_time():
    """x_T ~ x_0 + t v_0: an exact t is found back with zero error, and on simulated systems the fitted t
    is the minimum of the training MSE."""
    systems = make_split(50, 3)
    exact = Systems(systems.charges, systems.positions, systems.velocities,
                    systems.positions + 0.6 * systems.velocities, systems.target_velocities)  # fmt: skip
    assert linear_dynamics_time(exact) == pytest.approx(0.6, abs=1e-12)
    assert linear_dynamics_mse(exact, 0.6) == pytest.approx(0.0, abs=1e-20)
    t = linear_dynamics_time(systems)
    assert 0.3 < t < 1.0  # deflected paths fall short of the straight line (t = 1) on average
    best = linear_dynamics_mse(systems, t)
    assert best < linear_dynamics_mse(systems, t - 1e-3) and best < linear_dynamics_mse(systems, t + 1e-3)


@pytest.mark.slow  # every benchmark end to end (about 140 s); the report's pieces are tested below
def test_the_runner_writes_every_benchmark_and_the_report_in_quick_mode(tmp_path):
    args = ["all", "--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "published_quick.json").read_text())
    expected = {"nbody_mse", "nbody_method", "nbody_egnn_reimplemented_mse", "nbody_geo_mse", "inertia_mse",
                "modified_inertia_mse", "modified_inertia_mlp_mse", "digits_min_margin_points",
                "field_geo_best_or_tied_cells", "inertia_geo_fresh_mse", "inertia_geo_fresh_median_mse",
                "modified_inertia_geo_fresh_mse", "modified_inertia_geo_fresh_median_mse",
                "digits_geo_min_margin_points", "digits_geo_min_margin_points_by_cell",
                "digits_geo_margin_methods", "nbody_egnn_fresh_mse", "nbody_egnn_equal_epochs_mse",
                "nbody_egnn_published_at_our_difficulty"}  # fmt: skip
    assert set(summary) == expected
    nbody_run = json.loads((tmp_path / "nbody_quick.json").read_text())
    shipped = json.loads((tmp_path / "shipped_quick.json").read_text())
    fresh_linear = sum(shipped["fresh_nbody_linear_dynamics"].values()) / 2  # 2 fresh seeds
    scaled = {"test": 0.0071 * nbody_run["linear_dynamics_by_split"]["test"] / 0.0819,
              "fresh": 0.0071 * fresh_linear / 0.0819}  # fmt: skip
    assert summary["nbody_egnn_published_at_our_difficulty"] == pytest.approx(scaled)
    assert nbody_run["linear_dynamics_by_split"]["test"] == nbody_run["trivial_baselines"]["linear_dynamics"]
    wins, cells = map(int, summary["field_geo_best_or_tied_cells"].split("/"))
    assert cells == 2 and 0 <= wins <= cells  # the quick run's two onset cells
    inertia = json.loads((tmp_path / "inertia_quick.json").read_text())
    (run,) = inertia["modified_inertia"]["geo_transformer"]
    assert set(run["fresh"]) == {"7", "8", "all"} and run["fresh"]["all"]["systems"] == 400  # 2 x 200 afresh
    assert summary["modified_inertia_geo_fresh_mse"] == pytest.approx(run["fresh"]["all"]["mean"])
    assert run["fresh"]["all"]["median"] <= run["fresh"]["all"]["p90"] <= run["fresh"]["all"]["max"]
    assert "EMLP O(3) (*quoted*) | 1.19" in (tmp_path / "PUBLISHED_quick.md").read_text()
    (geo,) = json.loads((tmp_path / "nbody_quick.json").read_text())["geo_transformer"]
    assert set(geo["fresh_test_mse"]) == {"7", "8"}  # the model scored on systems simulated afresh
    assert summary["nbody_geo_mse"] == pytest.approx(sum(geo["fresh_test_mse"].values()) / 2)
    cells = json.loads((tmp_path / "field_quick.json").read_text())["cells"]
    assert set(cells) == {"onset_eps0", "onset_eps1"} and cells["onset_eps1"]["equivariant_floor"] == 1 / 12
    assert set(cells["onset_eps1"]["methods"]) == {"equivariant", "two_phase", "unconstrained", "plain",
                                                   "plain_augmented", "egnn"}  # fmt: skip
    assert (tmp_path / "field_quick.png").is_file()
    variants = json.loads((tmp_path / "inertia_variants_quick.json").read_text())["variants"]
    assert set(variants) == {"modified_commutant", "modified_scalar_identity"}
    assert variants["modified_scalar_identity"]["phases"][0]["phase"] == "scalar_identity"
    assert "Phase I to validation MSE" in (tmp_path / "PUBLISHED_quick.md").read_text()
    digits = json.loads((tmp_path / "digits_quick.json").read_text())
    assert {r["method"] for r in digits["rows"]} == {"rbf_svm", "cnn", "cnn_aug"}
    geo = json.loads((tmp_path / "digits_geo_quick.json").read_text())
    assert geo["chosen_size"] == "h32x2" and len(geo["final"]) == 1
    schedules = {r["labels"]["method"]: r for r in geo["schedules"]}
    assert set(schedules) == {"unconstrained", "adaptive", "scalar_identity"}
    assert schedules["scalar_identity"]["phases"][0]["phase"] == "scalar_identity"
    assert [p["phase"] for p in schedules["unconstrained"]["phases"]] == ["free"]
    # the margin is the tuned two-phase run's accuracy minus the best baseline's, in points
    best_baseline = max(v[0] for v in digits["summary"]["rotated_45"]["50"].values())
    expected_margin = 100 * geo["final"][0]["test"] - best_baseline
    assert summary["digits_min_margin_points"] == pytest.approx(expected_margin)
    (augmented,) = geo["augmented"]  # in-range augmentation in phase II, data seed 0 in quick mode
    assert augmented["labels"]["method"] == "two_phase_augmented"
    assert augmented["overrides"]["in_range_augmentation"] == "phase2"
    # where the planar model ran (pixels as points, distance biases), the headline margin is its own
    (planar,) = geo["planar"]
    assert geo["planar_size"] == planar["labels"]["size"] == "planar_h32x2"
    assert planar["overrides"]["planar_points"] and planar["overrides"]["distance_bias"] == 8
    assert planar["overrides"]["in_range_augmentation"] == "phase2"
    # the headline: per data seed and size, the best of the augmented models on validation (angles,
    # planar points, planar points with local descriptors; the earlier on a tie)
    (described,) = geo["descriptors"]
    chosen = augmented
    for candidate in (planar, described):
        chosen = candidate if candidate["validation"] > chosen["validation"] else chosen
    expected_margin = 100 * chosen["test"] - best_baseline
    assert summary["digits_geo_min_margin_points"] == pytest.approx(expected_margin)
    assert summary["digits_geo_min_margin_points_by_cell"] == {"rotated_45": pytest.approx(expected_margin)}
    assert summary["digits_geo_margin_methods"] == {"rotated_45": "selected_on_validation"}
    assert "Pixels as planar points" in (tmp_path / "PUBLISHED_quick.md").read_text()
    upright, upright_free, upright_described = geo["upright"]  # the control: no rotation, the planar size
    assert (
        upright_described["overrides"]["local_descriptor_shells"]
        and upright_described["overrides"]["rotation_range"] == 0.0
    )
    assert upright["overrides"]["rotation_range"] == 0.0 and upright["labels"]["size"] == geo["planar_size"]
    assert (
        upright_free["overrides"]["rotation_range"] == 0.0
        and upright_free["labels"]["method"] == "planar_free"
    )
    (free,) = geo["free"]  # the same model with no symmetry prior at +-45 degrees
    # the planar model with local descriptors, +-45 degrees
    assert (
        described["overrides"]["local_descriptor_shells"]
        and described["labels"]["size"] == geo["planar_size"]
    )
    assert free["overrides"]["phase1_constraint"] == "free" and free["overrides"]["rotation_range"] == 45.0
    assert sorted(r["method"] for r in geo["upright_baselines"]) == ["cnn", "rbf_svm"]
    assert "The upright control" in (tmp_path / "PUBLISHED_quick.md").read_text()
    assert "size, chosen on validation" in (tmp_path / "PUBLISHED_quick.md").read_text()


def test_the_model_chosen_on_validation_is_the_better_of_the_two_per_run():
    from benchmarks.published import digits_geo

    def run(method, data_seed, validation, test, size=50):
        labels = {"cell": "rotated_45", "train_size": size, "method": method, "data_seed": data_seed}
        return {"labels": labels, "validation": validation, "test": test}

    augmented = [run("two_phase_augmented", 0, 0.8, 0.7), run("two_phase_augmented", 1, 0.6, 0.9),
                 run("two_phase_augmented", 2, 0.5, 0.5)]  # fmt: skip
    planar = [run("planar_augmented", 0, 0.7, 0.9), run("planar_augmented", 1, 0.7, 0.6),
              run("planar_augmented", 2, 0.5, 0.8), run("planar_augmented", 3, 0.9, 0.9)]  # fmt: skip
    chosen = digits_geo.selected_on_validation(augmented, planar)
    assert [r["chosen"] for r in chosen] == ["two_phase_augmented", "planar_augmented", "two_phase_augmented"]
    assert [r["test"] for r in chosen] == [0.7, 0.6, 0.5]  # never the better test score; ties: angles
    assert {r["labels"]["method"] for r in chosen} == {"selected_on_validation"}
    result = {"final": [], "schedules": [], "augmented": augmented, "planar": planar}
    mean, _ = digits_geo.summary(result)["rotated_45"]["50"]["selected_on_validation"]
    assert mean == pytest.approx(100 * (0.7 + 0.6 + 0.5) / 3)
    # with the descriptor model where it ran: the best of three on validation, the earlier on a tie
    descriptors = [run("planar_descriptors", 0, 0.9, 0.4), run("planar_descriptors", 1, 0.7, 1.0),
                   run("planar_descriptors", 3, 1.0, 1.0)]  # fmt: skip
    chosen = digits_geo.selected_on_validation(augmented, planar, descriptors)
    assert [r["chosen"] for r in chosen] == ["planar_descriptors", "planar_augmented", "two_phase_augmented"]
    assert [r["test"] for r in chosen] == [0.4, 0.6, 0.5]  # seed 3 has no angle run: not selected
    summary = digits_geo.summary({**result, "descriptors": descriptors})["rotated_45"]["50"]
    assert summary["planar_descriptors"][0] == pytest.approx(100 * 2.4 / 3)
    assert summary["selected_on_validation"][0] == pytest.approx(100 * 1.5 / 3)


def test_the_baselines_see_the_geo_transformers_split_and_drop_rows_of_another(tmp_path):
    """Per data seed the baselines train, validate and test on the very images, rotations and labels of
    the geo transformer's run of that cell; cached rows from another split are not reused."""
    import json

    from benchmarks.experiments.runner import build_config
    from benchmarks.published import digits, digits_geo
    from train.tasks import RotatedDigits

    cell = digits.load_cell(45.0, 0, 50, 2)
    run = digits_geo.spec("rotated_45", 50, "planar_h32x4", "planar_augmented", 2, data_seed=2)
    config = build_config(run, str(tmp_path / "run"))
    assert config.data.test_fraction == digits.TEST_FRACTION
    splits = RotatedDigits(config.data).build()
    for name in ("train", "validation", "test"):
        split = splits[name].with_format("torch")[:]
        assert torch.equal(split["labels"], cell[name]["labels"])
        torch.testing.assert_close(split["rotation"].double(), cell[name]["rotation"])
    cache = tmp_path / "rows.jsonl"
    stale = {"cell": "rotated_45", "train_size": 50, "method": "rbf_svm", "data_seed": 0, "test": 2.0}
    cache.write_text(json.dumps(stale) + "\n")  # no test_fraction: the split before it was recorded
    (row,) = digits.run(data_seeds=1, sizes=(50,), cells={"rotated_45": (45.0, 0)}, cache=cache,
                        log=lambda r: None, methods=("rbf_svm",))  # fmt: skip
    assert row["test_fraction"] == digits.TEST_FRACTION and 0 < row["test"] <= 1
    again = digits.run(data_seeds=[0], sizes=(50,), cells={"rotated_45": (45.0, 0)}, cache=cache,
                       log=lambda r: None, methods=("rbf_svm",))  # fmt: skip
    assert again == [row] and len(cache.read_text().splitlines()) == 2  # reused, not refitted


def test_digits_geo_specs_are_valid_configs_and_the_size_is_chosen_on_validation(tmp_path):
    from benchmarks.experiments.runner import build_config
    from benchmarks.published import digits_geo

    sizes = {**digits_geo.SIZES, **digits_geo.PLANAR_SIZES}
    for size in sizes:
        for method in digits_geo.SCHEDULES:
            config = build_config(digits_geo.spec("tilt_45", 300, size, method, 0), str(tmp_path))
            assert config.model.hidden_size == sizes[size]["hidden_size"]
            assert config.training.early_stopping_patience == digits_geo.PATIENCE
            assert config.data.tilt_digits == 10 and config.data.rotation_range == 45.0
    records = [
        {"labels": {"size": "a"}, "validation": 0.9}, {"labels": {"size": "a"}, "validation": 0.5},
        {"labels": {"size": "b"}, "validation": 0.8}, {"labels": {"size": "b"}, "validation": 0.7},
    ]  # fmt: skip
    assert digits_geo.choose_size(records) == "b"  # mean 0.75 beats 0.70, though "a" has the best run
    with pytest.raises(SystemExit):
        main(["digits_geo", "--jobs", "0"])


def test_the_upright_control_turns_nothing_and_sits_beside_the_45_degree_cell(tmp_path):
    from benchmarks.experiments.runner import build_config
    from benchmarks.published import digits, digits_geo
    from benchmarks.published.report import upright_methods, upright_section

    upright = digits_geo.upright_spec("planar_h32x4", 3)
    config = build_config(upright, str(tmp_path))
    assert config.data.rotation_range == 0.0 and config.data.train_size == digits_geo.UPRIGHT_SIZE
    assert config.data.planar_points and config.data.data_seed == 3 and config.training.seed == 3
    turned = digits_geo.spec("rotated_45", 50, "planar_h32x4", "planar_augmented", 3, data_seed=3)
    assert upright.key != turned.key and upright.labels == {**turned.labels, "cell": "upright"}
    # the control without a symmetry prior: one free phase with both phases' steps, augmented throughout
    free = build_config(digits_geo.upright_spec("planar_h32x4", 3, method="planar_free"), str(tmp_path))
    assert free.training.phase1_constraint == "free" and free.training.phase2 == "none"
    assert free.training.phase1_steps == 2 * digits_geo.PHASE_STEPS and free.data.rotation_range == 0.0
    assert free.training.in_range_augmentation == "all" and free.data.planar_points

    def run(method, test, cell="upright"):
        return {"labels": {"cell": cell, "train_size": 50, "method": method}, "test": test}

    planar = [run("planar_augmented", 0.6), run("planar_augmented", 0.7)]
    result = {"upright": [*planar, run("planar_free", 0.66)],
              "free": [run("planar_free", 0.64, "rotated_45"), run("planar_free", 0.68, "rotated_45")],
              "upright_baselines": [{"method": "cnn", "test": 0.8}, {"method": "cnn", "test": 0.9},
                                    {"method": "rbf_svm", "test": 0.85}]}  # fmt: skip
    methods = upright_methods(result)
    assert methods["planar_augmented"] == pytest.approx((65.0, 5.0))  # population std, as every table
    assert methods["cnn"] == pytest.approx((85.0, 5.0)) and methods["rbf_svm"] == pytest.approx((85.0, 0.0))
    assert methods["planar_free"] == pytest.approx((66.0, 0.0))
    assert upright_methods(result, "free") == {"planar_free": pytest.approx((66.0, 2.0))}  # no baselines
    baselines = {"rotated_45": {"50": {"cnn_aug": (76.5, 1.8), "cnn": (62.1, 4.3)}}}
    geo = {"rotated_45": {"50": {"planar_augmented": (65.4, 6.8)}}}
    table = upright_section(result, baselines, geo)
    assert "| upright | 85.0 ± 0.0 | 85.0 ± 5.0 |  | 65.0 ± 5.0 | 66.0 ± 0.0 |  |" in table
    assert "| rotated_45 (±45°) |  | 62.1 ± 4.3 | 76.5 ± 1.8 | 65.4 ± 6.8 | 66.0 ± 2.0 |  |" in table
    result["upright"].append(run("planar_descriptors", 0.8))  # the descriptor model, beside the others
    geo["rotated_45"]["50"]["planar_descriptors"] = (74.4, 4.3)
    table = upright_section(result, baselines, geo)
    assert "| upright | 85.0 ± 0.0 | 85.0 ± 5.0 |  | 65.0 ± 5.0 | 66.0 ± 0.0 | 80.0 ± 0.0 |" in table
    assert (
        "| rotated_45 (±45°) |  | 62.1 ± 4.3 | 76.5 ± 1.8 | 65.4 ± 6.8 | 66.0 ± 2.0 | 74.4 ± 4.3 |" in table
    )
    assert upright_section({"upright": []}, baselines, geo) == []  # the control has not run
    with pytest.raises(ValueError, match=r"methods: unknown \['cnn_augmented'\]"):
        digits.run(data_seeds=1, sizes=(50,), methods=("cnn", "cnn_augmented"))


def test_the_shipped_models_hold_on_fresh_data():
    """Systems drawn with a seed no split used: the ModifiedInertia model stays below the error floor of
    every O(3)-equivariant map (0.635), the N-body model far below constant velocity (0.11)."""
    from benchmarks.published import shipped

    assert shipped.modified_inertia_mse(shipped.load("modified_inertia"), seed=11, count=500) < 0.6
    assert shipped.nbody_mse(shipped.load("nbody"), seed=11, count=300) < 0.03


@pytest.mark.slow  # three short N-body trainings (about 35 s)
def test_the_nbody_runner_caches_each_seed_and_its_wall_time_budget(tmp_path):
    args = ["nbody", "--quick", "--skip-geo", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    result = json.loads((tmp_path / "nbody_quick.json").read_text())
    assert set(result["trivial_baselines"]) == {
        "start_position", "constant_velocity", "pooled_linear", "linear_dynamics"
    }  # fmt: skip
    assert result["published"]["EGNN"] == 0.0071 and result["geo_transformer"] == []
    (run,) = result["egnn"]  # quick: the first of --run-seeds only
    assert run["seed"] == 0 and run["test_mse"] > 0
    assert len(run["curve"]) == 2  # quick: 2 epochs, read after each
    assert main([*args, "--minutes", "0"]) == 0  # cached: kept, not retrained
    assert len(json.loads((tmp_path / "nbody_quick.json").read_text())["egnn"][0]["curve"]) == 2
    assert main([*args, "--minutes", "0", "--force"]) == 0  # the budget stops training at the first reading
    assert len(json.loads((tmp_path / "nbody_quick.json").read_text())["egnn"][0]["curve"]) == 1
    assert main([*args, "--skip-egnn", "--force"]) == 0  # --skip-egnn keeps the cached run under --force
    assert len(json.loads((tmp_path / "nbody_quick.json").read_text())["egnn"][0]["curve"]) == 1
    assert main([*args, "--run-seeds", "3", "--skip-egnn"]) == 0  # no cached run for seed 3: none trained
    assert json.loads((tmp_path / "nbody_quick.json").read_text())["egnn"] == []
    assert main([*args, "--egnn-ema-decay", "0.9"]) == 0  # the control: EGNN with a weight average
    result = json.loads((tmp_path / "nbody_quick.json").read_text())
    (control,) = result["egnn_ema"]
    assert control["ema_decay"] == 0.9 and control["test_mse"] != result["egnn"][0]["test_mse"]
    assert main([*args, "--time-reversal"]) == 0  # EGNN on the systems and their time-reversed copies
    (reversal,) = json.loads((tmp_path / "nbody_quick.json").read_text())["egnn_reversal"]
    assert reversal["method"] == "egnn_reversal" and reversal["test_mse"] != result["egnn"][0]["test_mse"]
    geo_args = ["nbody", "--quick", "--time-reversal", "--skip-egnn", "--out", str(tmp_path),
                "--cache", str(tmp_path / "cache")]  # fmt: skip
    assert main(geo_args) == 0  # the geo transformer too, in the quick run's few steps
    (geo,) = json.loads((tmp_path / "nbody_quick.json").read_text())["geo_transformer_reversal"]
    assert [p["best_step"] <= 8 for p in geo["phases"]] == [True, True]
    assert set(geo["fresh_test_mse"]) == {"7", "8"}


def test_time_reversed_runs_become_the_headline_with_the_protocol_figure_kept():
    def run(test, fresh):
        return {"phases": [{"validation_mse": 1.0, "test_mse": test, "phase": "free"}],
                "test_mse": test, "fresh_test_mse": {"7": fresh, "8": fresh}}  # fmt: skip

    nbody = {"egnn_reversal": [run(0.009, 0.008)],
             "geo_transformer_reversal": [run(0.007, 0.006), run(0.008, 0.007)]}  # fmt: skip
    summary = {"nbody_geo_mse": 0.0083}
    rows = reversal_rows(nbody, summary)
    assert len(rows) == 2 and "0.0075 ± 0.0005 (2) (fresh systems: 0.0065 ± 0.0005 (2))" in rows[1]
    assert summary["nbody_geo_mse"] == pytest.approx(0.0065)
    assert summary["nbody_geo_mse_protocol_data"] == 0.0083
    assert summary["nbody_egnn_reversal_fresh_mse"] == pytest.approx(0.008)


@pytest.mark.parametrize("text", ["", "1,1", "-1", "0,a"])
def test_run_seeds_name_the_argument(text, capsys):
    with pytest.raises(SystemExit):
        main(["report", "--run-seeds", text])
    assert "--run-seeds" in capsys.readouterr().err


def test_the_field_table_is_the_mean_and_std_over_seeds(tmp_path):
    """Per-seed runs of one cell aggregate to mean, population std and the seeds; a two-phase run also
    gives its phase I; a seed missing for one method leaves the others whole."""
    from benchmarks.published.__main__ import collect_field

    def write(method, seed, **run):
        labels = {"cell": "onset_eps1", "mode": "onset", "eps": 1.0, "method": method, "seed": seed}
        (tmp_path / f"onset_eps1_{method}_s{seed}.json").write_text(json.dumps({**labels, **run}))

    for seed, mse in enumerate((0.01, 0.03)):
        write("egnn", seed, test_mse=mse, seconds=10.0, best_epoch=1, max_minutes=3.5)
        phases = [{"test_mse": 0.1 + seed}, {"test_mse": mse / 2}]
        write("geo_two_phase", seed, phases=phases, selected_phase=2, wall_seconds=5.0)
    write("plain", 1, test_mse=0.5, seconds=10.0, best_epoch=1, max_minutes=3.5)
    cell = collect_field(tmp_path, 1000)["cells"]["onset_eps1"]
    assert cell["equivariant_floor"] == pytest.approx(1 / 12)
    egnn, two_phase = cell["methods"]["egnn"], cell["methods"]["two_phase"]
    assert egnn["test_mse"] == pytest.approx(0.02) and egnn["test_mse_std"] == pytest.approx(0.01)
    assert egnn["seeds"] == [0, 1] and egnn["test_mse_per_seed"] == [0.01, 0.03]
    assert two_phase["test_mse"] == pytest.approx(0.01)
    assert cell["methods"]["equivariant"]["test_mse"] == pytest.approx(0.6)
    assert cell["methods"]["plain"]["seeds"] == [1]


def test_variants_aggregate_over_seeds_and_the_residual_meets_two_phase_seed_for_seed():
    from benchmarks.published.report import variant_means, variants_section

    def run(name, seed, mse, breaking=0.3):
        phases = [{"phase": "residual", "test_mse": mse, "validation_mse": mse + 0.1}]
        return {"name": name, "seed": seed, "breaking": breaking, "phases": phases, "selected_phase": 1,
                "equivariant_floor": 0.6, "wall_seconds": 1.0, "curve": []}  # fmt: skip

    variants = {"modified_residual": run("modified_residual", 0, 0.2),
                "modified_residual_s1": run("modified_residual", 1, 0.4),
                "breaking_1": run("breaking_1", 0, 0.5, breaking=1.0)}  # fmt: skip
    assert variant_means(variants) == {"modified_residual": (0.3, [0.2, 0.4]), "breaking_1": (1.0, [0.5])}
    two_phase = {"phases": [{"phase": "free", "test_mse": 0.1, "validation_mse": 0.2}]}
    lines = variants_section(variants, {"modified_inertia": {"geo_transformer": [two_phase]}})
    expected = ("residual (RPP-style) 0.300 ± 0.100 (2) on the model before moment_readout, two-phase with "
                "moment_readout (`inertia`, same data per seed) 0.100 (1)")  # fmt: skip
    assert expected in "\n".join(lines)
    variants |= {"modified_residual_moment": run("modified_residual_moment", 0, 0.05),
                 "modified_residual_moment_s1": run("modified_residual_moment", 1, 0.15)}  # fmt: skip
    lines = variants_section(variants, {"modified_inertia": {"geo_transformer": [two_phase]}})
    expected = "before moment_readout, with moment_readout 0.100 ± 0.050 (2), two-phase with moment_readout"
    assert expected in "\n".join(lines)


def test_the_long_budget_line_takes_the_best_validated_phase_and_the_steps_run():
    from benchmarks.published.report import budget_lines

    def run(name, seed, best_step, steps, test, validation):
        phases = [
            {"phase": "equivariant", "best_step": 1000, "test_mse": 0.6, "validation_mse": 0.7},
            {"phase": "free", "best_step": best_step, "test_mse": test, "validation_mse": validation},
        ]
        return {"name": name, "seed": seed, "phases": phases, "curve": [{"step": 250}, {"step": steps}]}

    variants = {
        "modified_two_phase_long": run("modified_two_phase_long", 0, 7000, 9000, 0.004, 0.01),
        "modified_two_phase_long_s1": run("modified_two_phase_long", 1, 8000, 10000, 0.008, 0.02),
    }
    assert budget_lines(variants) == []  # the residual has not run
    variants |= {
        "modified_residual_moment_long": run("modified_residual_moment_long", 0, 11000, 12000, 0.003, 0.9),
        "modified_residual_moment_long_s1": run("modified_residual_moment_long", 1, 9500, 11500, 0.001, 0.01),
    }
    line, blank = budget_lines(variants)
    assert blank == "" and "two_phase_long 0.0060 ± 0.0020 (2), best validation at step 7000 / 8000" in line
    assert "of 9000 / 10000 run; modified_residual" in line  # the steps each run took, seed by seed
    # seed 0's free phase validates worse than its equivariant phase, so its test MSE is phase I's
    assert "modified_residual_moment_long 0.3005 ± 0.2995 (2), best validation at step 1000 / 9500" in line
