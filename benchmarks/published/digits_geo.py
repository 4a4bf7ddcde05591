"""The geo transformer on the rotated-digits cells of `benchmarks.published.digits`, its size chosen on
validation and its steps by early stopping.

The runs reuse the experiment runner (`benchmarks.experiments.runner`): each run is a `Spec` on
``configs/experiments/digits.yaml`` with overrides, cached by key in a JSON-lines file, so an interrupted
benchmark picks up where it stopped.

* Tuning (``seed`` 100, which no table reports): every `SIZES` entry (width, depth, dropout and weight
  decay), two-phase, on the two hardest cells at 300 images (+-45 degrees, and +-45 degrees with tilt
  labels). The size with the best mean validation accuracy is kept.
* Steps: phase I and phase II each get up to ``PHASE_STEPS`` steps and end after ``PATIENCE``
  evaluations (every 50 steps) without a better validation accuracy, so each run stops where it has
  converged on validation; the best phase on validation is reported.
* Final: the recommended two-phase schedule (equivariant phase I, then free at the same learning rate)
  on every cell and training size, seeds 0, 1, 2 (the CNN's seeds; the data are the same, ``data_seed``
  0). The schedules (unconstrained and adaptive switching) run on the tilt cell at 300 images, where
  two-phase lost before (the scalar-identity phase I is compared at the experiments' scale, in their
  ``schedules`` suite).
* In-range augmentation (``two_phase_augmented``): two-phase with every phase II training example
  turned afresh within the training range (``in_range_augmentation: phase2``; tilt labels follow the
  new angle), on every cell (+-45 degrees, the full circle, +-45 degrees with tilt labels) at every size
  over data seeds 0-4 (each its own split and rotations, as the baselines').
* Planar points (``planar_augmented``): the pixels handed as points in the plane about the image centre
  (``planar_points``, ``point_attributes``, ``point_origin: origin``), with Gaussian radial functions of
  the pairwise pixel distances biasing every head (``distance_bias``), and in-range augmentation in phase
  II. Its depth (`PLANAR_SIZES`) is chosen on validation (seed 100, +-45 degrees, 300 images, the
  method itself), then it runs on ``PLANAR_CELLS`` (+-45 degrees and the full circle, with that depth)
  at every size over data seeds 0-4.
* Local descriptors (``planar_descriptors``): the planar model (same depth, in-range augmentation in
  phase II) with each pixel's neighbourhood as invariant inputs (``local_descriptor_shells``: the
  power spectrum over shells at the grid's six shortest distances and circular harmonics up to
  frequency 3, neighbours weighed by intensity; one setting, not tuned) on +-45 degrees at every size
  over data seeds 0-4, and in the upright control. For each cell, data seed and size,
  ``selected_on_validation`` keeps whichever of the augmented models (angles, planar points, and
  descriptors where they ran) has the best validation accuracy.
* The upright control (``UPRIGHT_CELL``): the planar model and the baselines at 50 images with no rotation
  at all, over the same data seeds. It separates what the rotations cost each model from what the model
  itself costs at this size. The same model trained free from the first step (``planar_free``: no
  equivariant phase, in-range augmentation throughout, the two phases' steps in one) runs upright and at
  +-45 degrees: it separates what the symmetry prior costs from what the architecture costs. The planar
  model with local descriptors (below) runs upright too.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from benchmarks.experiments.runner import read_cache, run_specs
from benchmarks.experiments.suites import Spec
from benchmarks.published import digits
from benchmarks.published.report import (
    AUGMENTED_METHOD,
    DESCRIPTOR_METHOD,
    FREE_METHOD,
    PLANAR_METHOD,
    SELECTED_METHOD,
)

PHASE_STEPS, PATIENCE = 3000, 10
TUNING_SEED, SEEDS = 100, (0, 1, 2)
TUNING_CELLS = (("rotated_45", 300), ("tilt_45", 300))
ENCODINGS_16 = {"pe_absolute": "so2:2x1+2x2+2x3+2x4", "pe_relative": "so2:2x1+2x2+2x3+2x4"}
SIZES = {  # name: model, batch and regularisation overrides (heads of 8 channels at width 32, 16 at 64)
    "h32x2": {"hidden_size": 32, "num_hidden_layers": 2, "batch_size": 32},
    "h64x2": {"hidden_size": 64, "num_hidden_layers": 2, "batch_size": 64, **ENCODINGS_16},
    "h32x4": {"hidden_size": 32, "num_hidden_layers": 4, "batch_size": 32},
    "h32x2_regularised": {
        "hidden_size": 32, "num_hidden_layers": 2, "batch_size": 32, "attention_dropout": 0.1,
        "classifier_dropout": 0.1, "weight_decay": 0.01,
    },
}  # fmt: skip
PLANAR = {  # pixels as points about the image centre; radial functions every pixel apart, up to 7 pixels
    "planar_points": True, "point_attributes": ["angle"], "point_origin": "origin", "distance_bias": 8,
    "distance_bias_max": 7.0,
}  # fmt: skip
DESCRIPTORS = {  # each pixel's neighbourhood: power spectrum over the grid's six shortest distances
    "local_descriptor_shells": [1.0, math.sqrt(2), 2.0, math.sqrt(5), math.sqrt(8), 3.0],
    "local_descriptor_frequencies": 3, "local_descriptor_width": 0.2, "local_descriptor_weight": 0,
}  # fmt: skip
PLANAR_SIZES = {
    f"planar_h32x{depth}": {**SIZES["h32x2_regularised"], **PLANAR, "num_hidden_layers": depth}
    for depth in (2, 3, 4, 6)
}
ALL_SIZES = {**SIZES, **PLANAR_SIZES}
PLANAR_CELLS = ("rotated_45", "full_circle")  # the depth is tuned on the first, the margin goal's cell
SCHEDULES = {  # method: overrides on top of the common ones (two_phase is the library's default)
    "two_phase": {},
    "two_phase_augmented": {"in_range_augmentation": "phase2"},  # weak equivariance by data in phase II
    "planar_augmented": {"in_range_augmentation": "phase2"},  # with a planar size (PLANAR_SIZES)
    DESCRIPTOR_METHOD: {"in_range_augmentation": "phase2", **DESCRIPTORS},  # planar, with local descriptors
    "unconstrained": {"phase1_constraint": "free", "phase2": "none", "phase1_steps": 2 * PHASE_STEPS},
    "adaptive": {"switch_patience": 4},  # phase I ends after 200 steps without a better validation
    "scalar_identity": {"phase1_constraint": "scalar_identity"},
}
# the control: the planar model unconstrained (no symmetry prior), augmented from the first step
SCHEDULES[FREE_METHOD] = {**SCHEDULES["unconstrained"], "in_range_augmentation": "all"}
SCHEDULE_CELLS = {"tilt_45": (0, 1, 2)}  # cell at 300 images: seeds
FREE_METHODS = ("unconstrained", FREE_METHOD)  # one phase: both phases' steps in phase I
SCHEDULE_METHODS = ("unconstrained", "adaptive")  # the scalar identity: the experiments' schedules suite
QUICK = {"phase1_steps": 8, "phase2_steps": 4, "eval_steps": 4, "early_stopping_patience": 2}


AUGMENTED_CELLS, DATA_SEEDS = ("rotated_45", "full_circle", "tilt_45"), (0, 1, 2, 3, 4)  # every data seed
UPRIGHT_CELL, UPRIGHT_SIZE = "upright", 50  # the control: rotation_range 0, baselines and planar model
CONTROL_METHODS = (PLANAR_METHOD, FREE_METHOD, DESCRIPTOR_METHOD)  # the planar model three ways


def spec(
    cell: str, train_size: int, size: str, method: str, seed: int, quick: bool = False, data_seed: int = 0
) -> Spec:
    range_deg, tilt = digits.CELLS[cell]
    overrides = {
        "rotation_range": range_deg, "tilt_digits": tilt, "train_size": train_size, "data_seed": data_seed,
        "seed": seed, "learning_rate": 3e-3, "phase1_constraint": "equivariant", "phase2": "free",
        "phase2_lr_multiplier": 1.0, "phase1_steps": PHASE_STEPS, "phase2_steps": PHASE_STEPS,
        "eval_steps": 50, "early_stopping_patience": PATIENCE, **ALL_SIZES[size],
        **SCHEDULES[method],
    }  # fmt: skip
    if quick:
        overrides.update(QUICK, switch_patience=min(overrides.get("switch_patience", 0), 1))
        if method in FREE_METHODS:  # both phases' steps in one, as in the full run
            overrides["phase1_steps"] = QUICK["phase1_steps"] + QUICK["phase2_steps"]
    labels = {"cell": cell, "train_size": train_size, "size": size, "method": method, "seed": seed,
              "data_seed": data_seed}  # fmt: skip
    return Spec("digits_geo", "digits", labels, overrides)


def upright_spec(size: str, data_seed: int, quick: bool = False, method: str = "planar_augmented") -> Spec:
    """The planar model (``size``, trained by ``method``) at `UPRIGHT_SIZE` images with no rotation
    (in-range augmentation is then the identity), labelled `UPRIGHT_CELL`."""
    upright = spec("rotated_45", UPRIGHT_SIZE, size, method, data_seed, quick, data_seed)
    upright.overrides["rotation_range"] = 0.0
    upright.labels["cell"] = UPRIGHT_CELL
    return upright


def descriptor_specs(size: str, quick: bool = False) -> list[Spec]:
    """The planar model with local descriptors (`DESCRIPTOR_METHOD`) on the +-45 degree cell, size by
    size over the data seeds (a run cut short keeps whole sizes)."""
    return [
        spec(PLANAR_CELLS[0], n, size, DESCRIPTOR_METHOD, data_seed, quick, data_seed)
        for n in ((50,) if quick else digits.TRAIN_SIZES)
        for data_seed in ((0,) if quick else DATA_SEEDS)
    ]


def _records(runs_file: Path, specs: list[Spec]) -> list[dict]:
    cache = read_cache(runs_file)
    return [{**cache[s.key], "labels": s.labels} for s in specs if s.key in cache]


def choose_size(records: list[dict]) -> str:
    """The size with the best mean validation accuracy over the tuning cells."""
    by_size: dict[str, list[float]] = {}
    for r in records:
        by_size.setdefault(r["labels"]["size"], []).append(r["validation"])
    return max(by_size, key=lambda s: statistics.fmean(by_size[s]))


def run(runs_file: Path, jobs: int = 2, quick: bool = False, sizes=SIZES) -> dict:
    """Tune the size, then run every cell and the schedules; returns the records of each stage."""
    cells = (("rotated_45", 50),) if quick else TUNING_CELLS
    tuning = [spec(c, n, s, "two_phase", TUNING_SEED, quick) for c, n in cells for s in sizes]
    failures = run_specs(tuning, runs_file, jobs)
    tuning_records = _records(runs_file, tuning)
    chosen = choose_size(tuning_records)
    final = [  # seed by seed: a run cut short still has whole cells
        spec(c, n, chosen, "two_phase", seed, quick)
        for seed in ((0,) if quick else SEEDS)
        for c in (("rotated_45",) if quick else digits.CELLS)
        for n in ((50,) if quick else digits.TRAIN_SIZES)
    ]
    schedules = [
        spec(c, 50 if quick else 300, chosen, m, seed, quick)
        for c, seeds in ((("tilt_45", (0,)),) if quick else SCHEDULE_CELLS.items())
        for m in (SCHEDULES if quick else SCHEDULE_METHODS)
        if m not in ("two_phase", "two_phase_augmented", *CONTROL_METHODS)  # those need a planar size
        for seed in seeds
    ]
    augmented = [  # the model seed follows the data seed, as the baselines' CNN; cell by cell
        spec(cell, n, chosen, "two_phase_augmented", data_seed, quick, data_seed)
        for cell in (AUGMENTED_CELLS[:1] if quick else AUGMENTED_CELLS)
        for data_seed in ((0,) if quick else DATA_SEEDS)
        for n in ((50,) if quick else digits.TRAIN_SIZES)
    ]
    # the last seed after the schedules: a run cut short by its budget keeps every table filled
    last = [s for s in final if s.labels["seed"] == SEEDS[-1]]
    first = [s for s in final if s not in last]
    failures += run_specs(first + schedules + last + augmented, runs_file, jobs)
    planar_sizes = {name: PLANAR_SIZES[name] for name in list(PLANAR_SIZES)[: 1 if quick else None]}
    planar_cells = cells if quick else [(PLANAR_CELLS[0], 300)]
    planar_tuning = [
        spec(c, n, s, "planar_augmented", TUNING_SEED, quick) for c, n in planar_cells for s in planar_sizes
    ]
    failures += run_specs(planar_tuning, runs_file, jobs)
    planar_tuning_records = _records(runs_file, planar_tuning)
    planar_size = choose_size(planar_tuning_records)
    planar = [
        spec(cell, n, planar_size, "planar_augmented", data_seed, quick, data_seed)
        for cell in (PLANAR_CELLS[:1] if quick else PLANAR_CELLS)
        for data_seed in ((0,) if quick else DATA_SEEDS)
        for n in ((50,) if quick else digits.TRAIN_SIZES)
    ]
    control_seeds = (0,) if quick else DATA_SEEDS
    upright = [upright_spec(planar_size, data_seed, quick, method)
               for method in CONTROL_METHODS for data_seed in control_seeds]  # fmt: skip
    free = [spec(PLANAR_CELLS[0], UPRIGHT_SIZE, planar_size, "planar_free", data_seed, quick, data_seed)
            for data_seed in control_seeds]  # fmt: skip
    failures += run_specs(planar + upright + free, runs_file, jobs)
    failures += run_specs(descriptor_specs(planar_size, quick), runs_file, jobs)
    upright_baselines = digits.run(
        data_seeds=1 if quick else len(DATA_SEEDS), sizes=(UPRIGHT_SIZE,), cells={UPRIGHT_CELL: (0.0, 0)},
        epochs=2 if quick else 200, cache=runs_file.parent / "upright_baselines.jsonl", log=lambda row: None,
        methods=("rbf_svm", "cnn"),  # upright, the CNN's augmentation has nothing to turn
    )  # fmt: skip
    if failures:
        raise RuntimeError(f"digits_geo: {len(failures)} runs failed, first: {failures[0]['error']}")
    return {
        "protocol": __doc__.split("\n\n")[2].replace("\n", " "),
        "chosen_size": chosen,
        "sizes": sizes,
        "tuning": tuning_records,
        "final": _records(runs_file, final),
        "schedules": _records(runs_file, schedules),
        "augmented": _records(runs_file, augmented),
        "planar_size": planar_size,
        "planar_sizes": planar_sizes,
        "planar_tuning": planar_tuning_records,
        "planar": _records(runs_file, planar),
        "upright": _records(runs_file, upright),
        "free": _records(runs_file, free),
        "descriptors": _records(runs_file, descriptor_specs(planar_size, quick)),
        "upright_baselines": upright_baselines,
    }


def selected_on_validation(
    augmented: list[dict], planar: list[dict], descriptors: list[dict] = ()
) -> list[dict]:
    """Per cell, training size and data seed where the angle and planar models both ran, the run of the
    augmented models (angles, planar points, and planar points with local descriptors where they ran)
    with the best validation accuracy (the earlier in that order on a tie), labelled `SELECTED_METHOD`,
    with the model it chose as ``chosen``: a choice a user makes without the test split."""
    by_run: dict[tuple, list[dict]] = {}
    for r in [*augmented, *planar, *descriptors]:
        labels = r["labels"]
        by_run.setdefault((labels["cell"], labels["train_size"], labels["data_seed"]), []).append(r)
    out = []
    for runs in by_run.values():
        methods = {r["labels"]["method"] for r in runs}
        if not {AUGMENTED_METHOD, PLANAR_METHOD} <= methods:
            continue
        best = runs[0]
        for r in runs[1:]:
            best = r if r["validation"] > best["validation"] else best
        out.append({**best, "labels": {**best["labels"], "method": SELECTED_METHOD},
                    "chosen": best["labels"]["method"]})  # fmt: skip
    return out


def summary(result: dict) -> dict:
    """{cell: {train_size: {method: (mean, std) of test accuracy in %}}} of the final runs, the
    schedules (two_phase in the schedule cells comes from the final runs), the in-range augmented
    runs over data seeds (angles, planar points, and the one of the two chosen on validation), as
    `digits.summary`."""
    augmented, planar = result.get("augmented", []), result.get("planar", [])
    descriptors = result.get("descriptors", [])
    runs = [*result["final"], *result["schedules"], *augmented, *planar, *descriptors]
    runs += selected_on_validation(augmented, planar, descriptors)
    return digits.summary([{**r["labels"], "test": r["test"]} for r in runs])
