"""The experiment runner (benchmarks/experiments): methods are valid configs, the controls are what they
claim, learning rates are chosen by validation, the cache survives a torn line, and --quick regenerates
the tables and plots (a few suites by default; every suite with ``pytest -m slow``)."""

import json
from pathlib import Path

import pytest
import torch

from benchmarks.experiments.__main__ import choose_learning_rates, main
from benchmarks.experiments.runner import build_config, read_cache
from benchmarks.experiments.suites import SUITES, WIDE_INTERMEDIATE, Spec, make_specs, method_overrides
from geo_pe import quaternion
from train.checks import build_model


@pytest.mark.parametrize("name", list(SUITES))
def test_every_spec_is_a_valid_config(name, tmp_path):
    specs = make_specs(name, {}, quick=False)
    assert len({s.key for s in specs}) == len(specs)  # no two runs share a cache key
    for spec in specs[:: max(1, len(specs) // 12)]:
        if spec.base not in ("layerwise", "attention_layerwise"):
            build_config(spec, str(tmp_path / spec.key))


def test_the_wide_equivariant_control_has_the_phase_two_parameter_count(tmp_path):
    def trainable(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    two_phase = build_config(
        Spec("t", "digits", {}, method_overrides("two_phase_free", "digits")), str(tmp_path)
    )
    model = build_model(two_phase, two_phase.make_task())
    model.set_phase("free")
    wide = Spec(
        "t",
        "digits",
        {},
        {**method_overrides("equivariant", "digits"), "intermediate_size": WIDE_INTERMEDIATE},
    )
    wide_config = build_config(wide, str(tmp_path / "wide"))
    assert trainable(build_model(wide_config, wide_config.make_task())) == trainable(model)


@pytest.mark.parametrize(
    ("relative", "sees_pairs"),
    [({}, True), ({"pe_relative": "t1:4(base=20)+so3:1x0", "pe_relative_mode": "rotary"}, False)],
)
def test_the_rotor_model_carries_relative_orientations_into_the_scalars(relative, sees_pairs, tmp_path):
    """The rotor features are constant, so the pair energy reaches the invariant scalars only through the
    relative PE. With GTA over (index, orientation) (rotors.yaml) the phase I scalars vary with the
    orientations and ignore a global rotation; with rotary on index-only heads they are the same on every
    token of every chain, whatever the weights: why the first rotor grid learned nothing of the pair term."""
    spec = Spec("t", "rotors", {}, {**method_overrides("equivariant", "rotors"), **relative})
    config = build_config(spec, str(tmp_path))
    model = build_model(config, config.make_task()).model.double().eval()
    gen = torch.Generator().manual_seed(0)
    q = quaternion.random(6, 8, generator=gen, dtype=torch.float64)
    h = quaternion.random(6, 1, generator=gen, dtype=torch.float64)
    features, index = torch.ones(6, 8, 1, dtype=torch.float64), torch.arange(8.0).expand(6, 8)

    def scalars(orientation):
        positions = {"position": index, "orientation": orientation}
        out = model(features=features, positions=positions).last_hidden_state
        return out[..., : model.config.scalar_size]

    with torch.no_grad():
        before, turned = scalars(q), scalars(quaternion.multiply(h, q))
    torch.testing.assert_close(turned, before, atol=1e-10, rtol=1e-10)
    spread = (before - before[0, 0]).abs().max().item()
    assert spread > 1e-3 if sees_pairs else spread < 1e-10


def test_learning_rates_are_chosen_by_validation_in_the_right_direction():
    def record(method, task, lr, value, metric):
        labels = {"method": method, "task": task, "learning_rate": lr}
        return {"labels": labels, "validation": value, "metric": metric}

    records = [
        record("a", "digits", 1e-3, 0.7, "accuracy"),
        record("a", "digits", 1e-2, 0.8, "accuracy"),
        record("a", "digits", 1e-2, 0.7, "accuracy"),  # mean 0.75 still beats 0.7
        record("a", "rotors", 1e-3, 0.4, "mse"),
        record("a", "rotors", 1e-2, 0.5, "mse"),
    ]
    assert choose_learning_rates(records) == {"a": {"digits": 1e-2, "rotors": 1e-3}}


def test_the_cache_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps({"key": "k1", "test": 1.0}) + "\n" + '{"key": "k2", "te')
    assert list(read_cache(path)) == ["k1"]


def _check_quick_run(out: Path, names: list[str], expected_pngs: set[str]) -> None:
    """Tables, plots and cache of a quick run of ``names``; the report regenerates from the cache alone."""
    only = [] if set(names) == set(SUITES) else ["--only", *names]
    assert main(["--quick", "--out", str(out), "--jobs", "2", *only]) == 0
    report = (out / "RESULTS.md").read_text()
    for name in names:
        assert f"## {SUITES[name].title}" in report
    assert expected_pngs <= {p.name for p in out.glob("*.png")}
    runs = read_cache(out / "runs.jsonl")
    tuning = [r for r in runs.values() if r["suite"] == "tuning"]
    lrs = choose_learning_rates(tuning) if tuning else {}
    for name in set(SUITES) - set(names):  # a suite gets a section only if some of its runs are cached
        shares_runs = any(s.key in runs for s in make_specs(name, lrs, quick=True))
        assert (f"## {SUITES[name].title}" in report) == shares_runs, name
    # one run per distinct spec: a spec shared by two suites (same overrides) is run and cached once
    assert len(runs) == len({s.key for n in names for s in make_specs(n, {}, quick=True)})
    assert all("error" not in r for r in runs.values())
    # the report is a pure function of the cache: regenerating it changes nothing
    assert main(["--quick", "--out", str(out), "--report-only", *only]) == 0
    assert (out / "RESULTS.md").read_text() == report


@pytest.mark.slow  # about 60 s; a subset of the next test, for a quicker look at the runner
def test_quick_mode_on_three_suites_regenerates_their_tables_and_plots(tmp_path):
    names = ["tuning", "layerwise", "motifs", "rotors_eps"]
    pngs = {"layerwise_filters.png", "layerwise_natural_filters.png", "motifs.png", "rotors_eps.png"}
    _check_quick_run(tmp_path, names, pngs)


@pytest.mark.slow
def test_quick_mode_regenerates_every_table_and_plot(tmp_path):
    pngs = {f"{n}.png" for n in SUITES if n not in ("tuning", "layerwise", "layerwise_attention")}
    pngs |= {"layerwise_filters.png", "layerwise_natural_filters.png", "attention_maps.png"}
    _check_quick_run(tmp_path, list(SUITES), pngs)


def test_natural_patches_have_a_fixed_disjoint_split_and_no_mirror_symmetry():
    from benchmarks.experiments.patches import natural_patches

    train, test = natural_patches(size=16)
    assert train.shape[1:] == test.shape[1:] == (1, 16, 16) and train.dtype == torch.float32
    assert float(train.min()) >= 0.0 and float(train.max()) <= 1.0
    assert len(test) * 3 < len(train) < len(test) * 5  # one band in five is test
    again, _ = natural_patches(size=16)
    assert torch.equal(again, train)  # fixed: no randomness
    # no test patch appears in train
    flat_train = {tuple(p.flatten()[:32].tolist()) for p in train}
    assert not any(tuple(p.flatten()[:32].tolist()) in flat_train for p in test)
    # natural statistics: patches and their mirror images differ (digits' halves often coincide)
    mirror = train.flip(-1)
    assert float((train - mirror).abs().mean()) > 0.02
    colour, _ = natural_patches(size=8, grey=False)
    assert colour.shape[1:] == (3, 8, 8)
    with pytest.raises(ValueError, match=r"size: expected an integer >= 2"):
        natural_patches(size=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_phase_one_attention_autoencoder_is_exactly_mirror_equivariant(dtype):
    """The symmetrized weights commute with the mirror (pixels, tokens and channels), not with the vertical
    flip; release keeps the function; the toolkit reads exact layers and self-mapped heads from it."""
    from benchmarks.experiments.attention_layerwise import (
        MIRROR,
        VERTICAL_FLIP,
        PatchAttentionAutoencoder,
        _read,
        to_images,
        to_tokens,
    )
    from geo_pe.testing import assert_equivariant

    torch.manual_seed(0)
    images = torch.rand(6, 1, 32, 32, dtype=dtype)
    assert torch.equal(to_images(to_tokens(images)), images)
    for action in (MIRROR, VERTICAL_FLIP):  # the flips as permutations of tokens and of patch pixels
        moved = to_tokens(images)[:, action.tokens][:, :, action.pixels]
        assert torch.equal(to_tokens(action(images)), moved)
    model = PatchAttentionAutoencoder(exact=True).to(dtype)

    def reconstruct(x):
        return model(x)[0]

    def flip(action):
        return lambda g, x: action(x)

    assert_equivariant(reconstruct, images, lambda gen: None, act_in=flip(MIRROR), act_out=flip(MIRROR))
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(
            reconstruct, images, lambda gen: None, act_in=flip(VERTICAL_FLIP), act_out=flip(VERTICAL_FLIP)
        )
    before = reconstruct(images)
    model.release()
    assert not model.exact
    torch.testing.assert_close(reconstruct(images), before)
    reading = _read(model.double(), images.double())
    mirror = reading["mirror"]
    assert mirror["end_to_end"] < 1e-12 and mirror["heads"]["error"] < 1e-10
    assert mirror["heads"]["self_mapped"] == 8 and mirror["heads"]["exchanged"] == 0
    assert max(r["linear_error"] for r in mirror["layers"].values()) < 1e-8
    assert reading["vertical flip"]["end_to_end"] > 1e-3
