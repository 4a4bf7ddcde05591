"""Tables (markdown, mean +- std over seeds) and plots (PNG) from the cached runs."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from benchmarks.experiments.suites import SUITES, THRESHOLD_LOSS, Suite

REFERENCE_FROM_TILT = ("unconstrained", "equivariant", "two_phase_free", "plain_aug")
REFERENCE_FROM_APPROX = ("unconstrained", "equivariant", "two_phase_free", "two_phase_lr1", "plain")


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(values: list[float], metric: str) -> str:
    if not values:
        return "-"
    mean, std = _mean_std(values)
    if metric == "accuracy":
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{mean:.3f} ± {std:.3f}"


def _grid(records: list[dict], rows: str, column: str, value: str = "test") -> dict:
    cells = defaultdict(list)
    for r in records:
        cells[(r["labels"][rows], r["labels"][column])].append(r[value])
    return cells


def _ordered(values):
    return sorted(set(values), key=lambda v: (isinstance(v, str), v))


def method_table(suite: Suite, records: list[dict]) -> tuple[str, dict]:
    """Markdown table of the test metric, rows = methods, columns = the suite's column."""
    metric = records[0]["metric"]
    value = "validation" if suite.name == "tuning" else "test"
    cells = _grid(records, suite.rows, suite.column, value)
    rows = list(dict.fromkeys(r["labels"][suite.rows] for r in records))
    columns = _ordered(r["labels"][suite.column] for r in records)
    seeds = sorted({r["labels"]["seed"] for r in records})
    unit = "accuracy %" if metric == "accuracy" else "MSE"
    lines = [
        f"{value} {unit}, mean ± std over seeds {seeds}",
        "",
        "| " + " | ".join([suite.rows] + [f"{suite.column} {c}" for c in columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join([row] + [_fmt(cells.get((row, c), []), metric) for c in columns]) + " |"
        )
    return "\n".join(lines), {"cells": cells, "rows": rows, "columns": columns, "metric": metric}


PAIRED_REFERENCE = "two_phase_lr1"  # the recommended default, compared seed by seed with every other row


def paired_table(suite: Suite, records: list[dict], reference: str = PAIRED_REFERENCE) -> str:
    """Markdown table of ``reference`` minus each other row, paired by seed (the same seed draws the same
    training subset): mean ± standard error of the differences. Empty when ``reference`` is absent."""
    by_seed = defaultdict(dict)
    for r in records:
        by_seed[(r["labels"][suite.rows], r["labels"][suite.column])][r["labels"]["seed"]] = r["test"]
    rows = [row for row in dict.fromkeys(r["labels"][suite.rows] for r in records) if row != reference]
    columns = _ordered(r["labels"][suite.column] for r in records)
    if not any((reference, c) in by_seed for c in columns):
        return ""
    scale = 100 if records[0]["metric"] == "accuracy" else 1
    lines = [
        f"{reference} minus each method, paired by seed: mean ± standard error"
        + (" (accuracy points)" if scale == 100 else " (MSE; negative = better)"),
        "",
        "| method | " + " | ".join(f"{suite.column} {c}" for c in columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for row in rows:
        cells = []
        for c in columns:
            ref, other = by_seed.get((reference, c), {}), by_seed.get((row, c), {})
            diffs = [scale * (ref[s] - other[s]) for s in sorted(ref.keys() & other.keys())]
            if len(diffs) < 2:
                cells.append("-")
                continue
            error = statistics.stdev(diffs) / math.sqrt(len(diffs))
            cells.append(f"{statistics.fmean(diffs):+.1f} ± {error:.1f}" if scale == 100 else
                         f"{statistics.fmean(diffs):+.3f} ± {error:.3f}")  # fmt: skip
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def threshold_table(records: list[dict]) -> tuple[str, dict]:
    cells = defaultdict(list)
    for r in records:
        cells[(r["labels"]["start"], r["labels"]["subspace_dim"])].append(r["min_train_loss_last_phase"])
    starts = list(dict.fromkeys(r["labels"]["start"] for r in records))
    dims = _ordered(r["labels"]["subspace_dim"] for r in records)
    lines = [
        f"success = training loss (20-step window) <= {THRESHOLD_LOSS} nats within the subspace phase; "
        "cells: success rate (mean lowest loss)",
        "",
        "| start | " + " | ".join(f"d = {d}" for d in dims) + " | d* |",
        "|" + "---|" * (len(dims) + 2),
    ]
    success = {}
    for start in starts:
        row, threshold = [], None
        for d in dims:
            losses = cells.get((start, d), [])
            rate = sum(loss <= THRESHOLD_LOSS for loss in losses) / len(losses) if losses else math.nan
            success[(start, d)] = rate
            if threshold is None and rate >= 0.5:
                threshold = d
            row.append(f"{rate:.0%} ({statistics.fmean(losses):.2f})" if losses else "-")
        d_star = f"{threshold}" if threshold is not None else f"> {dims[-1]}"
        lines.append(f"| {start} | " + " | ".join(row) + f" | {d_star} |")
    return "\n".join(lines), {"success": success, "starts": starts, "dims": dims}


def _cell(records: list[dict], value) -> str:
    mean, std = _mean_std([value(r) for r in records])
    return f"{mean:.3g} ± {std:.2g}"


def layerwise_table(records: list[dict]) -> str:
    groups = defaultdict(list)
    for r in records:
        groups[(r["labels"].get("data", "digits"), r["labels"]["model"], r["labels"]["activation"])].append(r)
    lines = [
        "end-to-end: relative error |f(g x) - g f(x)| / |g f(x)| on test images (8x8 digits, or 8x8 grey "
        "patches of the two photographs, classified by photograph); per hidden layer: relative error of the "
        "best signed permutation of units (and the share of units matched with |corr| >= 0.9); "
        "mirror = trained, flip = vertical-flip control",
        "",
        "| data | model | act | score | end-to-end mirror | end-to-end flip | layer 1 perm. mirror "
        "| layer 1 perm. flip | layer 2 perm. mirror | layer 2 perm. flip |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (data, model, act), rs in groups.items():
        row = [
            data,
            model,
            act,
            f"{rs[0]['score_name']} {_cell(rs, lambda r: r['score'])}",
            _cell(rs, lambda r: r["equivariance_error"]),
            _cell(rs, lambda r: r["control_equivariance_error"]),
        ]
        for layer in (0, 1):
            for which in ("trained", "control"):
                perm = _cell(rs, lambda r, w=which, k=layer: r["layers"][w][k]["permutation_error"])
                matched = statistics.fmean(r["layers"][which][layer]["matched_fraction"] for r in rs)
                row.append(f"{perm} ({matched:.0%})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def attention_table(records: list[dict]) -> str:
    """Two tables (at the switch, at the end) of the attention autoencoders, one row per method."""
    groups = defaultdict(list)
    for r in records:
        groups[r["labels"]["method"]].append(r)
    lines = [
        "Test MSE of the reconstruction; then under the mirror (trained) and the vertical flip (control): "
        "end-to-end relative error; layerwise relative error of the best linear map between the tokens' "
        "channels (tokens aligned; the layers before and after attention are linear, so a linear map is "
        "their symmetry, not only a permutation) for the embedding and the attention output; per head: mean "
        "relative error of the Hungarian head matching (centred maps), and the matched heads (cosine >= 0.9) "
        "as self-mapped + exchanged, mean over seeds. The switch is at half of the steps; single-phase "
        "methods are read at the same step.",
    ]
    for at, title in (("at_switch", "At the switch"), ("at_end", "At the end")):
        lines += [
            "",
            f"**{title}**",
            "",
            "| method | test MSE | end-to-end mirror | flip | embedding mirror | flip | attention mirror "
            "| flip | heads mirror | flip | matched heads mirror (self + exch.) | flip |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method, rs in groups.items():
            row = [method, _cell(rs, lambda r, a=at: r[a]["test_mse"])]
            row += [
                _cell(rs, lambda r, a=at, g=g: r[a][g]["end_to_end"]) for g in ("mirror", "vertical flip")
            ]
            for layer in ("embedding", "attention"):
                row += [
                    _cell(rs, lambda r, a=at, g=g, k=layer: r[a][g]["layers"][k]["linear_error"])
                    for g in ("mirror", "vertical flip")
                ]
            row += [
                _cell(rs, lambda r, a=at, g=g: r[a][g]["heads"]["error"]) for g in ("mirror", "vertical flip")
            ]
            for g in ("mirror", "vertical flip"):
                mapped = statistics.fmean(r[at][g]["heads"]["self_mapped"] for r in rs)
                exchanged = statistics.fmean(r[at][g]["heads"]["exchanged"] for r in rs)
                row.append(f"{mapped:.1f} + {exchanged:.1f}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# --- plots --------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_methods(suite: Suite, data: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    numeric = all(isinstance(c, (int, float)) for c in data["columns"])
    scale = 100 if data["metric"] == "accuracy" else 1
    for i, row in enumerate(data["rows"]):
        stats = [
            (c, *_mean_std(data["cells"][(row, c)])) for c in data["columns"] if data["cells"].get((row, c))
        ]
        if not stats:
            continue
        xs, means, stds = zip(*stats, strict=True)
        means, stds = [scale * m for m in means], [scale * s for s in stds]
        if numeric:
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=row)
        else:
            ax.bar([i], means, yerr=stds, capsize=3, label=row)
    if numeric and suite.log_x:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks([])
    ax.set_xlabel(suite.xlabel)
    ax.set_ylabel("test accuracy (%)" if data["metric"] == "accuracy" else "test MSE (standardised)")
    ax.set_title(suite.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_threshold(data: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for start in data["starts"]:
        dims = [d for d in data["dims"] if not math.isnan(data["success"][(start, d)])]
        ax.plot(dims, [data["success"][(start, d)] for d in dims], marker="o", label=start)
    ax.set_xscale("log")
    ax.set_xlabel("subspace dimension d")
    ax.set_ylabel(f"P(training loss <= {THRESHOLD_LOSS})")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Threshold dimension (rotated digits, +-45 degrees, 300 images)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_filters(records: list[dict], path: Path, data: str = "digits") -> None:
    """First-layer filters (64 units as 8x8 images) of each seed-0 network, mirror-symmetric ones first."""
    import torch

    from benchmarks.experiments.layerwise import mirror

    plt = _pyplot()
    chosen = [r for r in records if "filters" in r and r["labels"].get("data", "digits") == data]
    if not chosen:
        return
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.6 * len(chosen), 3.9))
    for ax, r in zip(list(axes) if len(chosen) > 1 else [axes], chosen, strict=True):
        w = torch.tensor(r["filters"])
        symmetry = torch.nn.functional.cosine_similarity(w, mirror(w), dim=1)
        w = w[symmetry.argsort(descending=True)]
        tiles = w.reshape(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)  # unit grid of 8x8 filters
        limit = float(w.abs().max())
        ax.imshow(tiles, cmap="RdBu_r", vmin=-limit, vmax=limit)
        for k in range(1, 8):
            ax.axhline(8 * k - 0.5, color="k", lw=0.5)
            ax.axvline(8 * k - 0.5, color="k", lw=0.5)
        ax.set_title(f"{r['labels']['model']}, {r['labels']['activation']}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"first-layer filters ({data}), sorted by mirror symmetry (cosine with own mirror image)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_attention_maps(records: list[dict], path: Path) -> None:
    """Seed 0 of each method at the end: per head a, its map on the mirror image (top) above the matched
    head's map on the original with the tokens mirrored (bottom), for one test image."""
    plt = _pyplot()
    chosen = [r for r in records if "picture" in r]
    if not chosen:
        return
    heads = len(chosen[0]["picture"]["maps"])
    fig, axes = plt.subplots(
        2 * len(chosen), heads + 1, figsize=(1.3 * (heads + 1), 1.45 * 2 * len(chosen)), squeeze=False
    )
    for k, r in enumerate(chosen):
        picture = r["picture"]
        top, bottom = axes[2 * k], axes[2 * k + 1]
        top[0].imshow(picture["image"], cmap="gray")
        top[0].set_title("image", fontsize=7)
        bottom[0].imshow([row[::-1] for row in picture["image"]], cmap="gray")
        bottom[0].set_title("mirror", fontsize=7)
        top[0].set_ylabel(r["labels"]["method"], fontsize=7)
        for a, b in enumerate(picture["permutation"]):
            kind = "self" if a == b else f"<- {b}"
            top[a + 1].imshow(picture["mirrored_maps"][a], cmap="viridis")
            top[a + 1].set_title(f"head {a} on mirror", fontsize=6)
            bottom[a + 1].imshow(picture["maps"][b], cmap="viridis")
            bottom[a + 1].set_title(f"{kind}, cos {picture['similarity'][a]:.2f}", fontsize=6)
        for ax in (*top, *bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        "attention maps (16 x 16 tokens, seed 0, end of training): each head on the mirror image above the "
        "matched head on the original, tokens mirrored",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(records: list[dict], out: Path, lrs: dict, planned: dict[str, int] | None = None) -> Path:
    """RESULTS.md and one PNG per suite under ``out``; returns the markdown path. A suite with fewer
    finished runs than ``planned[name]`` is marked incomplete in its heading."""
    by_suite = defaultdict(list)
    for r in records:
        by_suite[r["suite"]].append(r)
    sections = [
        "# geo-pe experiments",
        "",
        "Generated by `python -m benchmarks.experiments`; do not edit.",
        "",
    ]
    if lrs:
        sections += ["Learning rates chosen on the tuning seeds (validation):", ""]
        sections += [
            f"- {m}: " + ", ".join(f"{task} {lr:g}" for task, lr in by_task.items())
            for m, by_task in lrs.items()
        ]
        sections.append("")
    for name, suite in SUITES.items():
        rs = by_suite.get(name)
        if not rs:
            continue
        missing = (planned or {}).get(name, len(rs)) - len(rs)
        status = f" (INCOMPLETE: {len(rs)} of {len(rs) + missing} runs)" if missing > 0 else ""
        sections += [f"## {suite.title}{status}", ""]
        if name == "threshold":
            text, data = threshold_table(rs)
            plot_threshold(data, out / f"{name}.png")
        elif name == "layerwise":
            text = layerwise_table(rs)
            plot_filters(rs, out / "layerwise_filters.png")
            plot_filters(rs, out / "layerwise_natural_filters.png", data="natural")
        elif name == "layerwise_attention":
            text = attention_table(rs)
            plot_attention_maps(rs, out / "attention_maps.png")
        else:
            if name in ("push", "controls", "controls_approx"):  # reference rows: the same cell elsewhere
                if name == "controls_approx":
                    source, methods, cell = "digits_approx", REFERENCE_FROM_APPROX, ("train_size", 300)
                else:
                    source, methods, cell = "digits_tilt", REFERENCE_FROM_TILT, ("rotation_range", 45)
                rs = [
                    {**r, "labels": {**r["labels"], "variant": r["labels"]["method"]}}
                    for r in by_suite.get(source, [])
                    if r["labels"][cell[0]] == cell[1] and r["labels"]["method"] in methods
                ] + rs
                # one row per variant, one column: the cell they all share
                shared = "no tilt labels" if name == "controls_approx" else "tilt labels"
                rs = [
                    {**r, "labels": {**r["labels"], "method": r["labels"]["variant"], "variant": shared}}
                    for r in rs
                ]
            if name == "tuning":
                for task in dict.fromkeys(r["labels"]["task"] for r in rs):
                    text, data = method_table(suite, [r for r in rs if r["labels"]["task"] == task])
                    sections += [f"### {task}", "", text, ""]
                continue
            text, data = method_table(suite, rs)
            plot_methods(suite, data, out / f"{name}.png")
            paired = paired_table(suite, rs)
            if paired:
                text += "\n\n" + paired
        sections += [text, ""]
        if (out / f"{name}.png").exists():
            sections += [f"![{suite.title}]({name}.png)", ""]
        pictures = {
            "layerwise": ["layerwise_filters.png", "layerwise_natural_filters.png"],
            "layerwise_attention": ["attention_maps.png"],
        }
        for picture in pictures.get(name, []):
            if (out / picture).exists():
                sections += [f"![{picture[:-4].replace('_', ' ')}]({picture})", ""]
    absent = [name for name in SUITES if planned and planned.get(name) and not by_suite.get(name)]
    if absent:
        sections += [f"Not run yet: {', '.join(absent)}.", ""]
    unique = {r["key"]: r for r in records}  # a run shared by two suites counts once
    seconds = sum(r.get("seconds", 0.0) for r in unique.values())
    sections.append(f"{len(unique)} runs, {seconds / 3600:.2f} CPU-hours in total (one thread per run).")
    path = out / "RESULTS.md"
    path.write_text("\n".join(sections) + "\n")
    return path


__all__ = ["write_report"]
