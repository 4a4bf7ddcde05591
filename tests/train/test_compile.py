"""``--compile``: the trainer's steps through torch.compile reach the weights of eager steps, without a
graph break or a host sync in the step; a machine where torch.compile cannot build is named up front."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from geo_pe.testing import count_host_syncs
from tests.train.conftest import tiny
from train import ConfigError, load_config, train
from train.loop import Trainer

QUIET = ("--plot", "false", "--attention_dropout", "0", "--classifier_dropout", "0")


def test_compiled_training_matches_eager_training(tmp_path, data_cache):
    """Both phases (the switch recompiles); float32 kernels fused in another order, so a tolerance."""
    torch._dynamo.reset()
    eager = tmp_path / "eager"
    compiled = tmp_path / "compiled"
    train(load_config(tiny(eager, data_cache, *QUIET)))
    counters = torch._dynamo.utils.counters
    counters.clear()
    train(load_config(tiny(compiled, data_cache, *QUIET, "--compile", "true")))
    assert not counters["graph_break"], dict(counters["graph_break"])  # one graph per phase
    for folder in ("phase1_model", "phase2_model"):
        a = load_file(eager / folder / "model.safetensors")
        b = load_file(compiled / folder / "model.safetensors")
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=f"{folder}: {key}")


def test_a_training_step_makes_no_host_sync(tmp_path, data_cache):
    """Counted on the CPU: no ``.item()``, ``bool(tensor)``, ``.tolist()`` or ``nonzero`` in a step (on a
    GPU each would stall the queue; benchmarks.gpu checks with CUDA's sync debug mode)."""
    trainer = Trainer(load_config(tiny(tmp_path / "run", data_cache, *QUIET)))
    trainer.start()
    trainer.step()  # the first step builds the optimizer state
    with count_host_syncs() as syncs:
        trainer.step()
    assert syncs == [], syncs


def test_compile_where_no_compiler_works_is_named_before_anything_is_written(
    tmp_path, data_cache, monkeypatch
):
    def broken(*args, **kwargs):
        def run(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    out = tmp_path / "run"
    with pytest.raises(
        ConfigError, match=r"compile: torch.compile does not work on this machine \(InvalidCxx"
    ):
        train(load_config(tiny(out, data_cache, "--compile", "true")))
    assert not out.exists()
