"""The trainer under mixed precision: bf16 autocast with CUDA's op lists (imitated on the CPU), on the
quickstart and on a dataset task; fp16 on a machine without CUDA is refused before anything is written."""

from __future__ import annotations

import math

import pytest
import torch

from geo_pe.amp import cuda_autocast_lists
from tests.train.conftest import tiny
from tests.train.test_files import particle_args, particle_files  # noqa: F401  (a fixture)
from train import ConfigError, load_config, train
from train.monitor import read_log


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps one state per process, fixed by the first Accelerator: start each run afresh
    (another precision than the earlier tests'), and leave it fresh for the tests after."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def check_run(out, results):
    first, second = results["phases"]
    assert (first["ended_at_step"], second["ended_at_step"]) == (4, 8)
    losses = [r["loss"] for r in read_log(out / "log.jsonl") if r["kind"] == "train"]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (out / "model" / "model.safetensors").is_file()


def test_quickstart_trains_in_bf16_under_cudas_autocast_lists(tmp_path, data_cache):
    out = tmp_path / "run"
    args = tiny(out, data_cache, "--mixed_precision", "bf16", "--phase1_steps", "4", "--phase2_steps", "4")
    with cuda_autocast_lists(torch.bfloat16):
        results = train(load_config([*args, "--plot", "false"]))
    check_run(out, results)
    assert results["phases"][0]["equivariance_error"] < 2e-2  # phase I: exact up to bf16 rounding


def test_a_dataset_task_trains_in_bf16_under_cudas_autocast_lists(particle_files, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    with cuda_autocast_lists(torch.bfloat16):
        results = train(load_config(particle_args(particle_files, out, "--mixed_precision", "bf16")))
    check_run(out, results)


def test_fp16_without_cuda_is_refused_before_anything_is_written(tmp_path, data_cache):
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed where CUDA is")
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="mixed_precision: fp16 needs a CUDA GPU"):
        train(load_config(tiny(out, data_cache, "--mixed_precision", "fp16")))
    assert not out.exists()
