"""Watching a run: a JSONL log that is always written, Accelerate's trackers when installed, and the curves.

Every record is one JSON object per line in ``<output_dir>/log.jsonl`` with ``step``, ``phase`` and
``kind`` (``"train"``, ``"eval"``, ``"event"``). A resumed run first drops the records written after its
checkpoint (the steps it is about to redo), then appends after an ``{"kind": "event", "event":
"resumed"}`` line, so every step is logged once.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

__all__ = ["JsonlLog", "plot_curves", "read_log", "trackers_for"]


class JsonlLog:
    """Appends records to a JSONL file (main process only), flushing each line."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after ``step`` (written by a run killed after its last checkpoint);
        the file is replaced atomically."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line torn by the kill
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)


def read_log(path: str | Path) -> list[dict]:
    """The records of a log, the last one per (kind, step) for train and eval records, in step order."""
    latest: dict[tuple, dict] = {}
    events = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("kind") in ("train", "eval"):
            latest[(record["kind"], record["step"])] = record
        else:
            events.append(record)
    return sorted([*latest.values(), *events], key=lambda r: (r.get("step", 0), r.get("kind", "")))


def trackers_for(report_to: str) -> list[str]:
    """Accelerate ``log_with`` values: ``"auto"`` picks tensorboard, else trackio, when installed."""
    from accelerate.utils import is_tensorboard_available, is_trackio_available

    if report_to == "none":
        return []
    available = {"tensorboard": is_tensorboard_available(), "trackio": is_trackio_available()}
    if report_to == "auto":
        return [name for name, ok in available.items() if ok][:1]
    if not available[report_to]:
        raise ValueError(f"report_to: {report_to!r} is not installed (pip install {report_to})")
    return [report_to]


def plot_curves(log_path: str | Path, png_path: str | Path, metric: str) -> Path | None:
    """Training loss, validation ``metric`` and equivariance error against steps, the phase switch marked.
    Returns the PNG path, or None (with a warning) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            "plot: matplotlib is not installed (pip install 'geo-pe[train]'), no curves drawn", stacklevel=2
        )
        return None
    records = read_log(log_path)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    switches = [r["step"] for r in records if r.get("event") == "phase_switch"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [
        (axes[0], train, "loss", "training loss", False),
        (axes[1], evals, f"validation_{metric}", f"validation {metric}", False),
        (axes[2], evals, "equivariance_error", "equivariance error (relative)", True),
    ]
    for ax, rows, key, title, log_scale in panels:
        points = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        if points:
            xs, ys = zip(*points, strict=True)
            if log_scale:
                ys = [max(y, 1e-12) for y in ys]
                ax.set_yscale("log")
            ax.plot(xs, ys, marker="." if rows is evals else None)
        for step in switches:
            ax.axvline(step, color="grey", linestyle="--", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("step")
    if switches:
        axes[0].text(switches[0], axes[0].get_ylim()[1], " phase II", va="top", color="grey")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)
