"""The FSDP route end to end, through the trainer's own code: 2 gloo processes launched with the shipped
FSDP2 config (configs/accelerate/fsdp.yaml) train phase I, switch sharded, train phase II, save the gathered
model, checkpoint sharded and resume bit for bit; evaluate and predict read the run's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from tests.train.conftest import tiny
from tests.train.test_files import particle_args, particle_files  # noqa: F401  (a fixture)
from train import ConfigError, load_config, train
from train.inference import evaluate_main, predict_main
from train.monitor import read_log

ROOT = Path(__file__).resolve().parents[2]
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "fsdp.yaml"


def launch_fsdp(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG)]
    command += ["--num_processes", str(processes), "--main_process_port", "0", "--mixed_precision", "no"]
    command += ["-m", "train", *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_fsdp_trains_switches_saves_resumes_bit_exactly_and_serves(particle_files, tmp_path):  # noqa: F811
    whole, split = tmp_path / "whole", tmp_path / "split"
    noise = ("--attention_dropout", "0.1")  # dropout: the resume must restore every process's RNG
    done = launch_fsdp(particle_args(particle_files, whole, *noise))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "2 process(es)" in done.stdout
    stopped = launch_fsdp(particle_args(particle_files, split, *noise, "--stop_after_steps", "6"))
    assert stopped.returncode == 0, stopped.stderr[-4000:]
    shards = sorted(p.name for p in (split / "checkpoints" / "step_00000006").glob("*.distcp"))
    assert len(shards) == 2  # one file of weights and optimizer state per process
    resumed = launch_fsdp(particle_args(particle_files, split, *noise, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    for folder in ("phase1_model", "phase2_model", "model"):
        a, b = (
            load_file(whole / folder / "model.safetensors"),
            load_file(split / folder / "model.safetensors"),
        )
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{folder}: {key}"
    # the saved folders are plain HF folders: no FSDP class, nothing of FSDP's source copied in
    saved = AutoConfig.from_pretrained(whole / "model")
    assert saved.architectures == ["GeoTransformerForEquivariantRegression"]
    assert saved.phase_history == ["equivariant", "free"][: len(saved.phase_history)]
    assert not list((whole / "model").glob("_fsdp*"))
    records = read_log(whole / "log.jsonl")
    switch = [r for r in records if r.get("event") == "phase_switch"]
    assert len(switch) == 1 and switch[0]["max_weight_change"] < 1e-6  # the sharded switch: same function
    results = json.loads((whole / "results.json").read_text())
    assert results["processes"] == 2 and results["phases"][0]["equivariance_error"] < 1e-5

    test = particle_files / "test.parquet"
    assert evaluate_main([str(whole), "--data", str(test), "--output", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    selected = results["phases"][results["selected_phase"] - 1]
    assert metrics["rows"] == 32 and abs(metrics["mse"] - selected["test_mse"]) < 1e-6
    out = tmp_path / "p.parquet"
    assert predict_main([str(whole / "model"), "--data", str(test), "--output", str(out)]) == 0
    assert pq.read_table(out).to_pydict()["system"] == pq.read_table(test).to_pydict()["system"]


@pytest.mark.slow
def test_fsdp_on_two_processes_matches_one_unsharded_process(tmp_path):
    """Same global batch, no dropout: sharded training reaches the weights of one plain process, up to the
    float32 rounding of gradients reduced in another order."""
    data = str(tmp_path / "data")
    quiet = ("--plot", "false", "--attention_dropout", "0", "--classifier_dropout", "0")
    train(load_config(tiny(tmp_path / "one", data, *quiet)))
    done = launch_fsdp(tiny(tmp_path / "two", data, *quiet))
    assert done.returncode == 0, done.stderr[-4000:]
    for folder in ("phase1_model", "phase2_model"):
        a = load_file(tmp_path / "one" / folder / "model.safetensors")
        b = load_file(tmp_path / "two" / folder / "model.safetensors")
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=f"{folder}: {key}")


@pytest.mark.parametrize(
    "environment, message",
    [
        (
            {"FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer"},
            "fsdp_transformer_layer_cls_to_wrap: the model has no",
        ),
        ({"FSDP_VERSION": "1"}, "fsdp_version: geo-pe shards with FSDP2"),
        ({"FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params: not supported"),
        ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "fsdp_auto_wrap_policy: expected"),
    ],
)
def test_an_fsdp_config_the_model_cannot_take_is_named_before_anything_is_written(
    tmp_path, monkeypatch, environment, message
):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train(load_config(tiny(out, str(tmp_path / "data"))))
    assert not out.exists()
