"""Run configs: YAML plus command-line overrides, typed and validated with errors naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from train import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def write(tmp_path, data) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_quickstart_config_loads_with_its_values():
    config = load_config(["--config", str(QUICKSTART)])
    raw = yaml.safe_load(QUICKSTART.read_text())
    assert config.task == raw["task"] == "rotated_digits"
    for section in ("data", "model", "training"):
        for key, value in raw[section].items():
            assert getattr(getattr(config, section), key) == value, key


def test_command_line_overrides_yaml_overrides_defaults(tmp_path):
    path = write(
        tmp_path, {"data": {"rotation_range": 30}, "training": {"phase1_steps": 7, "learning_rate": "2e-3"}}
    )
    config = load_config(["--config", path, "--phase1_steps", "9", "--pe_absolute", "so2:1x1"])
    assert config.training.phase1_steps == 9  # command line beats YAML
    assert config.data.rotation_range == 30.0  # YAML beats the default (and int becomes float)
    assert config.training.learning_rate == 2e-3  # YAML's "2e-3" string is converted like a CLI value
    assert config.model.pe_absolute == "so2:1x1"
    assert config.training.phase2_steps == 600  # default


@pytest.mark.parametrize(
    "data, argv, message",
    [
        (
            {"training": {"phase1_stpes": 5}},
            [],
            r"phase1_stpes: unknown key in section 'training'.*phase1_steps",
        ),
        ({"trainng": {}}, [], r"trainng: unknown key in .*top level.*training"),
        (
            {"model": {"hidden_size": "big"}},
            [],
            r"command line: argument --hidden_size.*invalid int value: 'big'",
        ),
        ({"model": {"hidden_size": 64.5}}, [], r"hidden_size: expected int, got 64.5"),
        ({"model": {"pe_absolute": 3}}, [], r"pe_absolute: expected str or null, got 3"),
        (
            {"training": {"phase2": "frozen"}},
            [],
            r"phase2: expected one of 'free', 'subspace', 'residual', 'equivariant', 'none'",
        ),
        ({"training": {"learning_rate": -1.0}}, [], r"learning_rate: expected a value in \(0.0, inf\]"),
        (
            {"training": {"phase2": "subspace"}},
            [],
            r"subspace_dim: phase2 'subspace' needs the subspace dimension",
        ),
        (
            {"training": {"phase2": "none", "in_range_augmentation": "phase2"}},
            [],
            r"in_range_augmentation: 'phase2' needs a phase II \(phase2 is 'none'\); use 'all'",
        ),
        (
            {"training": {"augment": True, "in_range_augmentation": "all"}},
            [],
            r"augment, in_range_augmentation: the whole group and the training range are two augmentations",
        ),
        (
            {"data": {"rotation_range": 270}},
            [],
            r"rotation_range: expected a value in \[0.0, 180.0\], got 270",
        ),
        ({"model": {"attention_dropout": 1.0}}, [], r"attention_dropout: expected a value in \[0.0, 1.0\)"),
        ({"training": {"ema_decay": 1.0}}, [], r"ema_decay: expected a value in \[0.0, 1.0\)"),
        ({"training": {"shared_subspace": [1]}}, [], r"shared_subspace: expected bool, got \[1\]"),
        (
            {},
            ["--phase1_stepz", "4"],
            r"phase1_stepz: unknown key in the command line; did you mean phase1_steps",
        ),
        ({}, ["--phase2", "frozen"], r"command line: argument --phase2: invalid choice: 'frozen'"),
        ({}, ["stray"], r"command line: unexpected argument 'stray'"),
        (
            {"task": "nope"},
            [],
            r"task: unknown task 'nope'; registered: \['dataset', 'motifs', 'rotated_digits', 'rotor_chain",
        ),
        ({"model": []}, [], r"model: the section must be a mapping, got list"),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path, data, argv, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["--config", write(tmp_path, data), *argv])


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config: no such file"):
        load_config(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match=r"config: .* is not valid YAML"):
        load_config(["--config", write(tmp_path, "training: [unclosed")])
    with pytest.raises(ConfigError, match=r"config: .* must hold a mapping"):
        load_config(["--config", write(tmp_path, "- a list")])


def test_saved_config_round_trips_and_differences_ignore_resumable_keys(tmp_path):
    config = load_config(["--config", str(QUICKSTART), "--phase1_steps", "11"])
    config.save(tmp_path / "saved.yaml")
    again = load_config(["--config", str(tmp_path / "saved.yaml")])
    assert again.to_dict() == config.to_dict()
    assert config.differences(again) == {}
    again.training.stop_after_steps, again.training.resume = 5, True  # how a run is continued
    assert config.differences(again) == {}
    again.training.learning_rate = 1.0  # what it computes
    assert config.differences(again) == {"learning_rate": (config.training.learning_rate, 1.0)}


@pytest.mark.parametrize(
    "argv, close",
    [(["--phase1_step", "10"], "phase1_steps"), (["--early_stop", "3"], "early_stopping_patience")],
)
def test_abbreviated_keys_are_refused_with_the_close_matches(argv, close):
    with pytest.raises(ConfigError, match=rf"{argv[0][2:]}: unknown key .*{close}"):
        load_config(["--config", str(QUICKSTART), *argv])


def test_every_model_and_training_key_has_help_and_model_defaults_come_from_the_config():
    import inspect

    from models import GeoTransformerConfig
    from train.config import ModelArguments, TrainArguments, make_parser

    fields = [f for cls in (ModelArguments, TrainArguments) for f in dataclasses.fields(cls)]
    assert [f.name for f in fields if not f.metadata.get("help")] == []
    described = {a.dest: a.help for a in make_parser("rotated_digits")._actions}
    for f in fields:
        assert described[f.name] == f"{f.metadata['help']} (default %(default)s)", f.name
    # one place for the model's defaults: the config's signature
    signature = inspect.signature(GeoTransformerConfig).parameters
    for f in dataclasses.fields(ModelArguments):
        assert f.default == signature[f.name].default, f.name


def test_yaml_errors_name_the_file(tmp_path):
    path = write(tmp_path, "task: rotated_digits\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match=r"run\.yaml is not valid YAML .*run\.yaml\", line"):
        load_config(["--config", path])


def test_shipped_configs_load_by_name_from_any_directory(tmp_path, monkeypatch):
    from train.config import shipped_configs

    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert {"quickstart", "experiments/digits", "experiments/motifs", "experiments/rotors"} <= set(
        shipped_configs()
    )
    by_name = load_config(["--config", "quickstart"])
    by_path = load_config(["--config", str(QUICKSTART)])
    assert by_name.to_dict() == by_path.to_dict()
    assert load_config([]).to_dict() == by_path.to_dict()  # no --config: the quickstart
    assert load_config(["--config", "experiments/rotors"]).task == "rotor_chain"
    with pytest.raises(ConfigError, match=r"config: no such file 'quikstart'.*shipped: .*quickstart"):
        load_config(["--config", "quikstart"])


def test_two_phases_that_cannot_differ_are_flagged():
    with pytest.warns(UserWarning, match="pe_absolute: null, so the model is invariant for any weights"):
        load_config(["--config", str(QUICKSTART), "--pe_absolute", "null"])


def test_pull_schedules_are_checked_before_the_run():
    from train.checks import pull_schedule

    config = load_config(["--config", str(QUICKSTART), "--phase2_pull_decay", "exponential"])
    assert pull_schedule(config.training)(5) == 0.0  # no pull: the decay is never read
    config = load_config(["--phase2_pull", "0.1", "--phase2_pull_decay", "exponential"])
    with pytest.raises(ConfigError, match=r"phase2_pull, phase2_pull_end, phase2_pull_decay: .*positive"):
        pull_schedule(config.training)
