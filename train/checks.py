"""Everything a run checks before it writes anything: the schedules, the model against the task, the
output directory and the checkpoint to resume. `preflight` runs them all without starting the run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import PreTrainedModel

from geo_pe.phases import PenaltySchedule
from models import GeoTransformerConfig
from train import checkpoint as ckpt
from train.batches import Split, StepBatches
from train.config import RunConfig, TrainArguments, load_config
from train.tasks import Task
from train.validation import ConfigError

__all__ = ["build_model", "check_model_reads_task", "check_output_dir", "preflight", "pull_schedule"]


def pull_schedule(args: TrainArguments) -> PenaltySchedule:
    """The weight of the pull toward symmetry over phase II (raises `ConfigError` for bad settings)."""
    try:
        return PenaltySchedule(
            args.phase2_pull, args.phase2_pull_end, max(1, args.phase2_steps), args.phase2_pull_decay
        )
    except ValueError as err:
        if args.phase2_pull == 0:  # no pull: the schedule is never read
            return PenaltySchedule(0.0)
        raise ConfigError(f"phase2_pull, phase2_pull_end, phase2_pull_decay: {err}") from None


def build_model(config: RunConfig, task: Task) -> PreTrainedModel:
    """The task's model in phase I; `ConfigError` for settings the model refuses."""
    model_arguments = dataclasses.asdict(config.model)
    shared = model_arguments.pop("shared_rotations")
    model_arguments["shared_rotations"] = None if shared is None else [group.split("+") for group in shared]
    settings = task.model_settings()  # the task's own errors name its keys
    try:
        model_config = GeoTransformerConfig(
            **model_arguments,
            **settings,
            phase_history=[config.training.phase1_constraint],
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    has_pe = model_config.pe_absolute is not None or model_config.pe_relative is not None
    if has_pe != task.uses_positions:
        raise ConfigError(
            "pe_absolute, pe_relative: the task gives group elements (positions), so the model needs a group "
            "PE"
            if task.uses_positions
            else "pe_absolute, pe_relative: with plain_features the task gives no positions; set both to null"
        )
    if config.training.in_range_augmentation != "none" and not task.resamples_orientation:
        raise ConfigError(
            f"in_range_augmentation: task {task.name!r} has no training range of orientations to draw from"
        )
    model = task.model_class(model_config)
    task.bind(model)
    return model


@torch.no_grad()
def check_model_reads_task(model: PreTrainedModel, task: Task, split: Split) -> None:
    """One forward on two examples, so that specs that read attributes the task does not give (or of the
    wrong shape) fail before anything is written; `ConfigError` names the setting."""
    was_training = model.training
    model.eval()
    inputs, labels = task.inputs(split[torch.arange(min(2, len(split)))])
    try:
        model(**inputs, labels=labels)
    except ValueError as err:
        raise ConfigError(
            f"pe_absolute, pe_relative: the model cannot read task {task.name!r}: {err}"
        ) from None
    finally:
        model.train(was_training)


def check_output_dir(config: RunConfig, num_processes: int) -> Path | None:
    """Read-only checks of ``output_dir``: a new run may not land on an old one (unless
    ``overwrite_output_dir``); ``resume`` needs the same config (where the run lives aside), a complete
    checkpoint and the same number of processes. Returns the checkpoint to resume from, or None."""
    args = config.training
    out = Path(args.output_dir)
    existing = out / "run_config.yaml"
    if args.resume:
        if not existing.is_file():
            raise ConfigError(f"resume: {out} holds no run to resume (no run_config.yaml)")
        saved = load_config(["--config", str(existing)])
        changed = config.differences(saved)
        if changed:
            detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (new, old) in changed.items())
            raise ConfigError(f"resume: the config differs from the run in {out} ({detail})")
        latest = ckpt.find_latest(out / "checkpoints")
        if latest is None:
            raise ConfigError(f"resume: no complete checkpoint under {out / 'checkpoints'}")
        saved_state = ckpt.verify(latest)
        processes = saved_state.get("num_processes", num_processes)
        if processes != num_processes and not saved_state.get("finished"):
            raise ConfigError(
                f"resume: the run in {out} was trained with {processes} process(es) and this launch has "
                f"{num_processes}; resume with the same number (optimizer shards and RNG states are per "
                "process)"
            )
        return latest
    holds_run = existing.is_file() or (out / "checkpoints").exists()
    if holds_run and not args.overwrite_output_dir:
        raise ConfigError(
            f"output_dir: {out} already holds a run; pass --resume to continue it or "
            "--overwrite_output_dir to start over (which deletes it)"
        )
    return None


def preflight(config: RunConfig, num_processes: int = 1) -> None:
    """Every check a run makes before it writes anything, without starting it: the schedules, the
    batch split, the task's data, the model against the task, the output directory. `geo-pe-train`
    runs it before it launches several processes, so that a bad config fails once, cleanly."""
    args = config.training
    pull_schedule(args)
    if args.batch_size % num_processes:
        raise ConfigError(
            f"batch_size: the global batch {args.batch_size} must split evenly over {num_processes} processes"
        )
    task = config.make_task()
    model = build_model(config, task)  # the model's settings first: they need no data
    built = task.build(cache_dir=args.data_cache_dir)
    StepBatches(len(built["train"]), args.batch_size, args.seed)
    check_model_reads_task(model, task, task.split(built["validation"]))
    check_output_dir(config, num_processes)
