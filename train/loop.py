"""The training loop: two phases through Accelerate, exact resume, model selection and the final report.

One run trains the task's model in phase I (``phase1_constraint``) for ``phase1_steps``, switches it to
``phase2`` with ``model.set_phase`` (same function; the optimizer is rebuilt with
`geo_pe.phases.rebuild_optimizer`, the scheduler anew, and the model is prepared again, so DDP wraps the
new parameters), and trains ``phase2_steps`` more, at ``phase2_lr_multiplier`` times the learning rate and
with the optional pull toward symmetry. A phase starts where the previous one really ended: early
stopping moves the switch, and phase II's schedules count from there.

Batches are a pure function of (seed, step) (`train.batches`), so resuming or switching phase at any
step skips exactly the batches already seen, and one process computes what k processes compute.
Everything is checked before anything is written (`train.checks`); `train.evaluation` measures.

`Trainer.train` reads top to bottom: start or resume, then per step ``step``, ``log_training``,
``evaluate_and_select`` and ``save_checkpoint``, with ``end_phase`` (which calls ``switch_phase``) when a
phase runs out of steps or patience.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from safetensors.torch import load_file, save_file
from torch.distributed.fsdp import FSDPModule
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_scheduler

from geo_pe._checks import input_validation
from geo_pe.phases import (
    PhasedLinear,
    PhaseReport,
    carry_optimizer_state,
    equivariance_loss,
    phase_param_groups,
    rebuild_optimizer,
    switch_phase_sharded,
    symmetry_penalty,
)
from train import checkpoint as ckpt
from train.averaging import WeightAverage
from train.batches import StepBatches, shard, step_generator, to_device
from train.checks import build_model, check_model_reads_task, check_output_dir, pull_schedule
from train.config import RunConfig, TrainArguments
from train.evaluation import evaluate, format_table, measure_equivariance
from train.monitor import JsonlLog, plot_curves, trackers_for
from train.sharding import ShardingPlan, full_state_dict, load_full_state_dict, load_sharded, save_sharded
from train.validation import ConfigError

__all__ = ["Trainer", "TrainerState", "train"]


@dataclass
class TrainerState:
    """What a checkpoint needs besides weights, optimizer, scheduler and RNG states."""

    global_step: int = 0
    phase_index: int = 0
    phase_start: int = 0  # the global step at which the current phase began
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    phases: list[dict] = field(default_factory=list)  # results of the finished phases
    finished: bool = False
    num_processes: int = 1


@dataclass(frozen=True)
class Phase:
    name: str
    steps: int
    lr_multiplier: float
    index: int  # 0 for phase I, 1 for phase II


def phase_plan(args: TrainArguments) -> list[Phase]:
    plan = [Phase(args.phase1_constraint, args.phase1_steps, 1.0, 0)]
    if args.phase2 != "none":
        plan.append(Phase(args.phase2, args.phase2_steps, args.phase2_lr_multiplier, 1))
    return plan


# --- pieces ------------------------------------------------------------------------------------------------
def make_accelerator(args: TrainArguments, sharded: bool = False) -> Accelerator:
    """CPU processes (gloo) when no accelerator device is present, whatever ``accelerate launch`` says;
    fp16 (a CUDA loss scaler) only on CUDA and without sharding."""
    has_device = torch.cuda.is_available() or (
        getattr(torch, "xpu", None) is not None and torch.xpu.is_available()
    )
    has_device = has_device or torch.backends.mps.is_available()
    precision = args.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(
            "mixed_precision: fp16 needs a CUDA GPU (its loss scaler is CUDA's); use bf16 or no on this "
            "machine"
        )
    if precision == "fp16" and sharded:
        raise ConfigError("mixed_precision: fp16 is not supported with FSDP (its loss scaler); use bf16")
    log_with = trackers_for(args.report_to)
    return Accelerator(
        cpu=not has_device,
        mixed_precision=args.mixed_precision,  # None: the launcher's setting
        log_with=log_with or None,
        project_dir=args.output_dir,
        # batch_size is the global batch: the scheduler steps once per optimizer step
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )


def set_threads(args: TrainArguments) -> None:
    """The one place that sets the intra-op threads of this process (see ``num_threads``)."""
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)


def switch_arguments(args: TrainArguments) -> dict:
    """The run's subspace settings, as ``set_phase`` takes them."""
    return {
        "subspace_dim": args.subspace_dim,
        "subspace_projection": args.subspace_projection,
        "subspace_seed": args.seed,
        "shared_subspace": args.shared_subspace,
    }


def switch_phase(model: PreTrainedModel, phase: Phase, args: TrainArguments) -> PhaseReport:
    """Move ``model`` to ``phase`` (same function) with the run's subspace settings; with
    ``phase2_freeze_rest`` also freeze every parameter outside the phase-controlled layers."""
    report = model.set_phase(phase.name, **switch_arguments(args))
    freeze_rest(model, args)
    return report


def freeze_rest(model: PreTrainedModel, args: TrainArguments) -> None:
    """With ``phase2_freeze_rest``, freeze every parameter outside the phase-controlled layers."""
    if args.phase2_freeze_rest:
        phased = {id(p) for m in model.modules() if isinstance(m, PhasedLinear) for p in m.parameters()}
        for p in model.parameters():
            if id(p) not in phased:
                p.requires_grad_(False)


def compile_mode(args: TrainArguments) -> str:
    """The torch.compile mode: CUDA graphs (reduce-overhead) on CUDA unless the config says otherwise."""
    if args.compile_mode != "auto":
        return args.compile_mode
    return "reduce-overhead" if torch.cuda.is_available() else "default"


def check_compiler(args: TrainArguments) -> None:
    """`ConfigError` naming ``compile`` when torch.compile cannot build a kernel here (no C++ compiler for
    the CPU backend, an unsupported Python): found before anything is written, not at the first step."""
    if not args.compile:
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.compile(lambda x: x * 2 + 1, mode=compile_mode(args))(torch.ones(4, device=device))
    except Exception as err:  # any failure of the toolchain: the message says which
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"compile: torch.compile does not work on this machine ({first[:200]}); train without --compile"
        ) from None


def model_class_name(model: torch.nn.Module) -> str:
    """The model's class name, also when ``fully_shard`` has subclassed it (``FSDP<name>``)."""
    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule)).__name__


def make_optimizer(
    model: torch.nn.Module, args: TrainArguments, lr_multiplier: float = 1.0
) -> torch.optim.Optimizer:
    """AdamW on the model's trainable parameters at the base learning rate times ``lr_multiplier``."""
    groups = phase_param_groups(model, weight_decay=args.weight_decay)
    lr = args.learning_rate * lr_multiplier
    # fused: one kernel per update instead of a loop over parameters (3 ms of a 50 ms N-body step on a CPU),
    # and the step count stays a device tensor, so the update reads nothing back to the host
    return torch.optim.AdamW(groups, lr=lr, betas=(args.adam_beta1, args.adam_beta2), fused=True)


def make_scheduler(
    optimizer: torch.optim.Optimizer, args: TrainArguments, phase: Phase
) -> torch.optim.lr_scheduler.LRScheduler:
    return get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=min(args.warmup_steps, phase.steps),
        num_training_steps=max(1, phase.steps),
    )


# --- the run -----------------------------------------------------------------------------------------------
class Trainer:
    """One training run (one per process). Everything is validated, the data built and the model checked
    against the task before the output directory is touched."""

    def __init__(self, config: RunConfig):
        self.config, self.args = config, config.training
        args = self.args
        set_threads(args)
        self.out = Path(args.output_dir)
        self.plan = phase_plan(args)
        self.pull = pull_schedule(args)
        self.sharding = ShardingPlan.from_launcher()  # FSDP2 from the launcher: the trainer shards itself
        self.accelerator = make_accelerator(args, sharded=self.sharding is not None)
        check_compiler(args)
        acc = self.accelerator
        if args.batch_size % acc.num_processes:
            raise ConfigError(
                f"batch_size: the global batch {args.batch_size} must split evenly over "
                f"{acc.num_processes} processes"
            )
        self.task = config.make_task()
        model = build_model(config, self.task)  # the model's settings first: they need no data
        if self.sharding is not None:
            self.sharding.check(model)
            if args.ema_decay:
                raise ConfigError(
                    "ema_decay: the weight average is not supported with FSDP sharding yet; "
                    "use DDP (accelerate launch --multi_gpu) or ema_decay 0"
                )
        with acc.main_process_first():
            built = self.task.build(cache_dir=args.data_cache_dir)
        self.data = {split: self.task.split(dataset) for split, dataset in built.items()}
        self.batches = StepBatches(len(self.data["train"]), args.batch_size, args.seed)
        check_model_reads_task(build_model(config, self.task), self.task, self.data["validation"])
        self.resume_from = self._prepare_output_dir()
        self.log = JsonlLog(self.out / "log.jsonl", enabled=acc.is_main_process)
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.average: WeightAverage | None = None  # with ema_decay: built by prepare() for each phase
        self.state = TrainerState(num_processes=acc.num_processes)
        # what step() updates; train() resets them and shows a progress bar (benchmarks step directly)
        self.steps_this_process, self.window, self.started = 0, [], time.perf_counter()
        self.progress = tqdm(disable=True)

    @property
    def phase(self) -> Phase:
        return self.plan[self.state.phase_index]

    @property
    def phase_end(self) -> int:
        return self.state.phase_start + self.phase.steps

    # --- the run, top to bottom ------------------------------------------------------------------------
    def train(self) -> dict:
        """Run (or resume) the configured training; returns the results (also in ``results.json``)."""
        set_seed(self.args.seed)
        if self.resume_from is not None:
            if not self.resume():
                return json.loads((self.out / "results.json").read_text())
        else:
            self.start()
        self.announce()
        self.steps_this_process, self.window, self.started = 0, [], time.perf_counter()
        if self.state.global_step == 0:
            self.evaluate_and_select()  # the untrained model: a reference point for the curves
        while not self.state.finished:
            if self.state.global_step >= self.phase_end:
                self.end_phase("steps")
                continue
            self.step()
            self.log_training()
            if self.evaluation_due() and self.evaluate_and_select():
                self.end_phase("early stopping")
            if self.state.global_step % self.args.save_steps == 0 and not self.state.finished:
                self.save_checkpoint()
            if self.stop_requested():
                return self.stop()
        self.progress.close()
        return self.finish()

    def start(self) -> None:
        model = self.shard(build_model(self.config, self.task))
        optimizer = make_optimizer(model, self.args)
        self.prepare(model, optimizer, make_scheduler(optimizer, self.args, self.phase))

    def resume(self) -> bool:
        """Restore the newest checkpoint; False when the run had already finished."""
        checkpoint_dir = self.resume_from
        saved = ckpt.verify(checkpoint_dir)
        known = {f.name for f in dataclasses.fields(TrainerState)}
        self.state = TrainerState(**{k: v for k, v in saved.items() if k in known})
        if "phase_start" not in saved and self.state.phase_index > 0:  # checkpoints of earlier versions
            self.state.phase_start = self.plan[0].steps
        if self.state.finished:
            self.accelerator.print(f"resume: the run in {self.out} is finished")
            return False
        model = self.rebuild_current_phase()  # the switches the run went through
        if self.state.phase_index > 0:
            freeze_rest(model, self.args)
        model = self.shard(model)  # sharded runs: the optimizer is built on the sharded parameters
        optimizer = make_optimizer(model, self.args, self.phase.lr_multiplier)  # state: the checkpoint's
        self.prepare(model, optimizer, make_scheduler(optimizer, self.args, self.phase))
        if self.sharding is not None:
            load_sharded(checkpoint_dir, self.model, self.raw_optimizer)
            self.scheduler.load_state_dict(torch.load(checkpoint_dir / "scheduler.pt", weights_only=True))
            ckpt.restore_rng_states(checkpoint_dir, self.accelerator.process_index)
        else:
            self.accelerator.load_state(str(checkpoint_dir))
        if self.average is not None:
            self.average.load_state_dict(load_file(str(checkpoint_dir / "average.safetensors")))
        best = checkpoint_dir / "best.safetensors"
        self.best_weights = None
        if best.is_file():
            gathered_elsewhere = self.sharding is not None and not self.accelerator.is_main_process
            self.best_weights = {} if gathered_elsewhere else load_file(str(best))  # process 0 broadcasts
        self.log.truncate_after(self.state.global_step)  # records of steps redone after the checkpoint
        self.log.write({"kind": "event", "event": "resumed", "step": self.state.global_step})
        phase = self.plan[self.state.phase_index]
        self.accelerator.print(
            f"resumed from step {self.state.global_step} ({checkpoint_dir.name}, phase "
            f"{self.state.phase_index + 1}: {phase.name})"
        )
        return True

    def announce(self) -> None:
        config, acc, data = self.config, self.accelerator, self.data
        flat = {k: v for s in config.to_dict().values() if isinstance(s, dict) for k, v in s.items()}
        acc.init_trackers(
            "geo-pe", config={k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool))}
        )
        acc.print(
            f"task {config.task}: {len(data['train'])} train / {len(data['validation'])} validation / "
            f"{len(data['test'])} test; {acc.num_processes} process(es) on {acc.device}, "
            f"{torch.get_num_threads()} thread(s) each; phases {[(p.name, p.steps) for p in self.plan]}"
        )
        self.progress = tqdm(
            total=self.planned_steps(),
            initial=self.state.global_step,
            disable=not acc.is_local_main_process,
            desc="train",
        )

    def planned_steps(self) -> int:
        """The last step of the run as planned now (early stopping moves it)."""
        return self.state.phase_start + sum(p.steps for p in self.plan[self.state.phase_index :])

    def step(self) -> None:
        """One optimizer step on the global batch of this step (this process's share)."""
        acc, args, state = self.accelerator, self.args, self.state
        if args.compile:  # CUDA graphs (reduce-overhead): a new step may reuse the last step's buffers
            torch.compiler.cudagraph_mark_step_begin()
        if not self.model.training:  # after an evaluation only: a walk over every module costs 2 ms
            self.model.train()
        indices = shard(self.batches.indices(state.global_step), acc.process_index, acc.num_processes)
        batch = to_device(self.data["train"][indices], acc.device)
        if args.in_range_augmentation == "all" or (
            args.in_range_augmentation == "phase2" and self.phase.index > 0
        ):
            batch = self.task.resample_orientation(
                batch, step_generator(args.seed, state.global_step, "orientation", acc.process_index)
            )
        if self.task.augments_training_batches:  # the task's own symmetries (e.g. a global sign flip),
            # drawn once per global batch and shared by every rank, so k processes do what one does
            batch = self.task.training_batch(batch, step_generator(args.seed, state.global_step, "task"))
        inputs, labels = self.task.inputs(batch)
        # the task's data were checked when they were built (train.checks): value checks in the step would
        # only cost a host sync each (and a graph break under --compile)
        with input_validation(False):
            loss, parts = self.loss(inputs, labels)
        acc.backward(loss)
        if args.max_grad_norm > 0:
            acc.clip_grad_norm_(self.clipped, args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.average is not None:
            self.average.update()
        state.global_step += 1
        self.steps_this_process += 1
        self.window.append(parts)
        self.progress.update(1)

    def loss(self, inputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The task loss, with the soft-equivariance term and phase II's pull toward symmetry."""
        args, task, state = self.args, self.task, self.state
        rank = self.accelerator.process_index
        if args.augment:  # a random global transformation of every training example
            inputs = task.transform(inputs, step_generator(args.seed, state.global_step, "transform", rank))
        parts = {}
        if args.equivariance_loss_weight > 0:
            outputs = {}

            def forward(batch):  # the batch and its transformed copy in one forward (DDP-safe)
                outputs["out"] = self.model(**batch, labels=torch.cat((labels, labels)))
                return task.predictions(outputs["out"], batch)

            def draws(_element) -> torch.Generator:  # one element per step, drawn again for the outputs
                return step_generator(args.seed, state.global_step, "equivariance", rank)

            soft = equivariance_loss(
                forward,
                inputs,
                lambda _: None,
                act_in=lambda g, x: task.transform(x, draws(g)),
                act_out=lambda g, y: task.transform_output(y, inputs, draws(g)),
                batched=True,
            )
            out = outputs["out"]
            parts["equivariance_loss"] = soft.detach()
            loss = out.loss + args.equivariance_loss_weight * soft
        else:
            out = self.model(**inputs, labels=labels)
            loss = out.loss
        parts = {"loss": out.loss.detach().clone(), **parts}  # a copy: CUDA graphs reuse the output
        if self.phase.index > 0 and args.phase2_pull > 0:
            strength = self.pull(state.global_step - state.phase_start)
            penalty = symmetry_penalty(self.raw_model, toward=args.phase2_pull_toward)
            parts["symmetry_penalty"] = penalty.detach()
            parts["pull_weight"] = torch.tensor(float(strength), device=penalty.device)
            loss = loss + strength * penalty
        return loss, parts

    def log_training(self) -> None:
        """Every ``logging_steps`` (and at a phase's end): the window's mean losses, across processes."""
        state, acc = self.state, self.accelerator
        if state.global_step % self.args.logging_steps and state.global_step != self.phase_end:
            return
        keys = list(self.window[0])
        means = torch.stack([torch.stack([w[k] for w in self.window]).mean() for k in keys]).float()
        averaged = acc.reduce(means.to(acc.device), reduction="mean")
        record = dict(zip(keys, averaged.tolist(), strict=True))
        record.update(
            kind="train",
            step=state.global_step,
            phase=self.phase.name,
            lr=self.scheduler.get_last_lr()[0],
            seconds=time.perf_counter() - self.started,
        )
        self.log.write(record)
        acc.log({k: v for k, v in record.items() if isinstance(v, float)}, step=state.global_step)
        self.progress.set_postfix(loss=f"{record['loss']:.3f}", phase=self.phase.name)
        self.window = []

    def evaluation_due(self) -> bool:
        step = self.state.global_step
        return step % self.args.eval_steps == 0 or step == self.phase_end

    def evaluate_and_select(self) -> bool:
        """Validation metric and equivariance error; keeps the best weights of the phase. Returns True
        when early stopping ends the phase."""
        state, task, acc = self.state, self.task, self.accelerator
        with self.averaged():
            metrics = evaluate(self.raw_model, task, self.data["validation"], self.args, acc)
            error = measure_equivariance(self.raw_model, task, self.data["validation"], self.args, acc.device)
            value = metrics[task.metric]
            if self.better(value, state.best_metric):
                state.best_metric, state.best_step = value, state.global_step
                state.evals_without_improvement = 0
                self.remember_best()
            else:
                state.evals_without_improvement += 1
        record = {
            "kind": "eval",
            "step": state.global_step,
            "phase": self.phase.name,
            "validation_loss": metrics["loss"],
            f"validation_{task.metric}": value,
            "equivariance_error": error,
            "seconds": time.perf_counter() - self.started,  # wall time of this process, evaluations included
        }
        self.log.write(record)
        acc.log({k: v for k, v in record.items() if isinstance(v, float)}, step=state.global_step)
        patience = self.args.early_stopping_patience
        if state.phase_index == 0 and self.args.switch_patience:
            patience = self.args.switch_patience  # adaptive switching: phase I ends when it stalls
        return bool(patience) and state.evals_without_improvement >= patience

    def end_phase(self, reason: str) -> None:
        """Restore the phase's best weights, record its results, then switch to the next phase if any."""
        state = self.state
        if self.average is not None:
            self.average.copy_to_model()  # the phase ends on the average (or on its best, below)
        if self.args.load_best_model_at_end:
            self.restore_best()
        results = self.phase_results(reason)
        state.phases.append(results)
        self.log.write({"kind": "event", "event": "phase_end", "step": state.global_step, **results})
        self.save_pretrained(self.out / f"phase{state.phase_index + 1}_model")
        if state.phase_index + 1 >= len(self.plan):
            state.finished = True
        else:
            self.switch_phase()

    def switch_phase(self) -> None:
        """Phase II from here: `set_phase`, `rebuild_optimizer`, a new scheduler, prepared again."""
        state, acc = self.state, self.accelerator
        previous = self.raw_optimizer
        phase = self.plan[state.phase_index + 1]
        if self.sharding is not None:
            # set_phase needs whole weights: gather them into an unsharded copy of the model in its
            # current phase, switch it and shard it again (the optimizer starts anew: the parameters are new)
            old_parameters = dict(self.raw_model.named_parameters())
            model, report = switch_phase_sharded(
                self.model,
                phase.name,
                rebuild=lambda: self.rebuild_current_phase(),
                shard=self.sharding.shard,
                **switch_arguments(self.args),
            )
            freeze_rest(model, self.args)
            optimizer = make_optimizer(model, self.args, phase.lr_multiplier)
            carry_optimizer_state(old_parameters, previous, model, optimizer)  # as rebuild_optimizer does
            self.release()
        else:
            self.release()
            model = self.raw_model
            report = switch_phase(model, phase, self.args)
            optimizer = rebuild_optimizer(previous, model, lr_multiplier=phase.lr_multiplier)
        state.phase_index += 1
        state.phase_start = state.global_step
        self.prepare(model, optimizer, make_scheduler(optimizer, self.args, phase))
        state.best_metric, state.best_step, state.evals_without_improvement = None, None, 0
        self.best_weights = None
        self.progress.total = self.planned_steps()
        self.progress.refresh()
        self.log.write(
            {
                "kind": "event",
                "event": "phase_switch",
                "step": state.global_step,
                "phase": phase.name,
                "max_weight_change": report.max_weight_change,
            }
        )
        trainable = sum(p.numel() for p in self.raw_model.parameters() if p.requires_grad)
        acc.print(
            f"step {state.global_step}: phase II ({phase.name}), {trainable:,} trainable parameters, "
            f"weights moved by {report.max_weight_change:.2g} at the switch"
        )

    def phase_results(self, reason: str) -> dict:
        args, acc, task, state = self.args, self.accelerator, self.task, self.state
        validation = evaluate(self.raw_model, task, self.data["validation"], args, acc)
        test = evaluate(self.raw_model, task, self.data["test"], args, acc)
        error = measure_equivariance(self.raw_model, task, self.data["test"], args, acc.device)
        trainable = sum(p.numel() for p in self.raw_model.parameters() if p.requires_grad)
        return {
            "phase": self.phase.name,
            "started_at_step": state.phase_start,
            "ended_at_step": state.global_step,
            "ended_by": reason,
            "best_step": state.best_step,
            f"validation_{task.metric}": validation[task.metric],
            f"test_{task.metric}": test[task.metric],
            "test_loss": test["loss"],
            "equivariance_error": error,
            "trainable_parameters": trainable,
        }

    def stop_requested(self) -> bool:
        after = self.args.stop_after_steps
        return after is not None and self.steps_this_process >= after and not self.state.finished

    def stop(self) -> dict:
        """End this process early with a checkpoint (``stop_after_steps``, for job queues)."""
        if self.state.global_step % self.args.save_steps:
            self.save_checkpoint()
        self.progress.close()
        self.accelerator.print(
            f"stopped after {self.steps_this_process} steps at step {self.state.global_step}; "
            "resume with --resume"
        )
        self.accelerator.end_training()
        return {"status": "stopped", "step": self.state.global_step}

    def finish(self) -> dict:
        args, acc, task, state = self.args, self.accelerator, self.task, self.state
        metric = task.metric
        chosen = len(state.phases) - 1
        if args.load_best_model_at_end:
            values = [p[f"validation_{metric}"] for p in state.phases]
            best = max(values) if task.higher_is_better else min(values)
            chosen = values.index(best)
        results = {
            "task": self.config.task,
            "metric": metric,
            "phases": state.phases,
            "selected_phase": chosen + 1,
            "model_dir": str(self.out / "model"),
            "wall_seconds": time.perf_counter() - self.started,
            "processes": acc.num_processes,
        }
        acc.wait_for_everyone()
        if acc.is_main_process:
            target = self.out / "model"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.out / f"phase{chosen + 1}_model", target)
            (self.out / "results.json").write_text(json.dumps(results, indent=1))
            if args.plot:
                png = plot_curves(self.out / "log.jsonl", self.out / "curves.png", metric)
                results["curves"] = str(png) if png else None
            self.log.write({"kind": "event", "event": "finished", "step": state.global_step})
        self.save_checkpoint()  # marks the run finished: --resume then reports instead of retraining
        acc.print(format_table(results, model_class_name(self.raw_model)))
        acc.end_training()
        return results

    # --- output directory ---------------------------------------------------------------------------------
    def _prepare_output_dir(self) -> Path | None:
        """Check the output directory (`check_output_dir`), then create it (or clear it with
        ``overwrite_output_dir``) and save the config. Returns the checkpoint to resume from, or None."""
        acc = self.accelerator
        resume_from = check_output_dir(self.config, acc.num_processes)
        if resume_from is not None:
            return resume_from
        acc.wait_for_everyone()
        if acc.is_main_process:
            for name in ("checkpoints", "model", "log.jsonl", "results.json", "curves.png"):
                path = self.out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            for path in self.out.glob("phase*_model"):
                shutil.rmtree(path)
            self.out.mkdir(parents=True, exist_ok=True)
            self.config.save(self.out / "run_config.yaml")
        acc.wait_for_everyone()
        return None

    # --- prepared objects ------------------------------------------------------------------------------
    def shard(self, model: PreTrainedModel) -> PreTrainedModel:
        """``fully_shard`` the model when the launcher asked for FSDP (in place), else leave it."""
        return model if self.sharding is None else self.sharding.shard(model)

    def rebuild_current_phase(self) -> PreTrainedModel:
        """The run's model, unsharded, in the phase the run is in (for the sharded switch)."""
        model = build_model(self.config, self.task)
        for phase in self.plan[1 : self.state.phase_index + 1]:
            model.set_phase(phase.name, **switch_arguments(self.args))
        return model

    def prepare(
        self,
        raw_model: PreTrainedModel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        self.raw_model = raw_model
        self.raw_optimizer = optimizer
        # the parameters the optimizer updates, listed once (a walk over the modules per step costs 1.5 ms)
        self.clipped = [p for group in optimizer.param_groups for p in group["params"]]
        if self.args.ema_decay:  # a new average for each phase, from the weights it starts with
            self.average = WeightAverage(raw_model, self.args.ema_decay)
        acc = self.accelerator
        if self.sharding is None:
            self.model, self.optimizer, self.scheduler = acc.prepare(raw_model, optimizer, scheduler)
            self.compile()
            return
        # already sharded: Accelerate wraps the optimizer and scheduler, and autocast around the forward
        # as its prepare would (the model itself must not be wrapped again in DDP)
        if acc.mixed_precision != "no" and not hasattr(raw_model, "_forward_before_autocast"):
            raw_model._forward_before_autocast = raw_model.forward
            raw_model.forward = acc.autocast()(raw_model.forward)
        self.model = raw_model
        self.optimizer, self.scheduler = acc.prepare(optimizer, scheduler)
        self.compile()

    def compile(self) -> None:
        """With ``compile``: the training forward through torch.compile (after DDP or FSDP wrapping, as
        both recommend); evaluation calls the raw model, eagerly. Compiled again after a phase switch."""
        if self.args.compile:
            self.model = torch.compile(self.model, mode=compile_mode(self.args))

    def release(self) -> None:
        """Drop the prepared wrappers (DDP, accelerated optimizer and scheduler) before a phase switch."""
        self.accelerator.free_memory()
        self.model = self.optimizer = self.scheduler = None
        gc.collect()  # the old DDP wrapper must be gone before the new one registers its hooks

    # --- checkpoints -------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        acc, state = self.accelerator, self.state
        root = self.out / "checkpoints"
        name = ckpt.checkpoint_name(state.global_step)
        partial, final = root / f"{name}.partial", root / name
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        acc.wait_for_everyone()
        if self.sharding is None:
            acc.save_state(str(partial))
        else:  # each process writes its shards; the scheduler and every process's RNG states beside them
            save_sharded(partial, self.model, self.raw_optimizer)
            ckpt.save_rng_states(partial, acc.process_index)
            if acc.is_main_process:
                torch.save(self.scheduler.state_dict(), partial / "scheduler.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            (partial / ckpt.STATE).write_text(json.dumps(dataclasses.asdict(state), indent=1))
            if self.best_weights is not None:
                save_file(self.best_weights, str(partial / "best.safetensors"))
            if self.average is not None:
                save_file(self.average.state_dict(), str(partial / "average.safetensors"))
            ckpt.write_manifest(partial, state.global_step)
            ckpt.finalize(partial, final)
            ckpt.rotate(root, self.args.save_total_limit)
        acc.wait_for_everyone()
        return final

    # --- model selection ---------------------------------------------------------------------------------
    def averaged(self) -> contextlib.AbstractContextManager:
        """The block runs on the weight average (``ema_decay``), or on the weights themselves."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def remember_best(self) -> None:
        if self.sharding is not None:  # gathered on process 0 (a collective)
            self.best_weights = full_state_dict(self.raw_model)
            return
        self.best_weights = {k: v.detach().cpu().clone() for k, v in self.raw_model.state_dict().items()}

    def restore_best(self) -> None:
        if self.best_weights is None:
            return
        if self.sharding is not None:
            load_full_state_dict(self.raw_model, self.best_weights)
        else:
            self.raw_model.load_state_dict(self.best_weights)

    def save_pretrained(self, directory: Path) -> None:
        """``save_pretrained`` of the model (gathered first when sharded), by the main process."""
        acc = self.accelerator
        if self.sharding is None:
            if acc.is_main_process:
                self.raw_model.save_pretrained(directory)
            return
        state = full_state_dict(self.raw_model)  # a collective; the weights land on process 0
        if acc.is_main_process:  # saved from a plain copy: HF would also copy FSDP's class source files
            plain = self.rebuild_current_phase()
            plain.load_state_dict(state)
            plain.save_pretrained(directory)
        acc.wait_for_everyone()

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.task.higher_is_better else value < best


def train(config: RunConfig) -> dict:
    """Run (or resume) the configured training; returns the results (also in ``results.json``)."""
    return Trainer(config).train()
