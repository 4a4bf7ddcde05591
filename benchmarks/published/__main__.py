"""Public protocols with published figures, reproduced on this machine.

    python -m benchmarks.published              # every benchmark (cached ones are kept), then the report
    python -m benchmarks.published nbody        # calibration, EGNN, the geo transformer
    python -m benchmarks.published nbody_curve  # EGNN and the geo transformer on 100 / 300 / 1,000 systems
    python -m benchmarks.published field        # N-body in a uniform field: every method, every cell
    python -m benchmarks.published inertia      # Inertia, ModifiedInertia: MLP calibration, geo transformer
    python -m benchmarks.published inertia_variants  # phase I forms, adaptive switching, RPP, breaking
    python -m benchmarks.published digits       # rotated digits: RBF SVM and CNN
    python -m benchmarks.published digits_geo   # rotated digits: the geo transformer, tuned on validation
    python -m benchmarks.published shipped      # the shipped models on freshly simulated systems
    python -m benchmarks.published report       # published.json and PUBLISHED.md from the results
    python -m benchmarks.published all --quick  # tiny data and a few steps (a CI test)

Results go to ``benchmarks/results/published/<benchmark>.json`` (``--out`` for another folder); a
benchmark whose JSON exists is not run again unless ``--force`` or named on the command line (the
benchmarks with many runs cache each run in a folder beside it and rerun only with ``--force``). The
simulated data are cached under ``--cache`` (default ``~/.cache/geo-pe/published``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import torch

from benchmarks.published import digits as digits_module
from benchmarks.published import field as field_module
from benchmarks.published import inertia as inertia_module
from benchmarks.published.egnn import EGNN
from benchmarks.published.nbody import (
    SPLITS,
    Systems,
    linear_dynamics_mse,
    linear_dynamics_time,
    load_splits,
    make_split,
    trivial_baselines,
    with_time_reversed,
    write_parquet,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parents[0] / "results" / "published"
PUBLISHED_NBODY = {  # test MSE, Satorras et al. (2021) Table 2; SEGNN: Brandstetter et al. (2022)
    "Linear": 0.0819,
    "SE(3)-Transformer": 0.0244,
    "TFN": 0.0155,
    "GNN": 0.0107,
    "Radial Field": 0.0104,
    "EGNN": 0.0071,
    "SEGNN": 0.0043,
}


def train_egnn(splits: dict[str, Systems], *, epochs: int, seed: int = 0, eval_every: int = 5,
               max_minutes: float | None = None, ema_decay: float = 0.0) -> dict:  # fmt: skip
    """EGNN with the paper's settings (Adam 5e-4, batches of 100); the test MSE at the best validation
    epoch, that model's MSE on systems simulated afresh (`FRESH_NBODY_SEEDS`), and the wall time at
    which it first reached EGNN's published figure. ``ema_decay``: the geo transformer's weight average
    (a control; the paper has none)."""
    result = field_module.train_peer(
        EGNN, splits, epochs=epochs, seed=seed, eval_every=eval_every, target=PUBLISHED_NBODY["EGNN"],
        max_minutes=max_minutes, ema_decay=ema_decay,
    )  # fmt: skip
    model = result.pop("model")
    result["seconds_to_published_egnn"] = result.pop("seconds_to_target")
    count = 200 if len(splits["test"]) < 2000 else 2000  # the quick run's small splits: small fresh sets
    fresh = {str(s): field_module.evaluate(model, make_split(count, s)) for s in FRESH_NBODY_SEEDS}
    result["fresh_test_mse"] = fresh
    return result


def run_seeds(args) -> list[int]:
    """The seeds of the geo transformer and the peers on N-body, the field and Inertia (one in quick)."""
    return args.run_seeds[:1] if args.quick else args.run_seeds


def cached_run(path: Path, run, *, force: bool = False, skip: bool = False, **labels) -> dict | None:
    """The run cached at ``path``, else ``run()`` (labelled and written there); ``force`` reruns,
    ``skip`` never trains (``None`` when nothing is cached)."""
    if path.is_file() and (skip or not force):
        return json.loads(path.read_text())
    if skip:
        return None
    result = run()
    result.pop("model", None)
    result.update(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def nbody(args) -> dict:
    """Calibration, then EGNN and the two-phase geo transformer for each of ``--run-seeds`` (same data,
    the seed sets the initialisation and the batches); each run is cached in ``<out>/nbody_runs/``."""
    sizes = {"train": 200, "validation": 100, "test": 100} if args.quick else SPLITS
    splits = load_splits(args.cache, sizes=sizes)
    if args.parquet is not None:
        write_parquet(splits, args.parquet)
    time = linear_dynamics_time(splits["train"])  # EGNN's Linear baseline, x + t v
    result = {
        "egnn_settings": "4 layers, 64 channels, Adam 5e-4, batch 100 (as the paper); a wall-time budget",
        "protocol": "Satorras et al. 2021 N-body: 5 charged particles, frame 30 -> 40, 3,000/2,000/2,000",
        "sizes": {k: len(v) for k, v in splits.items()},
        "published": PUBLISHED_NBODY,
        "trivial_baselines": trivial_baselines(splits["train"], splits["test"]),
        "calibration_targets": {
            "start_position": 0.27,
            "constant_velocity": 0.11,
            "pooled_linear": 0.07,
            "linear_dynamics": PUBLISHED_NBODY["Linear"],
        },
        # how hard each split is: EGNN's Linear scores 0.0819 on the paper's test split
        "linear_dynamics_by_split": {k: linear_dynamics_mse(v, time) for k, v in splits.items()},
        "egnn": [],
        "geo_transformer": [],
    }
    print(json.dumps({"trivial_baselines": result["trivial_baselines"]}), flush=True)
    folder = args.out / f"nbody_runs{'_quick' * args.quick}"
    for seed in run_seeds(args):
        egnn = partial(train_egnn, splits, epochs=2 if args.quick else args.epochs, seed=seed,
                       eval_every=1 if args.quick else 5, max_minutes=args.minutes)  # fmt: skip
        run = cached_run(folder / f"egnn_s{seed}.json", egnn, force=args.force, skip=args.skip_egnn,
                         method="egnn", seed=seed, max_minutes=args.minutes)  # fmt: skip
        if run is not None:
            result["egnn"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
        if args.egnn_ema_decay:  # the control: does the geo transformer's weight average help EGNN as much?
            egnn = partial(train_egnn, splits, epochs=2 if args.quick else args.epochs, seed=seed,
                           eval_every=1 if args.quick else 5, max_minutes=args.minutes,
                           ema_decay=args.egnn_ema_decay)  # fmt: skip
            run = cached_run(folder / f"egnn_ema_s{seed}.json", egnn, force=args.force, skip=args.skip_egnn,
                             method="egnn_ema", seed=seed, ema_decay=args.egnn_ema_decay)  # fmt: skip
            if run is not None:
                result.setdefault("egnn_ema", []).append(run)
        geo = partial(_geo_nbody, args, splits, seed)
        run = cached_run(folder / f"geo_two_phase_s{seed}.json", geo, force=args.force, skip=args.skip_geo,
                         method="geo_two_phase", seed=seed)  # fmt: skip
        if run is not None:
            result["geo_transformer"].append(run)
        if args.time_reversal:  # both models on the training systems and their time-reversed copies
            doubled = {**splits, "train": with_time_reversed(splits["train"])}
            egnn = partial(train_egnn, doubled, epochs=2 if args.quick else args.epochs, seed=seed,
                           eval_every=1 if args.quick else 5, max_minutes=args.minutes)  # fmt: skip
            run = cached_run(folder / f"egnn_reversal_s{seed}.json", egnn, force=args.force,
                             skip=args.skip_egnn, method="egnn_reversal", seed=seed,
                             max_minutes=args.minutes)  # fmt: skip
            if run is not None:
                result.setdefault("egnn_reversal", []).append(run)
            geo = partial(_geo_nbody, args, doubled, seed, "_reversal", **REVERSAL_GEO_STEPS)
            run = cached_run(folder / f"geo_two_phase_reversal_s{seed}.json", geo, force=args.force,
                             skip=args.skip_geo, method="geo_two_phase_reversal", seed=seed)  # fmt: skip
            if run is not None:
                result.setdefault("geo_transformer_reversal", []).append(run)
    return result


FIELD_CELLS = "onset:0,onset:0.1,onset:0.3,onset:1,throughout:0.3,throughout:1"
FIELD_METHODS = "egnn,plain,plain_augmented,geo_two_phase,geo_unconstrained"
PEERS = {  # method: (model, augmentation)
    "egnn": (EGNN, False),
    "plain": (field_module.PlainTransformer, False),
    "plain_augmented": (field_module.PlainTransformer, True),
}
GEO_SCHEDULES = {  # method: overrides of nbody_static.yaml (steps: the phase I budget)
    "geo_two_phase": lambda steps: {"phase1_steps": steps, "phase2_steps": steps},
    # nbody.yaml (EGNN's dynamics), its own 3,000 + 1,000 steps; the field cells were measured without
    # the weight average that nbody.yaml gained later
    "geo_dynamics_two_phase": lambda steps: {"ema_decay": 0.0},
    "geo_two_phase_scalar": lambda steps: {
        "phase1_constraint": "scalar_identity", "phase1_steps": steps, "phase2_steps": steps,
    },
    "geo_unconstrained": lambda steps: {
        "phase1_constraint": "free", "phase2": "none", "phase1_steps": 2 * steps,
    },
}  # fmt: skip


def _field_run(method: str, args, splits: dict[str, Systems], files: dict, run_dir: Path, seed: int) -> dict:
    if method in PEERS:
        make_model, augment = PEERS[method]
        return field_module.train_peer(
            make_model, splits, epochs=1 if args.quick else 10_000, augment=augment, seed=seed,
            eval_every=1 if args.quick else 5, max_minutes=args.field_minutes,
        )  # fmt: skip
    overrides = GEO_SCHEDULES[method](4 if args.quick else args.field_geo_steps)
    out = run_dir / (method if seed == 0 else f"{method}_s{seed}")
    config = "nbody.yaml" if method == "geo_dynamics_two_phase" else "nbody_static.yaml"
    return train_geo_transformer(HERE / config, files, out, args.quick, seed=seed, **overrides)


def field(args) -> dict:
    """The N-body system in a uniform field (see `benchmarks.published.field`): every method on every
    cell for each of ``--run-seeds``. Each (cell, method, seed) is cached in ``<out>/field/`` so runs can
    be split across processes (``--field-cells``, ``--field-methods``) and resumed."""
    sizes = {"train": 200, "validation": 100, "test": 100} if args.quick else SPLITS
    folder = args.out / ("field_quick" if args.quick else "field")
    folder.mkdir(parents=True, exist_ok=True)
    cells = args.field_cells
    if args.quick and cells == FIELD_CELLS:
        cells = "onset:0,onset:1"
    methods = args.field_methods.split(",")
    unknown = sorted(set(methods) - {*PEERS, *GEO_SCHEDULES})
    if unknown:
        raise ValueError(
            f"--field-methods: unknown {unknown}; expected some of {sorted([*PEERS, *GEO_SCHEDULES])}"
        )
    for seed in run_seeds(args):  # seed by seed, so a run cut short keeps whole seeds
        for mode, eps in field_module.parse_cells(cells):
            cell = field_module.cell_name(mode, eps)
            field_from = field_module.MODES[mode] if eps else 0
            splits = load_splits(args.cache, field=eps, field_from=field_from, sizes=sizes)
            files = None
            for method in methods:
                path = folder / f"{cell}_{method}_s{seed}.json"
                if path.is_file() and not args.force:
                    continue
                if files is None:
                    name = f"{cell}{'_quick' * args.quick}"
                    files = write_parquet(splits, args.cache / "field_parquet" / name)
                print(f"field {cell}: {method}, seed {seed}", file=sys.stderr, flush=True)
                run_dir = args.cache / "runs" / "field" / cell
                run = partial(_field_run, method, args, splits, files, run_dir, seed)
                labels = {"cell": cell, "mode": mode, "eps": eps, "method": method, "seed": seed}
                if method in PEERS:
                    labels["max_minutes"] = args.field_minutes
                cached_run(path, run, force=True, **labels)
    return collect_field(folder, args.field_geo_steps)


def collect_field(folder: Path, geo_steps: int) -> dict:
    """{cell: {mode, eps, equivariant_floor, methods: {method: test MSE (mean, std, per seed) and cost}}}
    from the cached runs; a two-phase run gives its phase I ("equivariant") and its selected phase
    ("two_phase")."""
    cells: dict = {}
    runs: dict = defaultdict(list)  # (cell, method) -> [(seed, test MSE, seconds)]
    minutes = set()  # the peers' wall-time budgets
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        if "max_minutes" in run:
            minutes.add(run["max_minutes"])
        cells.setdefault(run["cell"], {
            "mode": run["mode"], "eps": run["eps"], "methods": {},
            "equivariant_floor": field_module.equivariant_floor(run["eps"], run["mode"]),
        })  # fmt: skip
        if "phases" in run:
            phases, selected = run["phases"], run["selected_phase"]
            label = run["method"].removeprefix("geo_")
            runs[run["cell"], label].append(
                (run["seed"], phases[selected - 1]["test_mse"], run["wall_seconds"])
            )
            if len(phases) > 1:
                name = "equivariant" if label == "two_phase" else f"phase1_of_{label}"
                name = "dynamics_equivariant" if label == "dynamics_two_phase" else name
                runs[run["cell"], name].append((run["seed"], phases[0]["test_mse"], None))
        else:
            runs[run["cell"], run["method"]].append((run["seed"], run["test_mse"], run["seconds"]))
    budgets = " or ".join(map(str, sorted(minutes)))
    settings = (f"mean ± std over the seeds run (n); each peer trains for {budgets} "
                f"min of wall time on one core, the geo transformer for {geo_steps:,} steps per phase (about "
                "4 min; with EGNN's dynamics, nbody.yaml's 3,000 + 1,000 steps); test MSE at the best "
                "validation")  # fmt: skip
    for (cell, method), entries in sorted(runs.items()):
        entries.sort()
        values = [e[1] for e in entries]
        seconds = [e[2] for e in entries if e[2] is not None]
        cells[cell]["methods"][method] = {
            "test_mse": statistics.fmean(values),
            "test_mse_std": statistics.pstdev(values),
            "seeds": [e[0] for e in entries],
            "test_mse_per_seed": values,
            "seconds": statistics.fmean(seconds) if seconds else None,
        }
    return {
        "protocol": field_module.__doc__.split("\n\n")[0].replace("\n", " "),
        "settings": settings,
        "cells": cells,
    }


CURVE_SIZES = (100, 300, 1000)  # 3,000: the field benchmark's eps = 0 cell (same data, same budget)
CURVE_STEPS = 3000  # optimizer steps of batches of 100 at every size (EGNN)
CURVE_METHODS = {  # method: (config, overrides); EGNN trains CURVE_STEPS steps
    "egnn": (None, {}),
    "geo_two_phase": ("nbody_static.yaml", {"phase1_steps": 1000, "phase2_steps": 1000}),
    # EGNN's dynamics, CURVE_STEPS in all, measured before nbody.yaml gained its weight average
    "geo_dynamics_two_phase": ("nbody.yaml", {"phase1_steps": 2250, "phase2_steps": 750, "ema_decay": 0.0}),
}


def nbody_curve(args) -> dict:
    """The N-body learning curve: EGNN and the two-phase geo transformer on the first 100 / 300 / 1,000
    training systems (validation and test unchanged), the same number of steps at every size. Each
    (size, method) is cached in ``<out>/nbody_curve/``."""
    folder = args.out / ("nbody_curve_quick" if args.quick else "nbody_curve")
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": 200, "validation": 100, "test": 100} if args.quick else SPLITS
    splits = load_splits(args.cache, sizes=sizes)
    for size in (50,) if args.quick else CURVE_SIZES:
        subset = {**splits, "train": splits["train"].subset(size)}
        for method, (config, overrides) in CURVE_METHODS.items():
            path = folder / f"{size}_{method}.json"
            if path.is_file() and not args.force:
                continue
            if method == "egnn":
                epochs = 1 if args.quick else -(-CURVE_STEPS * 100 // size)
                result = field_module.train_peer(EGNN, subset, epochs=epochs, eval_every=max(1, epochs // 40))
                result.pop("model")
            else:
                files = write_parquet(subset, args.cache / f"nbody_curve_{size}{'_quick' * args.quick}")
                run_dir = args.cache / "runs" / "nbody_curve" / f"{size}_{method}"
                result = train_geo_transformer(HERE / config, files, run_dir, args.quick, **overrides)
                result["test_mse"] = min(result["phases"], key=lambda p: p["validation_mse"])["test_mse"]
            result.update(train_size=size, method=method)
            path.write_text(json.dumps(result, indent=1) + "\n")
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return {
        "steps": CURVE_STEPS,
        "rows": [{k: r[k] for k in ("train_size", "method", "test_mse")} for r in rows],
    }


PUBLISHED_INERTIA = {  # test MSE: EMLP (Finzi, Welling, Wilson 2021) Table; RPP (Finzi, Benton, Wilson 2021)
    "inertia": {"MLP": 3.24, "EMLP O(3)": 0.136},
    "modified_inertia": {"MLP": 4.79, "EMLP O(3)": 1.19},
}


def train_geo_transformer(config: Path, files: dict, out: Path, quick: bool, **overrides) -> dict:
    """The geo transformer through the dataset task on ``files``: the run's results (both phases). A
    ``quick`` run keeps its own few steps: step counts among ``overrides`` are dropped."""
    from train import load_config, train

    argv = ["--config", str(config), "--output_dir", str(out), "--overwrite_output_dir", "true",
            "--report_to", "none", "--plot", "false"]  # fmt: skip
    for split, path in files.items():
        argv += [f"--{split}_file", str(path)]
    if quick:
        own = {k: v for k, v in overrides.items() if not k.endswith("_steps")}
        overrides = {"phase1_steps": 4, "phase2_steps": 4, "eval_steps": 2, "save_steps": 8, "batch_size": 20,
                     "eval_batch_size": 20, **own}  # fmt: skip
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    result = train(load_config(argv))
    keep = ("phase", "best_step", "validation_mse", "test_mse", "equivariance_error", "trainable_parameters")
    return {
        "phases": [{k: p.get(k) for k in keep} for p in result["phases"]],
        "selected_phase": result["selected_phase"],
        "wall_seconds": result["wall_seconds"],
        "model_dir": str(out / "model"),
    }


FRESH_NBODY_SEEDS = (7, 8)  # data seeds no split of any run was drawn with (those are 1000 seed + 0, 1, 2)


# twice the training examples: 1.5x nbody.yaml's steps, where validation still fell at 4,000 (seed 0:
# 0.0069 there, 0.0067 at 6,000)
REVERSAL_GEO_STEPS = {"phase1_steps": 4500, "phase2_steps": 1500}


def _geo_nbody(args, splits, seed: int, variant: str = "", **overrides) -> dict:
    """The two-phase geo transformer (``nbody.yaml`` with ``overrides``), and its selected model scored on
    2,000 systems simulated afresh for each of `FRESH_NBODY_SEEDS` (200 with ``--quick``); ``variant``
    names the training data's own files and run folder (``"_reversal"``)."""
    from benchmarks.published.shipped import load, nbody_mse

    name = f"nbody{variant}_quick" if args.quick else f"nbody{variant}_parquet"
    files = write_parquet(splits, args.cache / name)
    out = args.cache / "runs" / (f"nbody{variant}" if seed == 0 else f"nbody{variant}_s{seed}")
    result = train_geo_transformer(HERE / "nbody.yaml", files, out, args.quick, seed=seed, **overrides)
    model = load("model", out)
    count = 200 if args.quick else 2000
    result["fresh_test_mse"] = {str(s): nbody_mse(model, s, count) for s in FRESH_NBODY_SEEDS}
    return result


FRESH_INERTIA_SEEDS, FRESH_INERTIA_COUNT = (7, 8), 10_000  # data seeds of no split (those are 0, 1, 2)


def fresh_inertia(run_dir: Path, breaking: float, count: int) -> dict:
    """The run's selected model on ``count`` systems drawn afresh for each of `FRESH_INERTIA_SEEDS`:
    the error summary (mean, median, tails) of each seed and of all of them together."""
    from benchmarks.published.shipped import error_summary, load, modified_inertia_errors

    model = load("model", run_dir)
    errors = {s: modified_inertia_errors(model, s, count, breaking) for s in FRESH_INERTIA_SEEDS}
    out = {str(s): error_summary(e) for s, e in errors.items()}
    out["all"] = error_summary(torch.cat(list(errors.values())))
    return out


def inertia(args) -> dict:
    """Both tasks: the data's calibration (the MLP as the papers train it), the O(3) floor of the broken
    task, and the geo transformer (phase I and the phase II that follows)."""
    sizes = {"train": 40, "validation": 20, "test": 20} if args.quick else inertia_module.SPLIT
    result = {
        "protocol": inertia_module.__doc__.split("\n\n")[1].replace("\n", " "),
        "published": PUBLISHED_INERTIA,
    }
    folder = args.out / f"inertia_runs{'_quick' * args.quick}"
    for name, breaking in (("inertia", 0.0), ("modified_inertia", 0.3)):
        own = {"mlp": [], "geo_transformer": []}
        floors = []  # of each seed's test split; the table gives their mean
        for seed in range(1 if args.quick else args.seeds):
            splits = inertia_module.make_splits(seed, breaking, sizes)
            own["mlp"].append(
                inertia_module.train_reference_mlp(splits, epochs=2 if args.quick else 300, seed=seed)
            )
            floors.append(inertia_module.equivariant_floor(splits["test"], breaking))
            print(json.dumps({name: {"seed": seed, "mlp": own["mlp"][-1]["test_mse"]}}), flush=True)
        own["equivariant_floor"] = statistics.fmean(floors)
        for seed in run_seeds(args):  # the geo transformer: data and initialisation from the seed

            def geo(seed=seed, name=name, breaking=breaking):
                splits = inertia_module.make_splits(seed, breaking, sizes)
                files = inertia_module.write_parquet(splits, args.cache / f"{name}_s{seed}")
                out = args.cache / "runs" / f"{name}_s{seed}"
                result = train_geo_transformer(HERE / f"{name}.yaml", files, out, args.quick, seed=seed)
                result["fresh"] = fresh_inertia(out, breaking, 200 if args.quick else FRESH_INERTIA_COUNT)
                return result

            path = folder / f"{name}_geo_s{seed}.json"
            labels = {"task": name, "method": "geo_transformer", "seed": seed}
            own["geo_transformer"].append(cached_run(path, geo, force=args.force, **labels))
        result[name] = own
    return result


# the models the schedules were measured with, before moment_readout
DIRECTIONS, MODIFIED_DIRECTIONS = "inertia_directions", "modified_inertia_directions"
INERTIA_VARIANTS = {  # name: (breaking coefficient, config, overrides); seed 0 unless VARIANT_SEEDS
    "modified_commutant": (0.3, MODIFIED_DIRECTIONS, {}),
    "modified_scalar_identity": (0.3, MODIFIED_DIRECTIONS, {"phase1_constraint": "scalar_identity"}),
    "modified_adaptive": (0.3, MODIFIED_DIRECTIONS, {"phase1_steps": 4000, "switch_patience": 2}),
    "modified_residual": (0.3, MODIFIED_DIRECTIONS, {"phase1_constraint": "residual", "phase2": "none",
                                                    "phase1_steps": 4000}),
    "modified_unconstrained": (0.3, MODIFIED_DIRECTIONS, {"phase1_constraint": "free", "phase2": "none",
                                                         "phase1_steps": 4000}),
    # the residual pathway on the headline model (moment_readout), two-phase's 3,000 + 3,000 steps in one
    "modified_residual_moment": (0.3, "modified_inertia", {"phase1_constraint": "residual", "phase2": "none",
                                                           "phase1_steps": 6000}),
    # both schedules on twice the budget, each phase ended by 2,000 steps without a better validation MSE
    "modified_two_phase_long": (0.3, "modified_inertia", {"phase1_steps": 6000, "phase2_steps": 6000,
                                                          "early_stopping_patience": 8}),
    "modified_residual_moment_long": (0.3, "modified_inertia", {"phase1_constraint": "residual",
                                                                "phase2": "none", "phase1_steps": 12000,
                                                                "early_stopping_patience": 8}),
    "breaking_0.1": (0.1, MODIFIED_DIRECTIONS, {}),
    "breaking_1": (1.0, MODIFIED_DIRECTIONS, {}),
    "inertia_commutant": (0.0, DIRECTIONS, {}),
    "inertia_scalar_identity": (0.0, DIRECTIONS, {"phase1_constraint": "scalar_identity"}),
}  # fmt: skip


# the residual pathway beside two-phase's 3 seeds on ModifiedInertia (`inertia`, the same data per seed);
# every other variant runs on seed 0
SEEDED_VARIANTS = ("modified_residual", "modified_residual_moment", "modified_two_phase_long",
                   "modified_residual_moment_long")  # fmt: skip
VARIANT_SEEDS = dict.fromkeys(SEEDED_VARIANTS, (0, 1, 2))


def _validation_curve(run_dir: Path) -> list[dict]:
    """(step, phase, seconds, validation MSE) of every evaluation in a run's log."""
    records = (json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines())
    keep = ("step", "phase", "seconds", "validation_mse")
    return [{k: r.get(k) for k in keep} for r in records if r["kind"] == "eval"]


def inertia_variants(args) -> dict:
    """The geo transformer's schedules on Inertia/ModifiedInertia: scalar-identity against commutant
    phase I, adaptive switching, the residual pathway (RPP-style) and unconstrained training, and the
    breaking coefficient. Each variant is cached in ``<out>/inertia_variants/`` (``--variants`` picks)."""
    folder = args.out / ("inertia_variants_quick" if args.quick else "inertia_variants")
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": 40, "validation": 20, "test": 20} if args.quick else inertia_module.SPLIT
    names = args.variants.split(",") if args.variants else list(INERTIA_VARIANTS)
    if args.quick and not args.variants:
        names = ["modified_commutant", "modified_scalar_identity"]
    for name in names:
        if name not in INERTIA_VARIANTS:
            raise ValueError(f"--variants: unknown {name!r}; expected some of {sorted(INERTIA_VARIANTS)}")
        breaking, config, overrides = INERTIA_VARIANTS[name]
        for seed in (0,) if args.quick else VARIANT_SEEDS.get(name, (0,)):
            key = name if seed == 0 else f"{name}_s{seed}"

            def run(seed=seed, key=key, breaking=breaking, config=config, overrides=overrides):
                splits = inertia_module.make_splits(seed, breaking, sizes)
                files = inertia_module.write_parquet(splits, args.cache / f"inertia_b{breaking:g}_s{seed}")
                out = args.cache / "runs" / "inertia_variants" / key
                result = train_geo_transformer(HERE / f"{config}.yaml", files, out, args.quick, seed=seed,
                                               **overrides)  # fmt: skip
                floor = inertia_module.equivariant_floor(splits["test"], breaking)
                return {**result, "curve": _validation_curve(out), "equivariant_floor": floor}

            cached_run(folder / f"{key}.json", run, force=args.force, name=name, seed=seed, breaking=breaking,
                       overrides=overrides)  # fmt: skip
    return {"variants": {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}}


def digits(args) -> dict:
    """RBF SVM and CNN (with and without augmentation) on every cell; the geo transformer's figures are
    read from the experiment suites' runs (benchmarks/results/runs.jsonl)."""
    names = args.digits_cells.split(",")
    unknown = sorted(set(names) - set(digits_module.CELLS))
    if unknown:
        raise ValueError(f"--digits-cells: unknown {unknown}; expected some of {sorted(digits_module.CELLS)}")
    cells = {name: digits_module.CELLS[name] for name in names}
    if args.quick:
        rows = digits_module.run(data_seeds=1, sizes=(50,), cells={"rotated_45": (45.0, 0)}, epochs=2)
    else:
        rows = digits_module.run(
            data_seeds=args.data_seeds, cells=cells, cache=args.out / "digits_rows.jsonl"
        )
    return {"protocol": digits_module.__doc__.split("\n\n")[1].replace("\n", " "), "rows": rows,
            "summary": digits_module.summary(rows)}  # fmt: skip


def digits_geo(args) -> dict:
    """The geo transformer on the digits cells (see `benchmarks.published.digits_geo`); each run is cached
    in ``<out>/digits_geo/runs.jsonl``."""
    from benchmarks.published import digits_geo as module

    folder = args.out / ("digits_geo_quick" if args.quick else "digits_geo")
    sizes = {"h32x2": module.SIZES["h32x2"]} if args.quick else module.SIZES
    result = module.run(folder / "runs.jsonl", jobs=args.jobs, quick=args.quick, sizes=sizes)
    result["summary"] = module.summary(result)
    return result


def shipped(args) -> dict:
    """The shipped models on freshly simulated test systems (seeds 7 and 8; 2,000 each)."""
    from benchmarks.published.shipped import fresh_nbody, fresh_scores

    count = 200 if args.quick else 2000
    train = load_splits(args.cache, sizes={"train": 200 if args.quick else SPLITS["train"]})["train"]
    time = linear_dynamics_time(train)
    difficulty = {str(s): linear_dynamics_mse(fresh_nbody(s, count), time) for s in FRESH_NBODY_SEEDS}
    return {"fresh_test_mse": fresh_scores(count=count), "fresh_nbody_linear_dynamics": difficulty}


BENCHMARKS = {"nbody": nbody, "nbody_curve": nbody_curve, "field": field, "inertia": inertia,
              "inertia_variants": inertia_variants, "digits": digits, "digits_geo": digits_geo,
              "shipped": shipped}  # fmt: skip


def seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: distinct seeds, none negative."""
    try:
        seeds = [int(item) for item in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0 separated by commas, got {text!r}")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.published", description=__doc__.split("\n")[0]
    )
    parser.add_argument("benchmark", nargs="?", default="all", choices=[*sorted(BENCHMARKS), "all", "report"])
    parser.add_argument("--force", action="store_true", help="run benchmarks whose results exist")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the baselines")
    parser.add_argument(
        "--run-seeds",
        type=seed_list,
        default=[0, 1, 2],
        help="seeds of the geo transformer and the N-body peers (nbody, field, inertia): 0,1,2",
    )
    parser.add_argument(
        "--time-reversal", action="store_true",
        help="N-body: also train EGNN and the geo transformer on the training systems and their "
        "time-reversed copies (nbody.time_reversed)",
    )  # fmt: skip
    parser.add_argument(
        "--skip-geo", action="store_true", help="N-body: train no geo transformer (keep cached runs)"
    )
    parser.add_argument("--skip-egnn", action="store_true", help="N-body: train no EGNN (keep cached runs)")
    parser.add_argument("--quick", action="store_true", help="tiny data and a few epochs (CI)")
    parser.add_argument("--epochs", type=int, default=10_000, help="EGNN training epochs (the paper's)")
    parser.add_argument(
        "--egnn-ema-decay", type=float, default=0.0,
        help="N-body: also train EGNN with the geo transformer's weight average of this decay (a control)",
    )  # fmt: skip
    parser.add_argument(
        "--minutes", type=float, help="stop EGNN after this wall time (the budget of a CPU run)"
    )
    parser.add_argument("--field-cells", default=FIELD_CELLS, help="field: mode:eps,... (onset|throughout)")
    parser.add_argument("--field-methods", default=FIELD_METHODS, help="field: methods to run")
    parser.add_argument("--field-minutes", type=float, default=3.5, help="field: wall time of each peer")
    parser.add_argument("--field-geo-steps", type=int, default=1000, help="field: geo steps per phase")
    parser.add_argument("--variants", help="inertia_variants: names to run (default: all)")
    parser.add_argument("--data-seeds", type=int, default=5, help="digits, digits_geo: data seeds (splits)")
    parser.add_argument("--digits-cells", default=",".join(digits_module.CELLS), help="digits: cells to run")
    parser.add_argument("--parquet", type=Path, help="also write the splits as parquet here (dataset task)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "geo-pe" / "published")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="digits_geo: worker processes")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: expected at least 1, got {args.jobs}")
    torch.set_num_threads(args.threads)
    np.seterr(all="ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    names = sorted(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    for name in names if args.benchmark != "report" else []:
        path = args.out / f"{name}{suffix}.json"
        if path.is_file() and args.benchmark == "all" and not args.force:
            print(f"kept {path} (--force to run again)", file=sys.stderr)
            continue
        started = time.perf_counter()
        result = BENCHMARKS[name](args)
        result["benchmark_seconds"] = time.perf_counter() - started
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    from benchmarks.published.report import write_report

    write_report(args.out, suffix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
