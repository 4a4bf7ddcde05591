"""Every head's saved folder loads with ``trust_remote_code=True`` in an interpreter that never imports the
installed ``models`` package; without geo-pe the failure is one line that says how to install it."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from geo_pe import quaternion
from models import (
    GeoTransformerConfig,
    GeoTransformerForEquivariantRegression,
    GeoTransformerForSequenceClassification,
    GeoTransformerForSequenceRegression,
    GeoTransformerForTokenClassification,
    GeoTransformerModel,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "benchmarks" / "results" / "models"
SIZES = dict(feature_size=2, hidden_size=36, num_attention_heads=4, phase_history=["equivariant"])
# (head, extra config, the Auto class that loads its folder, the output to compare)
HEADS = {
    "sequence_classification": (
        GeoTransformerForSequenceClassification,
        dict(num_labels=3),
        "AutoModelForSequenceClassification",
        "logits",
    ),
    "token_classification": (
        GeoTransformerForTokenClassification,
        dict(num_labels=3),
        "AutoModelForTokenClassification",
        "logits",
    ),
    "sequence_regression": (
        GeoTransformerForSequenceRegression,
        dict(num_labels=2),
        "AutoModel",
        "predictions",
    ),
    "equivariant_regression": (
        GeoTransformerForEquivariantRegression,
        dict(equivariant_target="vector", pe_gate=True),
        "AutoModel",
        "predictions",
    ),
    "encoder": (GeoTransformerModel, {}, "AutoModel", "last_hidden_state"),
}


def run_python(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """A new interpreter, offline, with its own HF module cache."""
    env = {**os.environ, "HF_HOME": str(cwd / "hf"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def save_every_head(tmp_path: Path) -> dict[str, Path]:
    """Each head saved in a folder named ``model`` (as the trainer names it), with its inputs and outputs."""
    folders = {}
    features = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(0))
    positions = {"position": torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(1))}
    orientations = quaternion.random(2, 5, generator=2)
    for name, (cls, extra, _, output) in HEADS.items():
        spec = dict(pe_absolute="s2:1x1", pe_relative="s2:1x0+1x1+1x2")
        x = {"features": features, "positions": {"direction": positions["position"]}}
        if name in ("sequence_classification", "encoder"):
            spec = dict(pe_absolute="so3:1x1", pe_relative="so3:1x0+1x1+1x2")
            x = {"features": features, "positions": orientations}
        torch.manual_seed(0)
        model = cls(GeoTransformerConfig(**SIZES, **spec, **extra)).eval()
        folder = tmp_path / name / "model"
        model.save_pretrained(folder)
        torch.save({"x": x, "output": getattr(model(**x), output).detach()}, tmp_path / name / "reference.pt")
        folders[name] = folder
    return folders


LOAD_AND_COMPARE = """
import sys, torch, transformers
def load(name, folder, cls, auto, output):
    model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__name__ == cls, (name, type(model))
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    ref = torch.load(folder.rsplit("/", 1)[0] + "/reference.pt")
    torch.testing.assert_close(getattr(model(**ref["x"]), output), ref["output"], rtol=1e-5, atol=1e-6)
"""


@pytest.mark.slow  # one fresh interpreter per head (about 30 s); the default run loads one folder (below)
def test_every_heads_folder_loads_with_trust_remote_code(tmp_path):
    """Every folder is named ``model`` (as the trainer names it) and carries the code of its own class.
    transformers maps AutoModel to the first remote class a process loads for the same config code, so
    a second head through AutoModel in the same process is refused by name, never loaded into the first
    head's class; a fresh process loads it."""
    folders = save_every_head(tmp_path)
    cases = {}
    for name, folder in folders.items():
        files = set(os.listdir(folder))
        assert {"configuration_geo_transformer.py", "modeling_geo_transformer.py"} <= files, (name, files)
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        cls, _, auto, output = HEADS[name]
        assert auto_map[auto].endswith(cls.__name__), (name, auto_map)
        cases[name] = (name, str(folder), cls.__name__, auto, output)
    refused = """
try:
    load(*{case!r})
except ValueError as err:
    assert "holds a {cls}, but" in str(err), err
else:
    raise AssertionError("a folder was handed to a class its auto_map does not name")
"""
    runs = [  # each list in one fresh interpreter: (loaded in order, then refused)
        (
            ["equivariant_regression", "sequence_classification", "token_classification"],
            "sequence_regression",
        ),
        (["encoder"], "equivariant_regression"),
        (["sequence_regression"], None),
    ]
    for loaded, refuse in runs:
        script = LOAD_AND_COMPARE + "".join(f"load(*{cases[name]!r})\n" for name in loaded)
        if refuse:
            script += refused.format(case=cases[refuse], cls=HEADS[refuse][0].__name__)
        script += 'assert "models" not in sys.modules, "the test must not import the installed package"\n'
        result = run_python(script + "print('ok')\n", tmp_path)
        assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_shipped_models_load_with_trust_remote_code(tmp_path):
    folders = sorted(str(p) for p in SHIPPED.iterdir() if p.is_dir())
    assert folders, "no shipped models"
    result = run_python(
        f"""
        import sys, transformers
        for folder in {folders!r}:
            model = transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)
            assert type(model).__name__ == "GeoTransformerForEquivariantRegression", type(model)
        assert "models" not in sys.modules
        print("ok")
        """,
        tmp_path,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_without_geo_pe_the_failure_says_how_to_install_it(tmp_path):
    folder = save_every_head(tmp_path)["equivariant_regression"]
    result = run_python(
        f"""
        import sys
        sys.modules["geo_pe"] = None  # as if geo-pe were not installed
        import transformers
        try:
            transformers.AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        except ModuleNotFoundError as err:
            print(str(err))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    message = result.stdout.strip()
    assert len(message.splitlines()) == 1 and "geo-pe" in message and "pip install" in message, message
    assert "pip install geo_pe" not in message
