"""The dataset task: the user's files with a column mapping; every format, splits, padding, the checks
that name the column, split and row, skipping bad rows, exact equivariance through padding, memory-mapped
batches, exact resume, and evaluate/predict (one and two processes)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset

from train import ConfigError, load_config, train
from train.checks import build_model
from train.evaluation import measure_equivariance
from train.files import ArrowSplit
from train.inference import evaluate_main, predict_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "particles.yaml"


def _particles_module():
    spec = importlib.util.spec_from_file_location("particles_example", ROOT / "examples" / "particles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


particles = _particles_module()


@pytest.fixture(scope="module")
def particle_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("particles")
    particles.write(out, {"train": 96, "validation": 32, "test": 32}, seed=0, steps=50, field=0.0)
    return out


def particle_args(files: Path, out: Path, *extra) -> list[str]:
    """The example's config on small files, a tiny model and a few steps."""
    return [
        "--config", str(EXAMPLE),
        "--train_file", str(files / "train.parquet"),
        "--validation_file", str(files / "validation.parquet"),
        "--test_file", str(files / "test.parquet"),
        "--output_dir", str(out),
        "--hidden_size", "24", "--num_attention_heads", "4",
        "--phase1_steps", "4", "--phase2_steps", "4", "--batch_size", "16",
        "--eval_steps", "4", "--save_steps", "4", "--logging_steps", "2",
        "--report_to", "none", "--plot", "false",
        *extra,
    ]  # fmt: skip


def write_rows(path: Path, rows: dict) -> Path:
    """Rows in the format of the path's suffix (parquet, jsonl, csv) or a save_to_disk folder."""
    if path.suffix == ".parquet":
        pq.write_table(pa.table(rows), path)
    elif path.suffix == ".jsonl":
        keys = list(rows)
        with path.open("w") as f:
            for values in zip(*rows.values(), strict=True):
                f.write(json.dumps(dict(zip(keys, values, strict=True))) + "\n")
    elif path.suffix == ".csv":
        import csv

        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(rows)
            writer.writerows(zip(*rows.values(), strict=True))
    else:
        Dataset.from_dict(rows).save_to_disk(str(path))
    return path


def angle_rows(n: int, seed: int = 0) -> dict:
    """Per-row sets of angles with a per-row number and a class: what a CSV can hold is per-row values
    only, so this table has one token per row (sequence features, an angle each)."""
    rng = np.random.default_rng(seed)
    return {
        "size": rng.normal(size=n).round(4).tolist(),
        "angle": rng.uniform(-3, 3, size=n).round(4).tolist(),
        "label": rng.integers(0, 3, size=n).tolist(),
    }


def angle_config(path: Path, out: Path, *extra) -> list[str]:
    return [
        "--task", "dataset", "--train_file", str(path), "--output_dir", str(out),
        "--sequence_features", "size", "--positions", "{direction: angle}", "--target", "label",
        "--pe_absolute", "so2@direction:2x1", "--pe_relative", "null",
        "--hidden_size", "16", "--num_attention_heads", "2",
        "--phase1_steps", "2", "--phase2_steps", "2", "--batch_size", "8", "--eval_steps", "2",
        "--report_to", "none", "--plot", "false", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["rows.parquet", "rows.jsonl", "rows.csv", "rows_arrow"])
def test_every_format_reads_the_same_batches(tmp_path, name):
    rows = angle_rows(40)
    config = load_config(angle_config(write_rows(tmp_path / name, rows), tmp_path / "run"))
    task = config.make_task()
    build_model(config, task)
    built = task.build()
    assert {k: len(v) for k, v in built.items()} == {"train": 32, "validation": 4, "test": 4}
    batch = task.split(built["train"])[torch.arange(5)]
    assert batch["features"].shape == (5, 1, 1) and batch["positions"]["direction"].shape == (5, 1)
    assert batch["labels"].dtype == torch.long
    reference = task.split(built["test"])[torch.arange(4)]
    again = load_config(angle_config(write_rows(tmp_path / "again.parquet", rows), tmp_path / "run"))
    other = again.make_task()
    build_model(again, other)
    expected = other.split(other.build()["test"])[torch.arange(4)]
    for key in ("features", "labels"):
        torch.testing.assert_close(reference[key], expected[key])


def test_fraction_splits_are_disjoint_seeded_and_cover_the_file(tmp_path):
    path = write_rows(tmp_path / "rows.parquet", angle_rows(50))

    def splits(seed):
        config = load_config(angle_config(path, tmp_path / "run", "--split_seed", str(seed)))
        task = config.make_task()
        build_model(config, task)
        built = task.build()
        return {k: sorted(v.with_format("arrow")["size"].to_pylist()) for k, v in built.items()}

    first, again, other = splits(0), splits(0), splits(1)
    assert first == again and first != other
    values = sorted(v for split in first.values() for v in split)
    assert values == sorted(angle_rows(50)["size"]) and [len(v) for v in first.values()] == [40, 5, 5]


def test_ragged_rows_are_padded_with_their_masks(particle_files, tmp_path):
    config = load_config(particle_args(particle_files, tmp_path / "run"))
    task = config.make_task()
    build_model(config, task)
    split = task.split(task.build()["train"])
    assert isinstance(split, ArrowSplit)
    batch = split[torch.arange(16)]
    sizes = pq.read_table(particle_files / "train.parquet").column("charge").to_pylist()
    lengths = [len(s) for s in sizes[:16]]
    assert batch["attention_mask"].sum(-1).tolist() == lengths
    assert batch["features"].shape == (16, max(lengths), 2)
    assert batch["positions"]["position"].shape == batch["labels"].shape == (16, max(lengths), 3)
    first = pq.read_table(particle_files / "train.parquet").slice(0, 1).to_pylist()[0]
    torch.testing.assert_close(
        batch["positions"]["velocity"][0, : lengths[0]], torch.tensor(first["velocity"])
    )
    assert float(batch["labels"][batch["attention_mask"] == 0].abs().sum()) == 0


def test_phase_one_on_padded_files_is_exactly_equivariant(particle_files, tmp_path):
    """The equivariance error of the trainer's measurement (outputs turned with the inputs, padded tokens
    left out) is at float32 rounding for the phase I model and not for a perturbed free one."""
    config = load_config(particle_args(particle_files, tmp_path / "run"))
    task = config.make_task()
    model = build_model(config, task).eval()
    split = task.split(task.build()["validation"])
    args = config.training
    assert measure_equivariance(model, task, split, args, torch.device("cpu")) < 1e-5
    model.set_phase("free")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert measure_equivariance(model, task, split, args, torch.device("cpu")) > 1e-3


def corrupt(rows: dict, column: str, row: int, value) -> dict:
    out = {k: list(v) for k, v in rows.items()}
    out[column][row] = value
    return out


def at_centroid(points: list) -> list:
    """The points with the last moved to the centroid of the others."""
    points = np.array(points, dtype=np.float64)
    points[-1] = points[:-1].mean(0)
    return points.tolist()


def particle_rows(particle_files: Path, split: str = "train") -> dict:
    return pq.read_table(particle_files / f"{split}.parquet").to_pydict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: {k: v for k, v in r.items() if k != "speed"}, r"^speed: no such column in split 'train'"),
        (
            lambda r: corrupt(r, "velocity", 7, [[1.0, 0.0]] * len(r["charge"][7])),
            r"^velocity: split 'train' \(.*\), row 7: an entry has 2 numbers where a 3-vector .* needs 3",
        ),
        (
            lambda r: corrupt(r, "speed", 5, r["speed"][5][:-1]),
            r"^speed: split 'train' \(.*\), row 5: .* tokens but 'charge' has .* \(ragged row\)",
        ),
        (
            lambda r: corrupt(r, "charge", 3, [float("nan")] * len(r["charge"][3])),
            r"^charge: split 'train' \(.*\), row 3: NaN, infinite or missing value",
        ),
        (
            lambda r: corrupt(r, "velocity", 9, [[0.0, 0.0, 0.0]] * len(r["charge"][9])),
            r"^velocity: split 'train' \(.*\), row 9: zero direction \(attribute 'velocity'\)",
        ),
        (  # every particle of system 4 at one place: each lies at the centroid the model centres on
            lambda r: corrupt(r, "position", 4, [[1.0, 2.0, 3.0]] * len(r["charge"][4])),
            r"^position: split 'train' \(.*\), row 4: a point of attribute 'position' lies at the centroid",
        ),
        (  # the last particle at the centroid of the others, so at the centroid of all
            lambda r: corrupt(r, "position", 6, at_centroid(r["position"][6])),
            r"^position: split 'train' \(.*\), row 6: a point of attribute 'position' lies at the centroid",
        ),
    ],
)
def test_bad_rows_are_named_and_nothing_is_written(particle_files, tmp_path, change, message):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table(change(particle_rows(particle_files))), bad)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train(load_config(particle_args(particle_files, out, "--train_file", str(bad))))
    assert not out.exists()


def test_bad_labels_empty_splits_and_fixed_lengths_are_named(tmp_path):
    rows = angle_rows(30)
    path = write_rows(tmp_path / "labels.parquet", rows)
    test = write_rows(tmp_path / "test.parquet", corrupt(angle_rows(6, 1), "label", 4, 7))
    with pytest.raises(ConfigError, match=r"^label: split 'test' \(.*\), row 4: label 7 out of range"):
        train(load_config(angle_config(path, tmp_path / "run", "--test_file", str(test))))
    empty = write_rows(tmp_path / "empty.parquet", {k: v[:0] for k, v in rows.items()})
    with pytest.raises(ConfigError, match=r"^validation_file: .*empty.parquet is empty \(no rows\)"):
        train(load_config(angle_config(path, tmp_path / "run", "--validation_file", str(empty))))
    with pytest.raises(ConfigError, match=r"^test_fraction: split 'test' \(.*\) has no rows left"):
        train(load_config(angle_config(path, tmp_path / "run", "--test_fraction", "0.0")))
    with pytest.raises(
        ConfigError, match=r"^angle: split 'train' \(.*\), row 0: 1 tokens where fixed_length is 2"
    ):
        train(load_config(angle_config(path, tmp_path / "run", "--fixed_length", "2")))
    quaternions = {"q": [[[0.0, 0, 0, 0]], [[1.0, 0, 0, 0]]] * 10, "x": [[1.0]] * 20, "label": [0, 1] * 10}
    qpath = write_rows(tmp_path / "q.parquet", quaternions)
    args = ["--task", "dataset", "--train_file", str(qpath), "--features", "x", "--positions", "{o: q}",
            "--pe_absolute", "so3@o:1x1", "--pe_relative", "null", "--hidden_size", "18",
            "--num_attention_heads", "2", "--output_dir", str(tmp_path / "q")]  # fmt: skip
    with pytest.raises(ConfigError, match=r"^q: split '\w+' \(.*\), row 0: zero quaternion"):
        train(load_config(args))
    skew = [[0.0, 1, 0], [-1, 0, 0], [0, 0, 0]]
    matrices = {"q": [[[1.0, 0, 0, 0]]] * 20, "x": [[1.0]] * 20, "m": [np.eye(3).tolist(), skew] * 10}
    mpath = write_rows(tmp_path / "m.parquet", matrices)
    args = ["--task", "dataset", "--train_file", str(mpath), "--features", "x", "--positions", "{o: q}",
            "--target", "m", "--target_kind", "symmetric_matrix", "--target_level", "sequence",
            "--pe_absolute", "so3@o:1x2", "--pe_relative", "null", "--hidden_size", "30",
            "--num_attention_heads", "1", "--output_dir", str(tmp_path / "m")]  # fmt: skip
    with pytest.raises(ConfigError, match=r"^m: split '\w+' \(.*\), row 1: the matrix is not symmetric"):
        train(load_config(args))
    assert not (tmp_path / "run").exists() and not (tmp_path / "q").exists() and not (tmp_path / "m").exists()


def test_the_mapping_and_the_encodings_must_agree(particle_files, tmp_path):
    extra = "{position: position, velocity: velocity, extra: velocity}"
    config = load_config(particle_args(particle_files, tmp_path / "r", "--positions", extra))
    with pytest.raises(
        ConfigError, match=r"^positions: attribute\(s\) \['extra'\] are mapped but no encoding"
    ):
        build_model(config, config.make_task())
    config = load_config(particle_args(particle_files, tmp_path / "r", "--positions", "{position: position}"))
    with pytest.raises(
        ConfigError, match=r"read attribute\(s\) \['velocity'\] that the mapping does not give"
    ):
        build_model(config, config.make_task())


def test_skip_bad_rows_drops_and_reports_them(particle_files, tmp_path):
    rows = particle_rows(particle_files)
    for r in (3, 11):
        rows = corrupt(rows, "charge", r, [float("inf")] * len(rows["charge"][r]))
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table(rows), bad)
    config = load_config(
        particle_args(particle_files, tmp_path / "run", "--train_file", str(bad), "--skip_bad_rows", "true")
    )
    task = config.make_task()
    build_model(config, task)
    with pytest.warns(UserWarning, match=r"skip_bad_rows: dropped 2 of 96 rows .*row 3"):
        built = task.build()
    assert len(built["train"]) == 94


def test_train_resume_evaluate_and_predict_from_files(particle_files, tmp_path, capsys):
    """Training on files resumes bit for bit; evaluate writes the metrics; predict writes one row per
    input row with its id, equal to the model's own predictions on the valid tokens."""
    whole = train(load_config(particle_args(particle_files, tmp_path / "whole")))
    train(load_config(particle_args(particle_files, tmp_path / "split", "--stop_after_steps", "5")))
    resumed = train(load_config(particle_args(particle_files, tmp_path / "split", "--resume")))
    for a, b in zip(whole["phases"], resumed["phases"], strict=True):
        assert a["test_mse"] == b["test_mse"]
    a = (tmp_path / "whole" / "model" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "split" / "model" / "model.safetensors").read_bytes()

    run, test = tmp_path / "whole", particle_files / "test.parquet"
    assert evaluate_main([str(run), "--data", str(test), "--output", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert (
        metrics["rows"] == 32
        and abs(metrics["mse"] - whole["phases"][whole["selected_phase"] - 1]["test_mse"]) < 1e-6
    )
    assert "equivariance_error" in metrics
    for suffix in (".parquet", ".jsonl"):
        out = tmp_path / f"p{suffix}"
        assert (
            predict_main([str(run / "model"), "--data", str(test), "--output", str(out), "--batch_size", "5"])
            == 0
        )
        if suffix == ".parquet":
            table = pq.read_table(out).to_pydict()
        else:
            lines = [json.loads(line) for line in out.read_text().splitlines()]
            table = {k: [line[k] for line in lines] for k in ("system", "prediction")}
        source = pq.read_table(test).to_pydict()
        assert table["system"] == source["system"]
        assert [len(p) for p in table["prediction"]] == [len(c) for c in source["charge"]]
    assert predict_main([str(run), "--data", str(test), "--output", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.slow  # two processes: the default run launches one pair (test_fsdp)
def test_two_processes_predict_in_row_order(particle_files, tmp_path):
    run = tmp_path / "run"
    train(load_config(particle_args(particle_files, run)))
    test = particle_files / "test.parquet"
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    assert predict_main([str(run), "--data", str(test), "--output", str(one)]) == 0
    script = "from train.inference import predict_main; raise SystemExit(predict_main())"
    command = [sys.executable, "-c", script, str(run), "--data", str(test), "--output", str(two),
               "--num_processes", "2", "--batch_size", "7"]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    a, b = pq.read_table(one).to_pydict(), pq.read_table(two).to_pydict()
    assert a["system"] == b["system"]
    for x, y in zip(a["prediction"], b["prediction"], strict=True):
        np.testing.assert_allclose(np.array(x), np.array(y), atol=1e-6)


def test_the_particles_example_runs_end_to_end_from_the_command_line(tmp_path, monkeypatch):
    """The walk-through of docs/own_data.md in quick mode: write the files, train from the YAML alone,
    evaluate and predict, each the entry point of a command a user types (run from the folder that holds
    data/; in this process: the console scripts themselves are run by test_cli and the particles tests)."""
    from train.cli import main as train_main

    monkeypatch.chdir(tmp_path)
    quick = ["--phase1_steps", "4", "--phase2_steps", "4", "--eval_steps", "4", "--save_steps", "4",
             "--report_to", "none", "--plot", "false"]  # fmt: skip
    particles.main(["--out", "data/particles", "--train", "64", "--validation", "16", "--test", "16",
                    "--steps", "20"])  # fmt: skip
    assert train_main(["--config", str(EXAMPLE), *quick]) == 0
    assert evaluate_main(["runs/particles", "--data", "data/particles/test.parquet"]) == 0
    output = ["--output", "predictions.jsonl"]
    assert predict_main(["runs/particles", "--data", "data/particles/test.parquet", *output]) == 0
    metrics = json.loads((tmp_path / "runs" / "particles" / "evaluation_test.json").read_text())
    assert metrics["rows"] == 16 and metrics["mse"] >= 0
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 16 and set(json.loads(lines[0])) == {"system", "prediction"}


def test_unreadable_files_and_text_labels_are_one_line_with_status_2(tmp_path, capfd):
    """A truncated parquet (named before pyarrow or datasets print anything), one whose data pages are
    garbled (named with the reader's own reason, not datasets' wrapper) and class labels given as strings
    without num_labels: one ``error:`` line on stderr, status 2, nothing written."""
    from train.cli import main

    good = write_rows(tmp_path / "rows.parquet", angle_rows(20))
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbled = tmp_path / "garbled.parquet"  # the first half overwritten: pages (and metadata) unreadable
    data = bytearray(good.read_bytes())
    data[8 : len(data) // 2] = bytes(len(data) // 2 - 8)
    garbled.write_bytes(bytes(data))
    words = write_rows(tmp_path / "words.parquet", {**angle_rows(20), "label": ["cat", "dog"] * 10})
    cases = {
        truncated: r"^error: train_file: cannot read .*truncated.parquet \(ArrowInvalid: .*\); "
        r"the parquet file is truncated or corrupt$",
        garbled: r"^error: train_file: cannot read .*garbled.parquet \(\w+: .+\)",
        words: r"^error: label: expected numbers in split 'train' \(.*words.parquet\) to infer target "
        r"from, got string values; give class labels as integers 0 \.\. num_labels - 1$",
    }
    capfd.readouterr()
    for path, message in cases.items():
        assert main(angle_config(path, tmp_path / "run")) == 2
        out, err = capfd.readouterr()
        # datasets' progress bar may come first (the conversion to Arrow); nothing else does
        lines = [line for line in err.replace("\r", "\n").splitlines() if line and "examples/s]" not in line]
        assert out == "" and len(lines) == 1 and re.match(message, lines[0]), err
    assert not (tmp_path / "run").exists()


def test_a_small_split_of_equal_rows_is_held_as_tensors_with_the_same_batches(tmp_path):
    """Rows of one length (here one token each) are collated once: indexing gives exactly the batch that
    reading and padding those rows gives (values copied, no arithmetic, so bit for bit)."""
    from train.batches import Split

    path = write_rows(tmp_path / "rows.parquet", angle_rows(40))
    config = load_config(angle_config(path, tmp_path / "run"))
    task = config.make_task()
    build_model(config, task)
    train_rows = task.build()["train"]
    split = task.split(train_rows)
    assert isinstance(split, Split)
    rows = ArrowSplit(train_rows, task)
    index = torch.tensor([5, 0, 17, 3])
    held, read = split[index], rows[index]
    assert held.keys() == read.keys()
    for key in ("features", "attention_mask", "labels"):
        assert torch.equal(held[key], read[key]), key
    assert torch.equal(held["positions"]["direction"], read["positions"]["direction"])


def test_sign_symmetric_features_flip_together_in_a_random_half_of_the_training_batches(
    particle_files, tmp_path, monkeypatch
):
    """Each example's charge column is negated or kept by one coin (the generator's), the other
    features, the positions and the labels never change; the trainer flips every training batch."""
    from train.files import FileDataset

    config = load_config(
        particle_args(particle_files, tmp_path / "run", "--sign_symmetric_features", "charge")
    )
    task = config.make_task()
    build_model(config, task)
    batch = task.split(task.build()["train"])[torch.arange(64)]
    flipped = task.training_batch(batch, torch.Generator().manual_seed(3))
    coins = torch.randint(0, 2, (64, 1, 1), generator=torch.Generator().manual_seed(3)).bool()[:, 0, 0]
    charge, speed = flipped["features"][..., 0], flipped["features"][..., 1]
    torch.testing.assert_close(charge[coins], -batch["features"][coins][..., 0], rtol=0, atol=0)
    torch.testing.assert_close(charge[~coins], batch["features"][~coins][..., 0], rtol=0, atol=0)
    assert 0 < int(coins.sum()) < 64 and torch.equal(speed, batch["features"][..., 1])
    assert torch.equal(flipped["labels"], batch["labels"])
    assert all(torch.equal(flipped["positions"][k], v) for k, v in batch["positions"].items())
    calls = []
    original = FileDataset.training_batch
    monkeypatch.setattr(
        FileDataset, "training_batch", lambda self, b, g: calls.append(1) or original(self, b, g)
    )
    train(config)
    assert len(calls) == 8  # every training step of both phases, no evaluation batch
    with pytest.raises(ConfigError, match=r"sign_symmetric_features: 'mass' is not a mapped feature column"):
        load_config(particle_args(particle_files, tmp_path / "bad", "--sign_symmetric_features", "mass"))
