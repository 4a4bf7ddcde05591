"""The training loop: two phases through Accelerate, exact resume, model selection and the final report.

One run trains the task's model in phase I (``phase1_constraint``) for ``phase1_steps``, switches it to
``phase2`` without changing its function (the optimizer and scheduler are rebuilt and the model is
prepared again, so DDP wraps the new parameters), and trains ``phase2_steps`` more, at
``phase2_lr_multiplier`` times the learning rate and with the optional pull toward symmetry.

Batches are a pure function of (seed, step): step s uses positions ``[s mod E] * B ...`` of the
permutation drawn for epoch ``s // E`` from the seed, and every process takes its contiguous share of
that global batch. Resuming (or switching phase) at any step therefore skips exactly the batches already
seen, and one process with global batch B computes what k processes with B / k each compute.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_scheduler

from geo_pe.phases import PenaltySchedule, PhasedLinear, phase_param_groups, symmetry_penalty
from geo_pe.testing import equivariance_error
from models import GeoTransformerConfig
from train import checkpoint as ckpt
from train.config import RunConfig, load_config
from train.monitor import JsonlLog, plot_curves, trackers_for
from train.validation import ConfigError

__all__ = ["TrainerState", "train"]


@dataclass
class TrainerState:
    """What a checkpoint needs besides weights, optimizer, scheduler and RNG states."""

    global_step: int = 0
    phase_index: int = 0
    phase_history: list[str] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    phases: list[dict] = field(default_factory=list)  # results of the finished phases
    finished: bool = False


@dataclass
class Phase:
    name: str
    steps: int
    start: int  # global step at which it starts
    lr_multiplier: float
    index: int = 0  # 0 for phase I, 1 for phase II

    @property
    def end(self) -> int:
        return self.start + self.steps


def phase_plan(args) -> list[Phase]:
    plan = [Phase(args.phase1_constraint, args.phase1_steps, 0, 1.0)]
    if args.phase2 != "none":
        plan.append(Phase(args.phase2, args.phase2_steps, args.phase1_steps, args.phase2_lr_multiplier, 1))
    return plan


# --- pieces ------------------------------------------------------------------------------------------------
def make_accelerator(args) -> Accelerator:
    """CPU processes (gloo) when no accelerator device is present, whatever ``accelerate launch`` says."""
    has_device = torch.cuda.is_available() or (
        getattr(torch, "xpu", None) is not None and torch.xpu.is_available()
    )
    has_device = has_device or torch.backends.mps.is_available()
    log_with = trackers_for(args.report_to)
    return Accelerator(
        cpu=not has_device,
        log_with=log_with or None,
        project_dir=args.output_dir,
        # batch_size is the global batch: the scheduler steps once per optimizer step
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )


def build_model(config: RunConfig, task, phase_history: list[str]):
    args = config.training
    try:
        model_config = GeoTransformerConfig(
            **dataclasses.asdict(config.model),
            **task.model_settings(),
            phase_history=list(phase_history),
            subspace_dim=args.subspace_dim,
            subspace_projection=args.subspace_projection,
            subspace_seed=args.seed,
            shared_subspace=args.shared_subspace,
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
    return task.model_class(model_config)


def make_optimizer(model, args, phase: Phase, previous: torch.optim.Optimizer | None = None):
    """AdamW on the phase's trainable parameters; state carried over from ``previous`` where they survive.
    With ``phase2_freeze_rest``, phase II leaves out (and freezes) every parameter outside the
    phase-controlled layers."""
    if args.phase2_freeze_rest and phase.index > 0:
        phased = {id(p) for m in model.modules() if isinstance(m, PhasedLinear) for p in m.parameters()}
        for p in model.parameters():
            if id(p) not in phased:
                p.requires_grad_(False)
    groups = phase_param_groups(model, weight_decay=args.weight_decay)
    optimizer = torch.optim.AdamW(
        groups, lr=args.learning_rate * phase.lr_multiplier, betas=(args.adam_beta1, args.adam_beta2)
    )
    if previous is not None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p in previous.state:
                    optimizer.state[p] = previous.state[p]
    return optimizer


def make_scheduler(optimizer, args, phase: Phase):
    return get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=min(args.warmup_steps, phase.steps),
        num_training_steps=max(1, phase.steps),
    )


class StepBatches:
    """Global batch of step s: a slice of the permutation of epoch s // E (E full batches per epoch)."""

    def __init__(self, size: int, batch_size: int, seed: int):
        if batch_size > size:
            raise ConfigError(f"batch_size: {batch_size} exceeds the {size} training examples")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.per_epoch = size // batch_size
        self._epoch, self._order = None, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.size, generator=generator)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]


def shard(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's contiguous share (sizes differ by at most one)."""
    return torch.tensor_split(indices, world)[rank]


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class Split:
    """A dataset split held as tensors: ``split[index]`` is the batch of those rows."""

    def __init__(self, columns: dict[str, torch.Tensor]):
        self.columns = columns
        self.size = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.columns.items()}


def concat(a, b):
    """Concatenate two batches of model inputs (tensors or dicts of tensors) along the batch."""
    if isinstance(a, dict):
        return {k: concat(a[k], b[k]) for k in a}
    return torch.cat((a, b))


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator for the random group elements of one step: a pure function of (seed, step, stream)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


# --- evaluation ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(raw_model, task, dataset, args, accelerator) -> dict:
    """Loss and the task's metric over ``dataset``, each process on its share, summed across processes."""
    was_training = raw_model.training
    raw_model.eval()
    mine = shard(torch.arange(len(dataset)), accelerator.process_index, accelerator.num_processes)
    totals = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss sum, score sum, count
    for chunk in torch.split(mine, args.eval_batch_size):
        if len(chunk) == 0:
            continue
        inputs, labels = task.inputs(to_device(dataset[chunk], accelerator.device))
        out = raw_model(**inputs, labels=labels)
        score, count = task.score(out, labels)
        totals += torch.stack((out.loss.double() * count, score.double(), torch.tensor(count).double()))
    totals = accelerator.reduce(totals, reduction="sum")
    raw_model.train(was_training)
    count = max(totals[2].item(), 1.0)
    return {"loss": totals[0].item() / count, task.metric: totals[1].item() / count}


@torch.no_grad()
def measure_equivariance(raw_model, task, dataset, args, device) -> float:
    """Relative change of the outputs on a held-out batch under random global transformations
    (`Task.transform`; one group element per example), the worst over ``equivariance_samples``."""
    was_training = raw_model.training
    raw_model.eval()
    inputs, _ = task.inputs(to_device(dataset[: args.eval_batch_size], device))

    def sample(generator):  # a "group element" is a seeded generator that task.transform draws from
        return torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))

    error = equivariance_error(
        lambda x: task.predictions(raw_model(**x)),
        inputs,
        sample,
        act_in=lambda g, x: task.transform(x, g),
        num_samples=args.equivariance_samples,
        generator=args.seed,
    )
    raw_model.train(was_training)
    return error


# --- the run -----------------------------------------------------------------------------------------------
class Run:
    """State and helpers of one training run (one per process)."""

    def __init__(self, config: RunConfig):
        self.config, self.args = config, config.training
        self.out = Path(self.args.output_dir)
        self.accelerator = make_accelerator(self.args)
        acc = self.accelerator
        if acc.distributed_type == DistributedType.FSDP and len(phase_plan(self.args)) > 1:
            raise ConfigError(
                "phase2: switching phases under FSDP is not supported (set_phase needs unsharded weights); "
                "use DDP (configs/accelerate/multi_gpu.yaml) or phase2: none"
            )
        if self.args.batch_size % acc.num_processes:
            raise ConfigError(
                f"batch_size: the global batch {self.args.batch_size} must split evenly over "
                f"{acc.num_processes} processes"
            )
        self._prepare_output_dir()
        self.task = config.make_task()
        with acc.main_process_first():
            built = self.task.build(cache_dir=self.args.data_cache_dir)
        # the splits as tensors in memory: indexing an Arrow table per batch costs more than a small
        # model's step (the tasks here are a few MB)
        self.data = {split: Split(dataset[:]) for split, dataset in built.items()}
        self.plan = phase_plan(self.args)
        self.log = JsonlLog(self.out / "log.jsonl", enabled=acc.is_main_process)
        self.batches = StepBatches(len(self.data["train"]), self.args.batch_size, self.args.seed)
        self.best_weights: dict[str, torch.Tensor] | None = None

    # output directory and resume
    def _prepare_output_dir(self) -> None:
        args, acc = self.args, self.accelerator
        existing = self.out / "run_config.yaml"
        if args.resume:
            if not existing.is_file():
                raise ConfigError(f"resume: {self.out} holds no run to resume (no run_config.yaml)")
            saved = load_config(["--config", str(existing)])
            changed = self.config.differences(saved)
            if changed:
                detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (new, old) in changed.items())
                raise ConfigError(f"resume: the config differs from the run in {self.out} ({detail})")
            return
        holds_run = existing.is_file() or (self.out / "checkpoints").exists()
        if holds_run and not args.overwrite_output_dir:
            raise ConfigError(
                f"output_dir: {self.out} already holds a run; pass --resume to continue it or "
                "--overwrite_output_dir to start over (which deletes it)"
            )
        acc.wait_for_everyone()
        if acc.is_main_process:
            if holds_run:
                for name in ("checkpoints", "model", "log.jsonl", "results.json", "curves.png"):
                    path = self.out / name
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                for path in self.out.glob("phase*_model"):
                    shutil.rmtree(path)
            self.out.mkdir(parents=True, exist_ok=True)
            self.config.save(existing)
        acc.wait_for_everyone()

    def prepare(self, raw_model, optimizer, scheduler):
        self.raw_model = raw_model
        self.raw_optimizer = optimizer
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(raw_model, optimizer, scheduler)

    def release(self) -> None:
        """Drop the prepared wrappers (DDP, accelerated optimizer and scheduler) before a phase switch."""
        self.accelerator.free_memory()
        self.model = self.optimizer = self.scheduler = None
        gc.collect()  # the old DDP wrapper must be gone before the new one registers its hooks

    # checkpoints
    def save_checkpoint(self, state: TrainerState) -> Path:
        acc = self.accelerator
        root = self.out / "checkpoints"
        name = ckpt.checkpoint_name(state.global_step)
        partial, final = root / f"{name}.partial", root / name
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(partial))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (partial / ckpt.STATE).write_text(json.dumps(dataclasses.asdict(state), indent=1))
            if self.best_weights is not None:
                save_file(self.best_weights, str(partial / "best.safetensors"))
            ckpt.write_manifest(partial, state.global_step)
            ckpt.finalize(partial, final)
            ckpt.rotate(root, self.args.save_total_limit)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self) -> tuple[TrainerState, Path]:
        latest = ckpt.find_latest(self.out / "checkpoints")
        if latest is None:
            raise ConfigError(f"resume: no complete checkpoint under {self.out / 'checkpoints'}")
        saved = ckpt.verify(latest)
        known = {f.name for f in dataclasses.fields(TrainerState)}
        state = TrainerState(**{k: v for k, v in saved.items() if k in known})
        best = latest / "best.safetensors"
        self.best_weights = load_file(str(best)) if best.is_file() else None
        return state, latest

    # model selection
    def remember_best(self) -> None:
        self.best_weights = {k: v.detach().cpu().clone() for k, v in self.raw_model.state_dict().items()}

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self.raw_model.load_state_dict(self.best_weights)

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.task.higher_is_better else value < best


def train(config: RunConfig) -> dict:
    """Run (or resume) the configured training; returns the results (also in ``results.json``)."""
    run = Run(config)
    args, acc, task = run.args, run.accelerator, run.task
    set_seed(args.seed)

    if args.resume:
        state, checkpoint_dir = run.load_checkpoint()
        if state.finished:
            acc.print(f"resume: the run in {run.out} is finished")
            return json.loads((run.out / "results.json").read_text())
        phase = run.plan[state.phase_index]
        raw_model = build_model(config, task, state.phase_history)
        optimizer = make_optimizer(raw_model, args, phase)
        run.prepare(raw_model, optimizer, make_scheduler(optimizer, args, phase))
        acc.load_state(str(checkpoint_dir))
        run.log.write({"kind": "event", "event": "resumed", "step": state.global_step, "phase": phase.name})
    else:
        state = TrainerState(phase_history=[run.plan[0].name])
        raw_model = build_model(config, task, state.phase_history)
        phase = run.plan[0]
        optimizer = make_optimizer(raw_model, args, phase)
        run.prepare(raw_model, optimizer, make_scheduler(optimizer, args, phase))

    flat = {
        k: v for section in config.to_dict().values() if isinstance(section, dict) for k, v in section.items()
    }
    acc.init_trackers(
        "geo-pe", config={k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool))}
    )
    acc.print(
        f"task {config.task}: {len(run.data['train'])} train / {len(run.data['validation'])} validation / "
        f"{len(run.data['test'])} test; {acc.num_processes} process(es) on {acc.device}; "
        f"phases {[(p.name, p.steps) for p in run.plan]}"
    )
    progress = tqdm(
        total=args.total_steps, initial=state.global_step, disable=not acc.is_local_main_process, desc="train"
    )
    pull = PenaltySchedule(
        args.phase2_pull, args.phase2_pull_end, max(1, args.phase2_steps), args.phase2_pull_decay
    )
    steps_this_process, window, started = 0, [], time.perf_counter()

    def end_phase(reason: str) -> None:
        """Restore the phase's best weights, record its results, switch to the next phase if any."""
        nonlocal phase
        if args.load_best_model_at_end:
            run.restore_best()
        results = _phase_results(run, state, phase, reason)
        state.phases.append(results)
        run.log.write({"kind": "event", "event": "phase_end", "step": state.global_step, **results})
        if acc.is_main_process:
            run.raw_model.save_pretrained(run.out / f"phase{state.phase_index + 1}_model")
        if state.phase_index + 1 >= len(run.plan):
            state.finished = True
            return
        previous = run.raw_optimizer
        run.release()
        state.phase_index += 1
        phase = run.plan[state.phase_index]
        report = run.raw_model.set_phase(phase.name)
        state.phase_history = list(run.raw_model.config.phase_history)
        optimizer = make_optimizer(run.raw_model, args, phase, previous)
        run.prepare(run.raw_model, optimizer, make_scheduler(optimizer, args, phase))
        state.best_metric, state.best_step, state.evals_without_improvement = None, None, 0
        run.best_weights = None
        run.log.write(
            {
                "kind": "event",
                "event": "phase_switch",
                "step": state.global_step,
                "phase": phase.name,
                "max_weight_change": report.max_weight_change,
            }
        )
        trainable = sum(p.numel() for p in run.raw_model.parameters() if p.requires_grad)
        acc.print(
            f"step {state.global_step}: phase II ({phase.name}), {trainable:,} trainable parameters, "
            f"weights moved by {report.max_weight_change:.2g} at the switch"
        )

    def evaluate_now() -> bool:
        """Validation metric and equivariance error; returns True when early stopping ends the phase."""
        metrics = evaluate(run.raw_model, task, run.data["validation"], args, acc)
        error = measure_equivariance(run.raw_model, task, run.data["validation"], args, acc.device)
        value = metrics[task.metric]
        if run.better(value, state.best_metric):
            state.best_metric, state.best_step, state.evals_without_improvement = value, state.global_step, 0
            run.remember_best()
        else:
            state.evals_without_improvement += 1
        record = {
            "kind": "eval",
            "step": state.global_step,
            "phase": phase.name,
            "validation_loss": metrics["loss"],
            f"validation_{task.metric}": value,
            "equivariance_error": error,
        }
        run.log.write(record)
        acc.log({k: v for k, v in record.items() if isinstance(v, float)}, step=state.global_step)
        patience = args.early_stopping_patience
        return bool(patience) and state.evals_without_improvement >= patience

    if state.global_step == 0 and not args.resume:
        evaluate_now()  # the untrained model: a reference point for the curves
    while not state.finished:
        if state.global_step >= phase.end:
            end_phase("steps")
            continue
        run.model.train()
        indices = shard(run.batches.indices(state.global_step), acc.process_index, acc.num_processes)
        inputs, labels = task.inputs(to_device(run.data["train"][indices], acc.device))
        loss, parts = _loss(run, inputs, labels, state, phase, pull)
        acc.backward(loss)
        if args.max_grad_norm > 0:
            acc.clip_grad_norm_(run.model.parameters(), args.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        steps_this_process += 1
        window.append(parts)
        progress.update(1)
        if state.global_step % args.logging_steps == 0 or state.global_step == phase.end:
            averaged = acc.reduce(
                torch.tensor([sum(w[k] for w in window) / len(window) for k in window[0]], device=acc.device),
                reduction="mean",
            )
            record = dict(zip(window[0], averaged.tolist(), strict=True))
            record.update(
                kind="train",
                step=state.global_step,
                phase=phase.name,
                lr=run.scheduler.get_last_lr()[0],
                seconds=time.perf_counter() - started,
            )
            run.log.write(record)
            acc.log({k: v for k, v in record.items() if isinstance(v, float)}, step=state.global_step)
            progress.set_postfix(loss=f"{record['loss']:.3f}", phase=phase.name)
            window = []
        stop_early = False
        if state.global_step % args.eval_steps == 0 or state.global_step == phase.end:
            stop_early = evaluate_now()
        if stop_early:
            end_phase("early stopping")
        if state.global_step % args.save_steps == 0 and not state.finished:
            run.save_checkpoint(state)
        if (
            args.stop_after_steps is not None
            and steps_this_process >= args.stop_after_steps
            and not state.finished
        ):
            if state.global_step % args.save_steps:
                run.save_checkpoint(state)
            progress.close()
            acc.print(
                f"stopped after {steps_this_process} steps at step {state.global_step}; resume with --resume"
            )
            acc.end_training()
            return {"status": "stopped", "step": state.global_step}
    progress.close()
    return _finish(run, state, started)


def _loss(run, inputs, labels, state, phase, pull):
    """The task loss plus the phase II pull toward symmetry and the soft-equivariance term."""
    args, task = run.args, run.task
    rank = run.accelerator.process_index
    if args.augment:  # a random global transformation of every training example
        inputs = task.transform(inputs, step_generator(args.seed, state.global_step, 2 * rank + 1))
    parts = {}
    if args.equivariance_loss_weight > 0:  # one forward on the batch and its transformed copy (DDP-safe)
        moved = task.transform(inputs, step_generator(args.seed, state.global_step, 2 * rank + 2))
        out = run.model(**concat(inputs, moved), labels=torch.cat((labels, labels)))
        y = task.predictions(out)
        half = labels.shape[0]
        soft = (y[:half] - y[half:]).pow(2).mean()
        parts["equivariance_loss"] = soft.item()
        loss = out.loss + args.equivariance_loss_weight * soft
    else:
        out = run.model(**inputs, labels=labels)
        loss = out.loss
    parts = {"loss": out.loss.item(), **parts}
    if state.phase_index > 0 and args.phase2_pull > 0:
        strength = pull(state.global_step - phase.start)
        penalty = symmetry_penalty(run.raw_model, toward=args.phase2_pull_toward)
        parts["symmetry_penalty"] = penalty.item()
        loss = loss + strength * penalty
    return loss, parts


def _phase_results(run, state, phase, reason) -> dict:
    args, acc, task = run.args, run.accelerator, run.task
    validation = evaluate(run.raw_model, task, run.data["validation"], args, acc)
    test = evaluate(run.raw_model, task, run.data["test"], args, acc)
    error = measure_equivariance(run.raw_model, task, run.data["test"], args, acc.device)
    trainable = sum(p.numel() for p in run.raw_model.parameters() if p.requires_grad)
    return {
        "phase": phase.name,
        "ended_at_step": state.global_step,
        "ended_by": reason,
        "best_step": state.best_step,
        f"validation_{task.metric}": validation[task.metric],
        f"test_{task.metric}": test[task.metric],
        "test_loss": test["loss"],
        "equivariance_error": error,
        "trainable_parameters": trainable,
    }


def _finish(run, state, started) -> dict:
    args, acc, task = run.args, run.accelerator, run.task
    metric = task.metric
    chosen = len(state.phases) - 1
    if args.load_best_model_at_end:
        values = [p[f"validation_{metric}"] for p in state.phases]
        best = max(values) if task.higher_is_better else min(values)
        chosen = values.index(best)
    results = {
        "task": run.config.task,
        "metric": metric,
        "phases": state.phases,
        "selected_phase": chosen + 1,
        "model_dir": str(run.out / "model"),
        "wall_seconds": time.perf_counter() - started,
        "processes": acc.num_processes,
    }
    acc.wait_for_everyone()
    if acc.is_main_process:
        target = run.out / "model"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(run.out / f"phase{chosen + 1}_model", target)
        (run.out / "results.json").write_text(json.dumps(results, indent=1))
        if args.plot:
            png = plot_curves(run.out / "log.jsonl", run.out / "curves.png", metric)
            results["curves"] = str(png) if png else None
        run.log.write({"kind": "event", "event": "finished", "step": state.global_step})
    run.save_checkpoint(state)  # marks the run finished: --resume then reports instead of retraining
    acc.print(format_table(results))
    acc.end_training()
    return results


def format_table(results: dict) -> str:
    """The final metrics table: one row per phase, the selected (saved) one starred."""
    metric = results["metric"]
    columns = ("phase", "steps", f"val {metric}", f"test {metric}", "equiv. error", "trainable")
    widths = (18, 6, 13, 14, 13, 10)
    header = " ".join(
        f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(columns, widths, strict=True))
    )
    lines = [header, "-" * len(header)]
    for i, p in enumerate(results["phases"], start=1):
        cells = (
            f"{i}: {p['phase']}",
            f"{p['ended_at_step']}",
            f"{p[f'validation_{metric}']:.4f}",
            f"{p[f'test_{metric}']:.4f}",
            f"{p['equivariance_error']:.2e}",
            f"{p['trainable_parameters']:,}",
        )
        row = " ".join(
            f"{c:<{w}}" if j == 0 else f"{c:>{w}}" for j, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        lines.append(row + (" *" if i == results["selected_phase"] else ""))
    lines.append(
        f"* saved to {results['model_dir']} (AutoModel.from_pretrained); {results['wall_seconds']:.0f} s"
    )
    return "\n".join(lines)
