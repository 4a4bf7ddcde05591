"""Running specs: one `train.train` per spec in a worker process (one thread each), results cached by key
in a JSON-lines file so that an interrupted run picks up where it stopped."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import yaml

from benchmarks.experiments.suites import CONFIGS, Spec

SECTIONS = ("data", "model", "training")


def read_cache(path: Path) -> dict[str, dict]:
    """``{key: record}`` from a runs file; a torn last line (a killed run) is skipped."""
    records = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["key"]] = record
    return records


def build_config(spec: Spec, output_dir: str):
    """The `RunConfig` of a spec: the base YAML with the overrides put into their sections."""
    from train.config import ModelArguments, TrainArguments, load_config
    from train.tasks import TASKS

    data = yaml.safe_load((CONFIGS / f"{spec.base}.yaml").read_text())
    fields = {
        "data": set(TASKS[data["task"]].Options.__dataclass_fields__),
        "model": set(ModelArguments.__dataclass_fields__),
        "training": set(TrainArguments.__dataclass_fields__),
    }
    settings = {
        **spec.overrides,
        "output_dir": output_dir,
        "overwrite_output_dir": True,
        "report_to": "none",
        "plot": False,
        "save_steps": 10**9,
        "equivariance_samples": 1,
    }
    for key, value in settings.items():
        section = next((s for s in SECTIONS if key in fields[s]), None)
        if section is None:
            raise KeyError(f"override {key!r} is not a data, model or training key")
        data.setdefault(section, {})[key] = value
    path = Path(output_dir) / "spec.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return load_config(["--config", str(path)])


def _train_record(spec: Spec) -> dict:
    from train.loop import train
    from train.monitor import read_log

    with tempfile.TemporaryDirectory(prefix="geo-pe-exp-") as out:
        config = build_config(spec, out)
        results = train(config)
        log = read_log(Path(out) / "log.jsonl")
    metric = results["metric"]
    chosen = results["phases"][results["selected_phase"] - 1]
    last_phase = [
        r for r in log if r.get("kind") == "train" and r.get("phase") == results["phases"][-1]["phase"]
    ]
    return {
        "metric": metric,
        "test": chosen[f"test_{metric}"],
        "validation": chosen[f"validation_{metric}"],
        "selected_phase": results["selected_phase"],
        "phases": results["phases"],
        "min_train_loss_last_phase": min((r["loss"] for r in last_phase), default=math.nan),
        "wall_seconds": results["wall_seconds"],
    }


def run_one(spec: Spec) -> dict:
    """Run a spec in this process, its output silenced; returns its record (``error`` set on failure)."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    record = {"key": spec.key, "suite": spec.suite, "base": spec.base, "labels": spec.labels,
              "overrides": spec.overrides}  # fmt: skip
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            if spec.base == "layerwise":
                from benchmarks.experiments.layerwise import run_layerwise

                record.update(run_layerwise(**spec.overrides))
            elif spec.base == "attention_layerwise":
                from benchmarks.experiments.attention_layerwise import run_attention_layerwise

                record.update(run_attention_layerwise(**spec.overrides))
            else:
                record.update(_train_record(spec))
        except Exception as err:  # recorded and reported, never cached as a result
            record["error"] = f"{type(err).__name__}: {err}"
    record["seconds"] = time.perf_counter() - started
    return record


def _init_worker() -> None:
    os.environ["TQDM_DISABLE"] = "1"
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def run_specs(specs: list[Spec], runs_file: Path, jobs: int) -> list[dict]:
    """Run the specs not yet in ``runs_file`` with ``jobs`` worker processes; append each result as it
    finishes. Returns the failures."""
    done = read_cache(runs_file)
    pending = [s for s in specs if s.key not in done]
    if not pending:
        return []
    runs_file.parent.mkdir(parents=True, exist_ok=True)
    failures, started = [], time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(run_one, spec) for spec in pending]
        for count, future in enumerate(as_completed(futures), start=1):
            record = future.result()
            if "error" in record:
                failures.append(record)
            else:
                with runs_file.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            elapsed = time.perf_counter() - started
            print(
                f"  [{count}/{len(pending)}] {record['suite']} {record['labels']} "
                f"{'FAILED ' + record['error'] if 'error' in record else ''} "
                f"({elapsed / 60:.1f} min, about {elapsed / count * (len(pending) - count) / 60:.1f} left)",
                file=sys.stderr,
                flush=True,
            )
    return failures
