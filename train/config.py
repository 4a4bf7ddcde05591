"""Typed run configuration: a YAML file plus command-line overrides, validated with errors that name the key.

    geo-pe-train --config quickstart --phase1_steps 200 --rotation_range 30

``--config`` takes a path to a YAML file or the name of a config shipped with the package
(``quickstart``, ``experiments/digits``, ...: `shipped_configs` lists them); without it the run is the
quickstart.

The YAML file has the task name and three sections, all optional::

    task: rotated_digits
    data:       # the task's options (its ``Options`` dataclass)
      rotation_range: 60
    model:      # `ModelArguments`
      hidden_size: 64
    training:   # `TrainArguments`
      phase1_steps: 600

Precedence: dataclass defaults < YAML < command line. Every key is unique across the sections, so the
command line needs no section (``--rotation_range 30``). Unknown keys, unknown sections, values of the
wrong type and values out of range raise `ConfigError` naming the key (with close matches for typos);
so do abbreviations of keys (``--phase1_step`` is refused, not read as ``--phase1_steps``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from transformers import HfArgumentParser

import train.files  # noqa: F401  (registers the dataset task)
from models import GeoTransformerConfig
from train.tasks import TASKS, Task
from train.validation import NULLS, ConfigError, check_range, check_types

__all__ = ["ConfigError", "ModelArguments", "RunConfig", "TrainArguments", "load_config", "shipped_configs"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # shipped with the package (configs/ in a clone)
DEFAULT_CONFIG = "quickstart"

SECTIONS = ("data", "model", "training")
# Settings that may change between a run and its resumption (they do not change what is computed).
RESUMABLE = {
    "output_dir",  # the run is the directory given, wherever it lives now
    "resume",
    "stop_after_steps",
    "overwrite_output_dir",
    "report_to",
    "logging_steps",
    "plot",
    "save_steps",
    "save_total_limit",
    "data_cache_dir",
}


def _arg(default, help: str):
    """A key of the run config: its default and what ``--help`` says of it."""
    return field(default=default, metadata={"help": help})


def _model_arg(name: str, help: str):
    """A model key, whose default is `GeoTransformerConfig`'s: one place for the model's defaults."""
    return _arg(inspect.signature(GeoTransformerConfig).parameters[name].default, help)


@dataclass
class ModelArguments:
    """The geo transformer's shape and encodings (the task fixes features and labels)."""

    hidden_size: int = _model_arg(
        "hidden_size", "width of the token state: invariant scalars plus the channels of pe_absolute"
    )
    num_hidden_layers: int = _model_arg("num_hidden_layers", "number of transformer layers")
    num_attention_heads: int = _model_arg(
        "num_attention_heads",
        "attention heads; they must tile hidden_size and not cut a block of pe_absolute",
    )
    head_dim: int | None = _model_arg(
        "head_dim", "channels per head (default hidden_size / num_attention_heads)"
    )
    intermediate_size: int | None = _model_arg(
        "intermediate_size", "SwiGLU width on the scalars (default about 8/3 of their width)"
    )
    pe_absolute: str | None = _model_arg(
        "pe_absolute",
        "irreps spec of the absolute encoding gamma(g) concatenated to the scalars, or null; what phase "
        "II may use to break the symmetry",
    )
    pe_relative: str | None = _model_arg(
        "pe_relative", "irreps spec of the relative encoding (its dimension is head_dim), or null"
    )
    pe_relative_mode: Literal["rotary", "gta"] = _model_arg(
        "pe_relative_mode", "rotary (queries and keys) or gta (also values and outputs)"
    )
    pair_layout: Literal["interleaved", "half"] = _model_arg(
        "pair_layout", "interleaved or half: where the two components of each SO(2) pair sit in a head"
    )
    attention_dropout: float = _model_arg("attention_dropout", "dropout on the attention weights")
    classifier_dropout: float = _model_arg("classifier_dropout", "dropout before the output head")
    initializer_range: float = _model_arg("initializer_range", "standard deviation of the initial weights")
    phase_layers: Literal["attention", "all"] = _model_arg(
        "phase_layers",
        "which layers the phases constrain: attention (q, k, v, o, and the PE gate's map) or all (also "
        "the MLP)",
    )
    pe_gate: bool = _model_arg(
        "pe_gate", "gate the PE channels in every MLP: an equivariant map scaled by sigmoids of the scalars"
    )
    causal: bool = _model_arg("causal", "causal attention: each token sees itself and the tokens before it")
    shared_rotations: list[str] | None = _model_arg(  # noqa: RUF009 (None: nothing mutable is shared)
        "shared_rotations", "attributes turned by one global rotation, joined by + (e.g. position+velocity)"
    )
    point_attributes: list[str] | None = _model_arg(  # noqa: RUF009 (None: nothing mutable is shared)
        "point_attributes",
        "s2 attributes given as points in R^3, or so2 attributes as points in the plane: the model reads"
        " them from their valid centroid (point_origin)",
    )
    point_origin: str = _model_arg(
        "point_origin",
        "where point_attributes are read from: centroid (the set's valid centroid; invariance to"
        " translations) or origin (the coordinates' own, for rotations about a fixed centre)",
    )
    output_attribute: str | None = _model_arg(
        "output_attribute", "the rotation attribute that equivariant outputs (vectors, matrices) turn with"
    )
    distance_bias: int = _model_arg(
        "distance_bias",
        "Gaussian radial functions of the distances between point_attributes' points, an additive bias of"
        " every head's attention logits (0: off); invariant, so equivariance holds",
    )
    distance_bias_max: float = _model_arg(
        "distance_bias_max",
        "the largest pairwise distance the radial functions resolve, in the points' units",
    )
    local_descriptor_shells: list[float] | None = _model_arg(  # noqa: RUF009 (None: nothing mutable is shared)
        "local_descriptor_shells",
        "shell radii of a rotation-invariant descriptor of each planar point's neighbourhood (its power "
        "spectrum over distance shells and circular harmonics), added to the scalar inputs (None: off)",
    )
    local_descriptor_frequencies: int = _model_arg(
        "local_descriptor_frequencies", "the local descriptor's highest circular-harmonic frequency"
    )
    local_descriptor_width: float = _model_arg(
        "local_descriptor_width", "the local descriptor's Gaussian shell width, in the points' units"
    )
    local_descriptor_weight: int | None = _model_arg(
        "local_descriptor_weight", "index of the feature that weighs each neighbour (None: weight 1)"
    )
    relative_point_values: bool = _model_arg(
        "relative_point_values",
        "each head averages the offsets x_j - x_i between points with its weights into the vector "
        "channels that turn with them (EGNN's coordinate message, with attention weights)",
    )
    point_messages: Literal["softmax", "signed"] = _model_arg(
        "point_messages",
        "pair weights of the geometric messages: softmax (attention weights) or signed (an MLP per layer on"
        " the pair's logits and radial functions, EGNN's phi_x; needs distance_bias)",
    )
    pair_scalar_messages: bool = _model_arg(
        "pair_scalar_messages",
        "with point_messages signed: the pair MLP also reads both tokens' scalars, and the scalars receive"
        " the mean of its hidden pair messages (EGNN's edge and node updates)",
    )
    pair_vector_invariants: bool = _model_arg(
        "pair_vector_invariants",
        "with point_messages signed and vector_inputs: the pair MLP also reads r_ij . v_i, r_ij . v_j and"
        " v_i . v_j of each input vector (how fast two particles approach)",
    )
    pair_vector_messages: bool = _model_arg(
        "pair_vector_messages",
        "with coordinate_updates and vector_inputs: each layer also moves x_i by sum_j e_ij (v_j - v_i), e_ij"
        " the heads' pair weights mixed by a map of its own",
    )
    coordinate_updates: bool = _model_arg(
        "coordinate_updates",
        "every layer moves the point attributes by its pair messages and phi_v(s) v, and the next layer"
        " reads the moved geometry; position outputs add the movement (unbounded, as EGNN)",
    )
    vector_inputs: list[str] | None = _model_arg(  # noqa: RUF009 (None: nothing mutable is shared)
        "vector_inputs",
        "s2 attributes whose raw vectors (magnitude included) the model carries linearly: into the degree-1"
        " channels, and with coordinate_updates as EGNN's velocity term",
    )
    moment_readout: list[str] | None = _model_arg(  # noqa: RUF009 (None: nothing mutable is shared)
        "moment_readout",
        "vector_inputs whose moments (sum of a_i v_i, or of a_i |v_i|^2 I + b_i v_i v_i^T) equivariant"
        " vector and matrix outputs add, magnitude included",
    )

    def __post_init__(self):
        check_types(self)
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
            check_range(name, getattr(self, name), low=1)
        for name in ("attention_dropout", "classifier_dropout"):
            check_range(name, getattr(self, name), low=0.0, high=1.0, high_open=True)
        check_range("initializer_range", self.initializer_range, low=0.0, low_open=True)


@dataclass
class TrainArguments:
    """Optimisation, the two-phase schedule, evaluation, checkpoints and logging."""

    output_dir: str = _arg(
        "runs/quickstart", "where the run writes model/, log.jsonl, results.json, curves.png and checkpoints/"
    )
    overwrite_output_dir: bool = _arg(False, "delete a run already in output_dir and start over")
    seed: int = _arg(0, "seed of the initialisation, the batches, the subspace and the random group elements")
    # global: split across processes
    batch_size: int = _arg(64, "global batch size, split evenly across processes")
    eval_batch_size: int = _arg(128, "batch size of evaluation")
    learning_rate: float = _arg(3e-3, "AdamW learning rate of phase I (phase II: times phase2_lr_multiplier)")
    weight_decay: float = _arg(0.0, "AdamW weight decay")
    adam_beta1: float = _arg(0.9, "AdamW beta1")
    adam_beta2: float = _arg(0.999, "AdamW beta2")
    max_grad_norm: float = _arg(1.0, "gradient clipping norm (0: off)")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = _arg(
        "cosine", "learning-rate schedule of each phase (built anew at the switch)"
    )
    warmup_steps: int = _arg(0, "warm-up steps at the start of each phase")
    # Polyak averaging: evaluation, model selection and the saved models use the average
    ema_decay: float = _arg(
        0.0,
        "decay of an exponential moving average of the weights, restarted at each phase; evaluation, "
        "selection and the saved models use it (0: off)",
    )
    # the phase schedule
    phase1_steps: int = _arg(600, "steps of phase I")
    phase1_constraint: Literal["scalar_identity", "equivariant", "free", "residual"] = _arg(
        "equivariant",
        "phase I: equivariant (the commutant), scalar_identity (W = b I), or free / residual (baselines)",
    )
    # equivariant: control
    phase2: Literal["free", "subspace", "residual", "equivariant", "none"] = _arg(
        "free", "phase II: free, subspace (random affine subspace), residual, equivariant (control) or none"
    )
    phase2_steps: int = _arg(600, "steps of phase II, counted from where phase I really ended")
    # 1.0: in the experiments (docs/experiments.md) 0.1x left phase II unable to learn
    # what the symmetry hides (digits +-45 at 300 images: 65.0 % vs 79.3 % at 1x)
    phase2_lr_multiplier: float = _arg(1.0, "phase II learning rate as a multiple of learning_rate")
    subspace_dim: int | None = _arg(None, "dimension of the random subspace of phase2: subspace")
    subspace_projection: Literal["fastfood", "sparse", "dense", "identity"] = _arg(
        "fastfood", "the random projection of the subspace: fastfood, sparse, dense or identity"
    )
    shared_subspace: bool = _arg(True, "one subspace coordinate vector for all layers (else one per layer)")
    # weight of the pull toward symmetry at the start of phase II
    phase2_pull: float = _arg(0.0, "weight of the pull toward symmetry at the start of phase II (0: off)")
    phase2_pull_end: float = _arg(0.0, "weight of the pull at the end of phase II")
    phase2_pull_decay: Literal["constant", "linear", "cosine", "exponential"] = _arg(
        "cosine", "how the pull decays: constant, linear, cosine, exponential (both weights > 0)"
    )
    phase2_pull_toward: Literal["subspace", "anchor"] = _arg(
        "subspace", "pull toward the symmetric subspace or toward the weights at the switch (anchor)"
    )
    # phase II trains only the phase-controlled layers; the rest keeps its values at the switch, so the
    # whole update lies in the subspace (Larsen et al.'s threshold dimension)
    phase2_freeze_rest: bool = _arg(False, "phase II trains only the phase-controlled layers")
    # soft-equivariance baseline (any phase)
    equivariance_loss_weight: float = _arg(0.0, "weight of the soft-equivariance loss (0: off)")
    # a random global transformation of every training example
    augment: bool = _arg(False, "apply a random global group element to each training example")
    # weak equivariance by data: each training example turned afresh within the task's own range
    in_range_augmentation: Literal["none", "phase2", "all"] = _arg(
        "none",
        "turn each training example to an orientation drawn afresh within the task's training range"
        " (labels follow the task's rule): in phase II only, or in every phase",
    )
    # evaluation and model selection
    eval_steps: int = _arg(100, "evaluate (validation metric, equivariance error) every so many steps")
    equivariance_samples: int = _arg(4, "random group elements per equivariance measurement")
    # evaluations without improvement; 0 = off
    early_stopping_patience: int = _arg(
        0, "end a phase after so many evaluations without improvement (0: off)"
    )
    # phase I only: switch after so many stalled evaluations; 0 = the above
    switch_patience: int = _arg(
        0,
        "adaptive switching: end phase I after so many evaluations without improvement (0: "
        "early_stopping_patience)",
    )
    load_best_model_at_end: bool = _arg(
        True, "end each phase on its best validation weights and save the best phase"
    )
    # checkpoints
    save_steps: int = _arg(200, "write a checkpoint every so many steps")
    save_total_limit: int = _arg(2, "checkpoints kept (0: all)")
    resume: bool = _arg(False, "continue the run in output_dir from its newest complete checkpoint")
    # end this process after so many steps (checkpointed), e.g. for queues
    stop_after_steps: int | None = _arg(
        None, "end this process after so many steps, with a checkpoint (for job queues)"
    )
    # watching
    logging_steps: int = _arg(20, "log the training loss every so many steps")
    report_to: Literal["auto", "none", "tensorboard", "trackio"] = _arg(
        "auto", "Accelerate trackers: auto (tensorboard or trackio when installed), none, or one of them"
    )
    plot: bool = _arg(True, "draw curves.png at the end (needs matplotlib)")
    data_cache_dir: str | None = _arg(None, "where datasets caches the built task data")
    # intra-op threads per process, set by the trainer whatever the launcher: 1 is what accelerate launch
    # sets, and small models step fastest so (2 threads were 4.3x slower on 2 cores); 0 = torch's default
    num_threads: int = _arg(
        1, "intra-op threads per process (0: torch's default); the same under every launcher"
    )
    # None: the launcher's; bf16 autocast (CPU too); fp16 autocast with loss scaling (CUDA only)
    mixed_precision: Literal["no", "bf16", "fp16"] | None = _arg(
        None,
        "no; bf16: autocast to bfloat16 (on CPU too); fp16: autocast to float16 with loss scaling (CUDA "
        "only); group elements and encodings stay float32; null: what the launcher says",
    )
    # torch.compile the model for the training steps (evaluation stays eager); batches keep one size, and
    # the dataset task's fixed_length keeps the token axis static too
    compile: bool = _arg(
        False, "torch.compile the model for training steps (evaluation stays eager); checked before the run"
    )
    # auto: reduce-overhead (CUDA graphs) on CUDA, default elsewhere
    compile_mode: Literal["auto", "default", "reduce-overhead", "max-autotune"] = _arg(
        "auto", "torch.compile mode; auto: reduce-overhead (CUDA graphs) on CUDA, default elsewhere"
    )

    def __post_init__(self):
        check_types(self)
        check_range("num_threads", self.num_threads, low=0)
        for name in ("batch_size", "eval_batch_size", "eval_steps", "save_steps", "logging_steps"):
            check_range(name, getattr(self, name), low=1)
        for name in ("phase1_steps", "phase2_steps", "warmup_steps", "save_total_limit", "seed"):
            check_range(name, getattr(self, name), low=0)
        check_range("early_stopping_patience", self.early_stopping_patience, low=0)
        check_range("switch_patience", self.switch_patience, low=0)
        check_range("equivariance_samples", self.equivariance_samples, low=1)
        check_range("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_range("phase2_lr_multiplier", self.phase2_lr_multiplier, low=0.0, low_open=True)
        for name in (
            "weight_decay",
            "max_grad_norm",
            "phase2_pull",
            "phase2_pull_end",
            "equivariance_loss_weight",
        ):
            check_range(name, getattr(self, name), low=0.0)
        for name in ("adam_beta1", "adam_beta2", "ema_decay"):
            check_range(name, getattr(self, name), low=0.0, high=1.0, high_open=True)
        if self.phase1_steps + (self.phase2_steps if self.phase2 != "none" else 0) < 1:
            raise ConfigError("phase1_steps, phase2_steps: the run needs at least one step")
        if self.phase2_freeze_rest and self.phase2 == "none":
            raise ConfigError("phase2_freeze_rest: there is no phase II (phase2 is 'none')")
        if self.in_range_augmentation == "phase2" and self.phase2 == "none":
            raise ConfigError(
                "in_range_augmentation: 'phase2' needs a phase II (phase2 is 'none'); use 'all'"
            )
        if self.in_range_augmentation != "none" and self.augment:
            raise ConfigError(
                "augment, in_range_augmentation: the whole group and the training range are two "
                "augmentations; choose one"
            )
        if self.phase2 == "subspace":
            if self.subspace_dim is None:
                raise ConfigError("subspace_dim: phase2 'subspace' needs the subspace dimension")
            check_range("subspace_dim", self.subspace_dim, low=1)
        if self.stop_after_steps is not None:
            check_range("stop_after_steps", self.stop_after_steps, low=1)

    @property
    def total_steps(self) -> int:
        return self.phase1_steps + (self.phase2_steps if self.phase2 != "none" else 0)


@dataclass
class RunConfig:
    """Everything a run reads: the task name and options, the model and the training arguments."""

    task: str
    data: typing.Any
    model: ModelArguments
    training: TrainArguments = field(default_factory=TrainArguments)

    def make_task(self) -> Task:
        return TASKS[self.task](self.data)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "training": dataclasses.asdict(self.training),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def differences(self, other: RunConfig) -> dict[str, tuple]:
        """``{key: (self's value, other's value)}`` for settings that change the computation."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return {
            k: (mine.get(k), theirs.get(k))
            for k in sorted(set(mine) | set(theirs))
            if k not in RESUMABLE and mine.get(k) != theirs.get(k)
        }


def _flatten(sections: dict) -> dict:
    flat = {"task": sections["task"]}
    for name in SECTIONS:
        flat.update(sections.get(name) or {})
    return flat


# --- loading ---------------------------------------------------------------------------------------------
class _Parser(HfArgumentParser):
    """HfArgumentParser whose errors raise `ConfigError` instead of exiting; no abbreviated keys."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        raise ConfigError(f"command line: {message}")


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"{key}: unknown key in {where}{hint}")


def shipped_configs() -> list[str]:
    """Names of the run configs shipped with the package (``--config NAME``)."""
    return sorted(
        str(p.relative_to(CONFIG_DIR).with_suffix(""))
        for p in CONFIG_DIR.rglob("*.yaml")
        if p.relative_to(CONFIG_DIR).parts[0] != "accelerate"  # launcher configs, not run configs
    )


def resolve_config(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a shipped config (``quickstart``, ``experiments/digits``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in ("", ".yaml", ".yml") and not path.is_absolute():
        shipped = CONFIG_DIR / path.with_suffix(".yaml")
        if shipped.is_file():
            return shipped
    raise ConfigError(
        f"config: no such file {name_or_path!r}, and no shipped config of that name "
        f"(shipped: {', '.join(shipped_configs())})"
    )


def _read_yaml(path: Path) -> dict:
    try:
        with path.open() as f:  # the stream carries the file name into YAML's error marks
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {path} is not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping with 'task' and sections {SECTIONS}")
    unknown = [k for k in data if k not in ("task", *SECTIONS)]
    if unknown:
        raise _unknown(unknown[0], ["task", *SECTIONS], f"{path} (top level)")
    for name in SECTIONS:
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise ConfigError(f"{name}: the section must be a mapping, got {type(data[name]).__name__}")
    return data


def _mapping(text: str) -> dict | None:
    if text in NULLS:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as '{{key: value}}', got {text!r}")
    return value


def make_parser(task_name: str, defaults: dict | None = None) -> _Parser:
    """The command-line parser of a task's run: every key with its help, abbreviations refused."""
    classes = (TASKS[task_name].Options, ModelArguments, TrainArguments)
    parser = _Parser(
        list(classes),
        prog="geo-pe-train",
        description="Train a weakly equivariant transformer in two phases.",
        epilog="Also: --config NAME_OR_FILE (YAML with task, data, model, training; shipped: "
        f"{', '.join(shipped_configs())}; default {DEFAULT_CONFIG}) and --task NAME (registered: "
        f"{', '.join(sorted(TASKS))}). Command-line values override the file.",
    )
    data_keys = {f.name for f in dataclasses.fields(classes[0])}
    keys = {f.name for cls in classes[1:] for f in dataclasses.fields(cls)}
    for action in parser._actions:
        if action.type is dict:  # mappings on the command line are YAML (or JSON): --positions '{a: b}'
            action.type = _mapping
        if action.dest in data_keys:
            action.help = f"task {task_name}: data option (default %(default)s)"
        elif action.dest in keys and action.help:  # the key's field(metadata={"help": ...})
            action.help = f"{action.help} (default %(default)s)"
    if defaults:
        parser.set_defaults(**defaults)
    return parser


def load_config(argv: list[str] | None = None) -> RunConfig:
    """Parse ``--config NAME_OR_FILE`` (YAML), ``--task NAME`` and ``--key value`` overrides into a
    `RunConfig`; without ``--config`` the quickstart is the base."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    pre.add_argument("--task")
    known, rest = pre.parse_known_args(argv)
    if known.config is None and known.task is None:
        known.config = DEFAULT_CONFIG
    data = _read_yaml(resolve_config(known.config)) if known.config else {}
    task_name = known.task or data.get("task") or "rotated_digits"
    if task_name not in TASKS:
        raise ConfigError(f"task: unknown task {task_name!r}; registered: {sorted(TASKS)}")
    classes = {"data": TASKS[task_name].Options, "model": ModelArguments, "training": TrainArguments}
    names = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in classes.items()}
    clash = set(names["data"]) & (set(names["model"]) | set(names["training"]))
    if clash:
        raise ConfigError(
            f"task {task_name!r}: its options {sorted(clash)} clash with model or training keys"
        )
    defaults = {}
    for section, cls in classes.items():
        for key, value in (data.get(section) or {}).items():
            if key not in names[section]:
                raise _unknown(key, names[section], f"section {section!r} ({cls.__name__})")
            defaults[key] = value
    parser = make_parser(task_name, defaults)
    try:
        options, model, training, remaining = parser.parse_args_into_dataclasses(
            args=rest, return_remaining_strings=True, look_for_args_file=False
        )
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from None
    if remaining:
        every = [n for group in names.values() for n in group]
        key = remaining[0].lstrip("-").replace("-", "_").split("=")[0]
        raise (
            _unknown(key, every, "the command line")
            if remaining[0].startswith("--")
            else ConfigError(f"command line: unexpected argument {remaining[0]!r}")
        )
    _warn_if_phases_coincide(model, training)
    return RunConfig(task_name, options, model, training)


def _warn_if_phases_coincide(model: ModelArguments, training: TrainArguments) -> None:
    """Without an absolute encoding a model with group PEs is invariant for any weights, so phase II
    cannot learn what the symmetry hides: say so (it is a valid control, not an error)."""
    symmetric_first = training.phase1_constraint in ("equivariant", "scalar_identity")
    frees = training.phase2 in ("free", "subspace", "residual")
    if symmetric_first and frees and model.pe_absolute is None and model.pe_relative is not None:
        warnings.warn(
            "pe_absolute: null, so the model is invariant for any weights and phase II cannot break the "
            "symmetry; set pe_absolute (e.g. the same spec as pe_relative) for a two-phase run",
            stacklevel=3,
        )
