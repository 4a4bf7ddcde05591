"""Evaluation of a run: the task's metric and loss summed across processes on the device, the
equivariance error under random global transformations, and the final metrics table."""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedModel

from geo_pe.testing import equivariance_error
from train.batches import Split, shard, to_device
from train.config import TrainArguments
from train.tasks import Task

__all__ = ["evaluate", "format_table", "measure_equivariance"]


@torch.no_grad()
def evaluate(
    raw_model: PreTrainedModel, task: Task, dataset: Split, args: TrainArguments, accelerator: Accelerator
) -> dict[str, float]:
    """Loss and the task's metric over ``dataset``, each process on its share, summed across processes.
    Every tensor of the sums lives on the accelerator's device; one transfer to the host at the end."""
    was_training = raw_model.training
    raw_model.eval()
    device = accelerator.device
    mine = shard(torch.arange(len(dataset)), accelerator.process_index, accelerator.num_processes)
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, score sum, count
    chunks = list(torch.split(mine, args.eval_batch_size))
    sharded = isinstance(raw_model, FSDPModule)
    if sharded:  # each forward gathers weights from every process: all run as many forwards
        most = math.ceil(math.ceil(len(dataset) / accelerator.num_processes) / args.eval_batch_size)
        chunks += [mine[:0]] * (most - len(chunks))
    for chunk in chunks:
        if len(chunk) == 0:
            if sharded and len(dataset):
                raw_model(**task.inputs(to_device(dataset[torch.arange(1)], device))[0])  # takes part
            continue
        inputs, labels = task.inputs(to_device(dataset[chunk], device))
        out = raw_model(**inputs, labels=labels)
        score, count = task.score(out, labels, inputs)
        count = torch.as_tensor(count, dtype=torch.float64, device=device)
        totals += torch.stack((out.loss.double() * count, score.double(), count))
    totals = accelerator.reduce(totals, reduction="sum")
    raw_model.train(was_training)
    loss_sum, score_sum, count = totals.tolist()
    count = max(count, 1.0)
    return {"loss": loss_sum / count, task.metric: score_sum / count}


@torch.no_grad()
def measure_equivariance(
    raw_model: PreTrainedModel, task: Task, dataset: Split, args: TrainArguments, device: torch.device
) -> float:
    """Relative change of the outputs on a held-out batch under random global transformations
    (`Task.transform`; one group element per example), the worst over ``equivariance_samples``."""
    was_training = raw_model.training
    raw_model.eval()
    inputs, _ = task.inputs(to_device(dataset[: args.eval_batch_size], device))

    def sample(generator):  # a "group element" is a seed that task.transform draws from
        return int(torch.randint(2**62, (1,), generator=generator))

    def draws(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    error = equivariance_error(
        lambda x: task.predictions(raw_model(**x), x),
        inputs,
        sample,
        act_in=lambda g, x: task.transform(x, draws(g)),
        act_out=lambda g, y: task.transform_output(y, inputs, draws(g)),
        num_samples=args.equivariance_samples,
        generator=args.seed,
    )
    raw_model.train(was_training)
    return error


def format_table(results: dict, model_class: str = "AutoModel") -> str:
    """The final metrics table: one row per phase with its own steps, the selected (saved) one starred."""
    metric = results["metric"]
    columns = ("phase", "steps", "ended at", f"val {metric}", f"test {metric}", "equiv. error", "trainable")
    widths = (18, 6, 8, 13, 14, 13, 10)
    header = " ".join(
        f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(columns, widths, strict=True))
    )
    lines = [header, "-" * len(header)]
    for i, p in enumerate(results["phases"], start=1):
        cells = (
            f"{i}: {p['phase']}",
            f"{p['ended_at_step'] - p.get('started_at_step', 0)}",
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
        f"* saved to {results['model_dir']} (load with {model_class}.from_pretrained); "
        f"{results['wall_seconds']:.0f} s"
    )
    return "\n".join(lines)
