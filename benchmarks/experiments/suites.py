"""What is run: methods as config overrides, and the suites (grids of cells x methods x seeds).

Every run is a `Spec`: a base config under ``configs/experiments/`` plus overrides, and labels that say
where it goes in the tables. The same spec always gives the same key, so finished runs are cached.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "experiments"
LAYERWISE_VERSION = 1  # bump when benchmarks/experiments/layerwise.py changes what it trains
ATTENTION_VERSION = 1  # the same for benchmarks/experiments/attention_layerwise.py
ATTENTION_SEEDS = 3  # each attention run takes one to two minutes on one core

SEEDS = (0, 1, 2, 3, 4)
TUNING_SEEDS = (100, 101)  # the learning rate is chosen on seeds that no table reports
LEARNING_RATES = (3e-3, 1e-2)
# phase I / phase II steps per task (single-phase methods get the sum)
STEPS = {"digits": (300, 200), "motifs": (300, 200), "rotors": (300, 300)}
SUBSPACE_DIM = 1000


@dataclass(frozen=True)
class Spec:
    suite: str
    base: str  # configs/experiments/<base>.yaml, "layerwise" or "attention_layerwise"
    labels: dict = field(hash=False)
    overrides: dict = field(hash=False)

    @property
    def key(self) -> str:
        """A digest of the base config's text, the overrides and `LAYERWISE_VERSION` or
        `ATTENTION_VERSION` (for the layerwise runs, whose settings live in code): editing any of them
        invalidates the cached result."""
        if self.base == "layerwise":
            source = f"layerwise v{LAYERWISE_VERSION}"
        elif self.base == "attention_layerwise":
            source = f"attention v{ATTENTION_VERSION}"
        else:
            source = (CONFIGS / f"{self.base}.yaml").read_text()
        blob = json.dumps({"base": self.base, "source": source, "overrides": self.overrides}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


# --- methods ------------------------------------------------------------------------------------------------
PLAIN = {"plain_features": True, "pe_absolute": None, "pe_relative": None}


def method_overrides(method: str, base: str) -> dict:
    """Config overrides that make ``method`` out of a base config (steps from `STEPS`)."""
    p1, p2 = STEPS[base]
    total = p1 + p2
    single = {"phase1_steps": total, "phase2": "none"}
    two = {"phase1_constraint": "equivariant", "phase1_steps": p1, "phase2_steps": p2}
    freed = {**two, "phase2": "free", "phase2_lr_multiplier": 0.1}  # the two-phase default
    into_subspace = {"phase2": "subspace", "subspace_dim": SUBSPACE_DIM, "phase2_lr_multiplier": 1.0}
    plain = {"phase1_constraint": "free", **single, **PLAIN}
    pull = {"phase2_pull": 1.0, "phase2_pull_decay": "cosine"}

    def switch_at(first: int) -> dict:
        return {**freed, "phase1_steps": first, "phase2_steps": total - first}

    table = {
        "unconstrained": {"phase1_constraint": "free", **single},
        "equivariant": {"phase1_constraint": "equivariant", **single},
        "two_phase_free": freed,
        "two_phase_subspace": {**two, **into_subspace},
        "burn_in_subspace": {**two, "phase1_constraint": "free", **into_subspace},
        "residual": {"phase1_constraint": "residual", **single},
        "equivariance_loss": {"phase1_constraint": "free", **single, "equivariance_loss_weight": 1.0},
        "plain": plain,
        "plain_aug": {**plain, "augment": True},
        # controls
        "equivariant_restart": {**freed, "phase2": "equivariant"},
        "two_phase_switch_25": switch_at(total // 4),
        "two_phase_switch_75": switch_at(3 * total // 4),
        # pushing the method
        "two_phase_lr1": {**freed, "phase2_lr_multiplier": 1.0},
        "pull_decay": {**freed, **pull},
        "pull_anchor": {**freed, **pull, "phase2_pull_toward": "anchor"},
        "gradual_release": {**freed, "phase2_pull": 30.0, "phase2_pull_decay": "linear"},
        "two_phase_residual": {**freed, "phase2": "residual"},
        "two_phase_relative_only": {**freed, "pe_absolute": None},
    }
    # schedules: adaptive switching (phase I ends after 2 evaluations without a better validation metric,
    # within a budget of both phases' steps; phase II keeps its steps) and the scalar-identity phase I
    table["adaptive_lr1"] = {
        **table["two_phase_lr1"], "phase1_steps": total, "phase2_steps": p2, "switch_patience": 2,
    }  # fmt: skip
    table["scalar_identity_lr1"] = {**table["two_phase_lr1"], "phase1_constraint": "scalar_identity"}
    # the same pushes with phase II at the full learning rate (the 0.1x default left phase II unable to
    # learn the tilt at all in the first push run)
    for name in ("pull_decay", "pull_anchor", "gradual_release", "two_phase_residual"):
        table[f"{name}_lr1"] = {**table[name], "phase2_lr_multiplier": 1.0}
    # the controls again for the 1x default
    for name in ("equivariant_restart", "two_phase_switch_25", "two_phase_switch_75"):
        table[f"{name}_lr1"] = {**table[name], "phase2_lr_multiplier": 1.0}
    if method not in table:
        raise KeyError(f"method: unknown {method!r}; known: {sorted(table)}")
    return dict(table[method])


MAIN_METHODS = (
    "unconstrained",
    "equivariant",
    "two_phase_free",
    "two_phase_subspace",
    "burn_in_subspace",
    "residual",
    "equivariance_loss",
    "plain",
    "plain_aug",
)
CORE_METHODS = ("unconstrained", "equivariant", "two_phase_free", "plain", "plain_aug")
# every grid also runs the library's default two-phase setting (phase II at 1x; LR_SOURCE: two_phase_free)
GRID_METHODS = (*CORE_METHODS, "two_phase_lr1")
# which tuned learning rate a derived method uses
LR_SOURCE = {
    "equivariant_restart": "equivariant",
    "equivariant_wide": "equivariant",
    "two_phase_switch_25": "two_phase_free",
    "two_phase_switch_75": "two_phase_free",
    "two_phase_lr1": "two_phase_free",
    "pull_decay": "two_phase_free",
    "pull_anchor": "two_phase_free",
    "gradual_release": "two_phase_free",
    "two_phase_residual": "two_phase_free",
    "two_phase_relative_only": "two_phase_free",
    "pull_decay_lr1": "two_phase_free",
    "pull_anchor_lr1": "two_phase_free",
    "gradual_release_lr1": "two_phase_free",
    "two_phase_residual_lr1": "two_phase_free",
    "equivariant_restart_lr1": "equivariant",
    "two_phase_switch_25_lr1": "two_phase_free",
    "two_phase_switch_75_lr1": "two_phase_free",
    "adaptive_lr1": "two_phase_free",
    "scalar_identity_lr1": "two_phase_free",
}
SCHEDULE_METHODS = ("two_phase_lr1", "adaptive_lr1", "scalar_identity_lr1", "unconstrained")


# --- suites -------------------------------------------------------------------------------------------------
@dataclass
class Suite:
    name: str
    title: str
    column: str  # the label that makes the table's columns and the plot's x axis
    xlabel: str
    log_x: bool = False
    rows: str = "method"


SUITES = {
    s.name: s
    for s in (
        Suite("tuning", "Learning-rate tuning (validation)", "learning_rate", "learning rate", log_x=True),
        Suite("layerwise", "Layerwise equivariance (Shahverdi et al. 2026)", "layer", "layer"),
        Suite(
            "layerwise_attention",
            "Layerwise equivariance in attention: patch autoencoder on natural images, mirror",
            "method",
            "method",
        ),
        Suite(
            "digits_approx",
            "Rotated digits, +-45 degrees (approximate)",
            "train_size",
            "training images",
            True,
        ),
        Suite(
            "digits_tilt",
            "Rotated digits with tilt labels: gain vs symmetry breaking",
            "rotation_range",
            "rotation range (degrees)",
        ),
        Suite("push", "Pushing two-phase: +-45 degrees with tilt labels, 300 images", "variant", "variant"),
        Suite("controls", "Controls: +-45 degrees with tilt labels, 300 images", "variant", "variant"),
        Suite(
            "controls_approx",
            "Controls where two-phase wins: +-45 degrees, 300 images, phase II at 1x",
            "variant",
            "variant",
        ),
        Suite(
            "schedules",
            "Adaptive switching and scalar-identity phase I where two-phase lost (300 examples)",
            "cell",
            "cell",
        ),
        Suite(
            "motifs",
            "Motifs (translations): accuracy vs absolute share",
            "absolute_fraction",
            "share of labels that depend on absolute position",
        ),
        Suite(
            "threshold",
            "Threshold dimension: success probability vs subspace dimension",
            "subspace_dim",
            "subspace dimension d",
            True,
            rows="start",
        ),
        Suite("rotors_eps", "Rotor chain: test MSE vs field strength eps (1,000 chains)", "eps", "eps"),
        Suite(
            "rotors_size", "Rotor chain: test MSE vs chains (eps = 1)", "train_size", "training chains", True
        ),
        Suite("rotors_variant", "Rotor chain, nearest-neighbour coupling and quadratic field", "eps", "eps"),
        Suite("digits_exact", "Rotated digits, full circle (exact)", "train_size", "training images", True),
        Suite(
            "digits_upright",
            "Rotated digits, upright training, rotated test (generalisation)",
            "train_size",
            "training images",
            True,
        ),
        Suite(
            "convergence",
            "Convergence check: +-45 degrees, 3x the steps (1,500)",
            "train_size",
            "training images",
            True,
        ),
    )
}

DIGIT_VARIANTS = {
    "digits_exact": {"rotation_range": 180.0},
    "digits_approx": {"rotation_range": 45.0},
    "digits_upright": {"rotation_range": 0.0, "test_rotation_range": 180.0},
}
TILT = {"tilt_digits": 10}
CONVERGENCE_METHODS = ("unconstrained", "equivariant", "two_phase_free", "two_phase_lr1", "plain")
CONVERGENCE_FACTOR = 3  # the digits budget times this; digits_approx is the 1x budget
# every linear layer of the encoder (20,480 weights at hidden 32) moves in the subspace; the rest is frozen
THRESHOLD_DIMS = (16, 64, 256, 1024, 4096, 16384)
THRESHOLD_BURN_IN = 100
THRESHOLD_STEPS = 400
THRESHOLD_LOSS = 1.0  # success: a training loss (window of 20 steps) at or below this, in nats


def _method(suite, base, method, lrs, labels, seed, **extra) -> Spec:
    overrides = {**extra, **method_overrides(method, base)}
    lr = lrs.get(LR_SOURCE.get(method, method), {}).get(base) if lrs else None
    if lr is not None:
        overrides["learning_rate"] = lr
    overrides.update(seed=seed, data_seed=seed)
    return Spec(suite, base, {"method": method, "seed": seed, **labels}, overrides)


def make_specs(name: str, lrs: dict, quick: bool) -> list[Spec]:
    """The runs of suite ``name``; ``lrs[method][base]`` holds the tuned learning rates."""
    seeds = SEEDS[:1] if quick else SEEDS
    sizes = (50, 300) if quick else (50, 100, 300, 1000)
    specs: list[Spec] = []
    if name == "tuning":
        for base, methods, extra in (
            ("digits", MAIN_METHODS, {**DIGIT_VARIANTS["digits_approx"], "train_size": 300}),
            ("rotors", CORE_METHODS, {"eps": 1.0, "train_size": 1000}),
        ):
            for method in methods[:2] if quick else methods:
                for lr in LEARNING_RATES:
                    for seed in TUNING_SEEDS[:1] if quick else TUNING_SEEDS:
                        spec = _method(
                            name, base, method, None, {"learning_rate": lr, "task": base}, seed, **extra
                        )
                        spec.overrides["learning_rate"] = lr
                        specs.append(spec)
    elif name in DIGIT_VARIANTS:
        methods = (*MAIN_METHODS, "two_phase_lr1") if name == "digits_approx" else GRID_METHODS
        for n in sizes if name == "digits_approx" or quick else (50, 300, 1000):
            for method in methods:
                for seed in seeds:
                    extra = {**DIGIT_VARIANTS[name], "train_size": n}
                    specs.append(_method(name, "digits", method, lrs, {"train_size": n}, seed, **extra))
    elif name == "convergence":
        steps = CONVERGENCE_FACTOR * sum(STEPS["digits"])
        for n, method in ((n, m) for n in (1000, 100, 300) for m in CONVERGENCE_METHODS):
            if quick and (n != 1000 or method not in CONVERGENCE_METHODS[:2]):
                continue
            for seed in seeds:
                extra = {**DIGIT_VARIANTS["digits_approx"], "train_size": n}
                spec = _method(name, "digits", method, lrs, {"steps": steps, "train_size": n}, seed, **extra)
                for phase in ("phase1_steps", "phase2_steps"):
                    if phase in spec.overrides:
                        spec.overrides[phase] *= CONVERGENCE_FACTOR
                specs.append(spec)
    elif name == "digits_tilt":
        for degrees in (15, 90) if quick else (15, 45, 90, 180):
            for method in GRID_METHODS:
                for seed in seeds:
                    extra = {"rotation_range": float(degrees), **TILT, "train_size": 300}
                    specs.append(
                        _method(name, "digits", method, lrs, {"rotation_range": degrees}, seed, **extra)
                    )
    elif name in ("push", "controls", "controls_approx"):
        extra = {"rotation_range": 45.0, **({} if name == "controls_approx" else TILT), "train_size": 300}
        variants = (
            (
                "two_phase_lr1",
                "pull_decay",
                "pull_anchor",
                "gradual_release",
                "two_phase_residual",
                "two_phase_relative_only",
                "pull_decay_lr1",
                "pull_anchor_lr1",
                "gradual_release_lr1",
                "two_phase_residual_lr1",
            )
            if name == "push"
            else ("equivariant_restart", "two_phase_switch_25", "two_phase_switch_75", "equivariant_wide")
            if name == "controls"
            else (
                "equivariant_restart_lr1",
                "two_phase_switch_25_lr1",
                "two_phase_switch_75_lr1",
                "equivariant_wide",
            )
        )
        for variant in variants[:2] if quick else variants:
            for seed in seeds:
                if variant == "equivariant_wide":
                    spec = _method(name, "digits", "equivariant", lrs, {"variant": variant}, seed, **extra)
                    spec.labels["method"] = variant
                    spec.overrides["intermediate_size"] = WIDE_INTERMEDIATE
                else:
                    spec = _method(name, "digits", variant, lrs, {"variant": variant}, seed, **extra)
                specs.append(spec)
    elif name.startswith("rotors"):
        if name == "rotors_eps":
            cells = [
                ({"eps": e, "train_size": 1000}, {"eps": e})
                for e in ((0.0, 1.0) if quick else (0.0, 0.1, 0.3, 1.0, 3.0))
            ]
        elif name == "rotors_size":
            sizes = (300, 3000) if quick else (300, 3000, 10000)
            cells = [({"eps": 1.0, "train_size": n}, {"train_size": n}) for n in sizes]
        else:
            cells = [
                ({"eps": 1.0, "train_size": 1000, "coupling": "nearest", "field": "quadratic"}, {"eps": 1.0})
            ]
        for extra, labels in cells:
            for method in GRID_METHODS:
                for seed in seeds:
                    specs.append(_method(name, "rotors", method, lrs, labels, seed, **extra))
    elif name == "motifs":
        for fraction in (0.0, 1.0) if quick else (0.0, 0.25, 1.0):
            for method in GRID_METHODS:
                for seed in seeds:
                    extra = {"absolute_fraction": fraction, "train_size": 300}
                    labels = {"absolute_fraction": fraction}
                    specs.append(_method(name, "motifs", method, lrs, labels, seed, **extra))
    elif name == "schedules":
        cells = (
            ("digits", "digits tilt +-45", {"rotation_range": 45.0, **TILT, "train_size": 300}),
            ("motifs", "motifs, all absolute", {"absolute_fraction": 1.0, "train_size": 300}),
        )
        for base, cell, extra in cells:
            for method in SCHEDULE_METHODS:
                for seed in seeds:
                    specs.append(_method(name, base, method, lrs, {"cell": cell}, seed, **extra))
    elif name == "threshold":
        starts = {
            "initialisation": {"phase1_constraint": "free", "phase1_steps": 0},
            "burn-in": {"phase1_constraint": "free", "phase1_steps": THRESHOLD_BURN_IN},
            "equivariant phase I": {"phase1_constraint": "equivariant", "phase1_steps": THRESHOLD_BURN_IN},
        }
        for start, first in starts.items():
            for d in THRESHOLD_DIMS[:2] if quick else THRESHOLD_DIMS:
                for seed in seeds:
                    overrides = {
                        **DIGIT_VARIANTS["digits_approx"],
                        "train_size": 300,
                        **first,
                        "phase2": "subspace",
                        "subspace_dim": d,
                        "phase_layers": "all",
                        "phase2_freeze_rest": True,
                        "phase2_steps": THRESHOLD_STEPS,
                        "phase2_lr_multiplier": 1.0,
                        "learning_rate": 1e-2,
                        "seed": seed,
                        "data_seed": seed,
                    }
                    labels = {"start": start, "subspace_dim": d, "seed": seed}
                    specs.append(Spec(name, "digits", labels, overrides))
    elif name == "layerwise":
        for data in ("digits", "natural"):
            for kind in ("autoencoder", "classifier"):
                for activation in ("tanh", "gelu"):
                    for seed in seeds:
                        overrides = {"model": kind, "activation": activation, "seed": seed, "quick": quick}
                        if data != "digits":  # the digits runs keep their cached keys
                            overrides["data"] = data
                        labels = {"data": data, "model": kind, "activation": activation, "seed": seed}
                        specs.append(Spec(name, "layerwise", labels, overrides))
    elif name == "layerwise_attention":
        from benchmarks.experiments.attention_layerwise import METHODS

        for method in METHODS:
            for seed in seeds[:ATTENTION_SEEDS]:
                labels = {"method": method, "seed": seed}
                specs.append(Spec(name, "attention_layerwise", labels, {**labels, "quick": quick}))
    else:
        raise KeyError(f"suite: unknown {name!r}; known: {list(SUITES)}")
    if quick:
        for spec in specs:
            if spec.base not in ("layerwise", "attention_layerwise"):
                first = spec.overrides.get("phase1_steps", 0)
                spec.overrides.update(QUICK_OVERRIDES[spec.base])
                if spec.suite == "threshold":  # keep "from the initialisation" at 0 steps
                    spec.overrides["phase1_steps"] = min(first, 4)
    return specs


# the equivariant control with as many trainable parameters as the two-phase model after the switch:
# at hidden 32 (digits.yaml) phase II frees 3,456 attention weights; each unit of the MLP's intermediate
# size (64 by default) costs 144 weights over the 2 layers, so 24 more units match it exactly (tested)
WIDE_INTERMEDIATE = 64 + 24

_QUICK_STEPS = {"phase1_steps": 8, "phase2_steps": 4, "eval_steps": 4, "logging_steps": 4}
_QUICK_SIZES = {"validation_size": 40, "test_size": 60}
QUICK_OVERRIDES = {
    "digits": _QUICK_STEPS,
    "motifs": {**_QUICK_STEPS, **_QUICK_SIZES},
    "rotors": {**_QUICK_STEPS, **_QUICK_SIZES},
}
