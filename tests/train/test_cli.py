"""The entry points: geo-pe-train, python -m train and accelerate launch give the same run and the same
clean errors; the installed package is used whatever the working directory holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import tiny

SCRIPT = Path(sys.executable).with_name("geo-pe-train")
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def run(command, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.slow  # three trainings in subprocesses; the default run keeps the console script's (below)
def test_every_entry_point_gives_the_same_run(tmp_path, data_cache):
    """One thread per process is set by the trainer, not by the launcher: ``python -m train`` (whose
    environment allows two threads) and ``accelerate launch`` (which sets one) end with equal weights."""
    extra = ("--plot", "false", "--phase1_steps", "4", "--phase2_steps", "4")
    commands = {
        "python": [sys.executable, "-m", "train"],
        "accelerate": [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "1",
            "-m",
            "train",
        ],
        "script": [str(SCRIPT)],
    }
    results = {}
    for name, command in commands.items():
        out = tmp_path / name
        env = {**ENV, "OMP_NUM_THREADS": "2"} if name == "python" else ENV
        result = run([*command, *tiny(out, data_cache, *extra)], tmp_path, env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "1 process(es) on cpu, 1 thread(s) each" in result.stdout
        results[name] = load_file(str(out / "model" / "model.safetensors"))
    for name in ("accelerate", "script"):
        for key, value in results["python"].items():
            # the thread count is asserted above; equal weights up to float32 rounding (tensors at other
            # memory alignments may take other BLAS kernels)
            torch.testing.assert_close(results[name][key], value, msg=f"{name}: {key}")


@pytest.mark.slow  # three fresh interpreters (about 30 s); the wheel's contents are checked by default
def test_the_script_runs_the_installed_package_beside_a_users_train_py(tmp_path, data_cache):
    (tmp_path / "train.py").write_text("raise SystemExit('the user train.py ran')\n")
    shadowed = run([sys.executable, "-m", "train", "--help"], tmp_path)
    assert "the user train.py ran" in shadowed.stderr  # documented: python -m train is shadowed
    out = tmp_path / "run"
    result = run([str(SCRIPT), *tiny(out, data_cache, "--phase2", "none", "--phase1_steps", "2")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 process(es) on cpu, 1 thread(s) each" in result.stdout  # set by the trainer, not the launcher
    assert (out / "model" / "config.json").is_file()
    helped = run([str(SCRIPT), "--help"], tmp_path)
    assert helped.returncode == 0 and "steps of phase I" in helped.stdout
    # a models/ folder of the user's shadows geo-pe's models package under python -m train: one line
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "__init__.py").write_text("")
    shadowed = run([sys.executable, "-m", "train", "--help"], project)
    assert shadowed.returncode == 2 and "Traceback" not in shadowed.stderr, shadowed.stderr
    (line,) = error_lines(shadowed.stderr)
    assert "models" in line and "shadows it: run geo-pe-train" in line
    assert run([str(SCRIPT), "--help"], project).returncode == 0


def test_a_bad_config_is_one_line_and_status_2_under_every_launcher(tmp_path, data_cache):
    out = tmp_path / "run"
    bad = tiny(out, data_cache, "--phase1_step", "10")
    script = run([str(SCRIPT), "--num_processes", "2", *bad], tmp_path)
    assert script.returncode == 2 and "Traceback" not in script.stderr, script.stderr
    assert error_lines(script.stderr) == [
        "error: phase1_step: unknown key in the command line; did you mean phase1_steps or phase2_steps or "
        "save_steps?"
    ]
    assert not out.exists()


@pytest.mark.slow  # two processes: the default run launches one pair (test_fsdp)
def test_a_bad_config_is_one_line_under_a_bare_accelerate_launch(tmp_path, data_cache):
    out = tmp_path / "run"
    bad = tiny(out, data_cache, "--phase1_step", "10")
    launched = run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m",
         "train", *bad],
        tmp_path,
    )  # fmt: skip
    assert launched.returncode != 0 and error_lines(launched.stderr) == [
        "error: phase1_step: unknown key in the command line; did you mean phase1_steps or phase2_steps or "
        "save_steps?"
    ]
    assert not out.exists()


def test_the_wheel_ships_the_configs_and_the_script(tmp_path):
    """A non-editable install has the run configs inside the package and the console script."""
    import zipfile

    pytest.importorskip("setuptools")
    root = Path(__file__).resolve().parents[2]
    built = run(
        [sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path), "-q"],
        tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("geo_pe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for config in ("quickstart", "experiments/digits", "experiments/motifs", "experiments/rotors"):
        assert f"train/configs/{config}.yaml" in names, config
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "geo-pe-train = train.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_quickstart_without_the_train_extra_is_one_line(tmp_path, capfd, monkeypatch):
    """Without scikit-learn (the ``[train]`` extra) the bundled digits cannot be built: one line naming
    the extra, status 2, nothing written."""
    from train.cli import main

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    out = tmp_path / "run"
    capfd.readouterr()
    assert main(tiny(out, str(tmp_path / "fresh_cache"))) == 2
    assert error_lines(capfd.readouterr().err) == [
        "error: task: rotated_digits needs scikit-learn for its bundled digits; pip install 'geo-pe[train]' "
        "(or pip install scikit-learn)"
    ]
    assert not out.exists()
