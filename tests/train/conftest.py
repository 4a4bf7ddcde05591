"""Shared by the trainer's tests: the tiny quickstart config and one data cache for the whole session."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def tiny(output_dir, data_cache, *extra) -> list[str]:
    """The quickstart config in a tiny mode: a small model, a few steps per phase, no plot and one group
    element per equivariance measurement (later ``extra`` keys override these)."""
    return [
        "--config", QUICKSTART,
        "--output_dir", str(output_dir),
        "--data_cache_dir", data_cache,
        "--hidden_size", "32", "--num_attention_heads", "4",
        "--pe_absolute", "so2:2x1+1x2", "--pe_relative", "so2:2x1+2x2",
        "--phase1_steps", "6", "--phase2_steps", "6",
        "--batch_size", "32", "--eval_batch_size", "64",
        "--eval_steps", "3", "--save_steps", "4", "--logging_steps", "2",
        "--report_to", "none", "--plot", "false", "--equivariance_samples", "1",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> str:
    """One datasets cache for every test of the session: the digits are built once."""
    return str(tmp_path_factory.mktemp("datasets"))
