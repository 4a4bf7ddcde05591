"""Whole training steps on the N-body task: the geo transformer (eager and compiled) against EGNN.

A step is what the trainer does per optimizer step: take the step's batch from the training split
(indexing, padding masks, device transfer), forward, loss, backward, gradient clipping, AdamW and the
scheduler. The geo transformer runs through the trainer itself (`train.loop.Trainer.step`) with the
published config (``--config``, default ``benchmarks/published/nbody.yaml``: 4 layers, hidden 64, batch 100
systems of 5 particles; ``nbody_static.yaml`` is the model before EGNN's dynamics), in phase I and, after
the switch, phase II. The peer is the project's EGNN (Satorras et al.
2021: 4 layers, 64 channels) on the same batches, with its own loop: index, forward, MSE, backward,
Adam. Rounds alternate between contenders (eager ones first, then the compiled ones with EGNN again as
the reference, since a process that has compiled runs eager code slower on this CPU); medians of the
timed steps are reported. Also the
quickstart's steps per second (the trainer on the rotated digits).

    python benchmarks/bench_train_step.py [--steps 30] [--rounds 3] [--device cpu|cuda] [--no-compile]
                                          [--config benchmarks/published/nbody_static.yaml]

Prints a table, then one JSON line with ``geo_vs_egnn_step`` (the slower phase's eager geo step over
EGNN's), ``compiled_speedup`` (eager over compiled geo step, the slower phase), ``quickstart_steps_per_s``,
the matmul FLOPs of one step of each (``torch.utils.flop_counter``: forward and backward; a step that
takes longer than its FLOPs say is bound by its many small ops) and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import machine  # noqa: E402

from benchmarks.published.egnn import EGNN  # noqa: E402
from benchmarks.published.nbody import make_split, write_parquet  # noqa: E402
from train import load_config  # noqa: E402
from train.loop import Trainer  # noqa: E402

SIZES = {"train": 600, "validation": 100, "test": 100}  # enough batches of 100; the step ignores the rest


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


NBODY_CONFIG = ROOT / "benchmarks" / "published" / "nbody.yaml"


def nbody_trainer(files: dict, out: Path, *extra: str, config: Path = NBODY_CONFIG) -> Trainer:
    args = [
        "--config", str(config),
        "--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
        "--test_file", str(files["test"]), "--output_dir", str(out), "--overwrite_output_dir", "true",
        "--report_to", "none", "--plot", "false", *extra,
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(load_config(args))
        trainer.start()
    return trainer


class EGNNStep:
    """EGNN's training step on the trainer's batches (the same systems, the same batch size)."""

    def __init__(self, systems, device: str, batch: int = 100):
        torch.manual_seed(0)
        self.model = EGNN().to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=5e-4)
        as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        self.data = [as_tensor(a) for a in (systems.positions, systems.velocities, systems.charges)]
        self.target = as_tensor(systems.target_positions)
        self.device, self.batch, self.step_index = device, batch, 0

    def __call__(self) -> None:
        start = (self.step_index * self.batch) % (len(self.target) - self.batch + 1)
        rows = torch.arange(start, start + self.batch)
        x, v, q = (t[rows].to(self.device, non_blocking=True) for t in self.data)
        target = self.target[rows].to(self.device, non_blocking=True)
        loss = torch.nn.functional.mse_loss(self.model(x, v, q), target)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_index += 1


def timed(step, steps: int, device: str) -> list[float]:
    out = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        out.append(time.perf_counter() - start)
    return out


def matmul_flops(step) -> int:
    """Matmul-like FLOPs (mm, bmm, addmm, SDPA; forward and backward) of one call of ``step``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure(contenders: dict, args, device: str) -> dict[str, float]:
    """Median ms per step of each contender: warm-up (and compilation) first, then rounds that alternate
    between them, so load on the machine hits all alike."""
    for step in contenders.values():
        timed(step, args.warmup, device)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, step in contenders.items():
            samples[name] += timed(step, args.steps, device)
    return {name: 1e3 * statistics.median(s) for name, s in samples.items()}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per contender per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation included)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--quickstart-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (the trainer's default)")
    parser.add_argument("--config", type=Path, default=NBODY_CONFIG, help="the geo transformer's config")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device: cuda requested but torch.cuda.is_available() is False")

    work = Path(tempfile.mkdtemp(prefix="bench_train_step_"))
    splits = {name: make_split(count, seed) for seed, (name, count) in enumerate(SIZES.items())}
    files = write_parquet(splits, work / "nbody")
    egnn = EGNNStep(splits["train"], device)
    trainer = functools.partial(nbody_trainer, config=args.config)
    phase2 = trainer(files, work / "eager2")
    phase2.switch_phase()
    eager = {
        "egnn": egnn,
        "geo phase I": trainer(files, work / "eager1").step,
        "geo phase II": phase2.step,
    }
    ms = measure(eager, args, device)
    flops = {name: matmul_flops(step) for name, step in eager.items()}
    if args.compile:  # after the eager rounds: a process that has compiled runs eager code slower here
        compiled2 = trainer(files, work / "compiled2", "--compile", "true")
        compiled2.switch_phase()
        compiled = {
            "egnn (compiled rounds)": egnn,
            "compiled phase I": trainer(files, work / "compiled1", "--compile", "true").step,
            "compiled phase II": compiled2.step,
        }
        ms.update(measure(compiled, args, device))

    quickstart_args = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--output_dir",
                       str(work / "quickstart"), "--report_to", "none", "--plot", "false"]  # fmt: skip
    quick = Trainer(load_config(quickstart_args))
    quick.start()
    timed(quick.step, 3, device)
    quickstart = timed(quick.step, args.quickstart_steps, device)

    print(f"N-body training step, batch 100 x 5 particles, {device}, {torch.get_num_threads()} thread(s)")
    print(f"{'contender':<20}{'ms/step':>10}{'steps/s':>10}{'vs EGNN':>10}")
    for name, value in ms.items():
        print(f"{name:<20}{value:>10.2f}{1e3 / value:>10.1f}{value / ms['egnn']:>10.2f}")
    slower = max(ms["geo phase I"], ms["geo phase II"])
    max_geo_flops = max(flops["geo phase I"], flops["geo phase II"])
    result = {
        "geo_vs_egnn_step": round(slower / ms["egnn"], 3),
        "phase1_vs_egnn_step": round(ms["geo phase I"] / ms["egnn"], 3),
        "phase2_vs_egnn_step": round(ms["geo phase II"] / ms["egnn"], 3),
        "egnn_step_ms": round(ms["egnn"], 3),
        "geo_step_ms": {"phase1": round(ms["geo phase I"], 3), "phase2": round(ms["geo phase II"], 3)},
        "nbody_steps_per_s": round(1e3 / slower, 1),
        "matmul_mflops_per_step": {name: round(f / 1e6, 1) for name, f in flops.items()},
        "geo_vs_egnn_matmul_flops": round(max_geo_flops / flops["egnn"], 3),
        "quickstart_steps_per_s": round(1.0 / statistics.median(quickstart), 1),
        "machine": machine(device),
    }
    if args.compile:
        compiled = max(ms["compiled phase I"], ms["compiled phase II"])
        result["compiled_speedup"] = round(slower / compiled, 3)
        result["compiled_vs_egnn_step"] = round(compiled / ms["egnn (compiled rounds)"], 3)
        result["compiled_step_ms"] = {
            "phase1": round(ms["compiled phase I"], 3),
            "phase2": round(ms["compiled phase II"], 3),
        }
        result["compiled_nbody_steps_per_s"] = round(1e3 / compiled, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
