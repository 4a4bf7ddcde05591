"""The charged N-body system in a uniform external field E = eps e_z (force q_i E): a symmetry broken by
the world, after the two-phase idea (Bökman et al.; Finzi et al. 2021, residual pathway priors).

Two ways the field acts:

- ``onset``: switched on at the input frame. Nothing in the input points along the field, so a
  rotation-equivariant model cannot know its direction: its error has a floor near eps^2 / 12 (the
  displacement 0.5 q eps over the one time unit predicted, squared and averaged over the 3 coordinates).
  The broken case.
- ``throughout``: acting from the start. The charge-weighted velocities at the input frame already point
  along the field, so an equivariant model can infer it. The control.

The peers trained here besides EGNN: a plain transformer on raw coordinates (tokens [x, v, q], the output
x + f(tokens)), with and without random rotations of whole systems as augmentation.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.published.nbody import INPUT_FRAME, SAMPLE_EVERY, Systems
from geo_pe import quaternion
from train.averaging import WeightAverage

ONSET_STEP = INPUT_FRAME * SAMPLE_EVERY  # the field is switched on as the input frame is recorded
MODES = {"onset": ONSET_STEP, "throughout": 0}


def equivariant_floor(eps: float, mode: str) -> float:
    """The irreducible test MSE of a rotation-equivariant model in the broken case (0 in the control)."""
    return eps**2 / 12 if mode == "onset" else 0.0


class PlainTransformer(nn.Module):
    """A transformer encoder over particles on raw coordinates: ``x + f([x, v, q])`` (no symmetry)."""

    def __init__(self, hidden: int = 64, layers: int = 4, heads: int = 4):
        super().__init__()
        self.embed = nn.Linear(7, hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(hidden, 3)

    def forward(self, positions, velocities, charges) -> torch.Tensor:
        """``positions, velocities (B, n, 3)``, ``charges (B, n)`` -> positions ``(B, n, 3)``."""
        tokens = torch.cat((positions, velocities, charges[..., None]), -1)
        return positions + self.out(self.encoder(self.embed(tokens)))


def random_rotations(count: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, 3, 3)`` rotations drawn uniformly (Haar) from SO(3)."""
    return quaternion.to_matrix(quaternion.random(count, generator=generator))


def tensors(s: Systems) -> tuple[torch.Tensor, ...]:
    """Positions, velocities, charges and target positions as float32 tensors."""
    arrays = (s.positions, s.velocities, s.charges, s.target_positions)
    return tuple(torch.tensor(a, dtype=torch.float32) for a in arrays)


@torch.no_grad()
def evaluate(model: nn.Module, s: Systems) -> float:
    """Position MSE of ``model`` on ``s`` (batches of 500)."""
    model.eval()
    x, v, q, y = tensors(s)
    parts = zip(x.split(500), v.split(500), q.split(500), strict=True)
    prediction = torch.cat([model(*batch) for batch in parts])
    model.train()
    return float((prediction - y).pow(2).mean())


def train_peer(
    make_model: Callable[[], nn.Module],
    splits: dict[str, Systems],
    *,
    epochs: int,
    seed: int = 0,
    lr: float = 5e-4,
    batch: int = 100,
    eval_every: int = 5,
    augment: bool = False,
    target: float | None = None,
    max_minutes: float | None = None,
    log: bool = True,
    ema_decay: float = 0.0,
) -> dict:
    """Adam on the position MSE; the test MSE at the best validation evaluation, the model at that
    evaluation, the curve, and the wall time at which that test MSE first reached ``target``.
    ``augment`` turns every training system by a random rotation (positions, velocities and target
    alike). ``ema_decay`` evaluates and keeps a moving average of the weights (the trainer's)."""
    torch.manual_seed(seed)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    average = WeightAverage(model, ema_decay) if ema_decay else None
    x, v, q, y = tensors(splits["train"])
    generator = torch.Generator().manual_seed(seed)
    best = {"validation": math.inf, "test": math.inf, "epoch": 0}
    curve, reached, started = [], None, time.perf_counter()
    for epoch in range(1, epochs + 1):
        for index in torch.randperm(len(x), generator=generator).split(batch):
            xb, vb, yb = x[index], v[index], y[index]
            if augment:
                rotation = random_rotations(len(index), generator).transpose(1, 2)
                xb, vb, yb = xb @ rotation, vb @ rotation, yb @ rotation
            loss = (model(xb, vb, q[index]) - yb).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update()
        seconds = time.perf_counter() - started
        out_of_time = max_minutes is not None and seconds > 60 * max_minutes
        if epoch % eval_every and epoch != epochs and not out_of_time:
            continue
        with average.applied() if average is not None else contextlib.nullcontext():
            validation = evaluate(model, splits["validation"])
            if validation < best["validation"]:
                best = {"epoch": epoch, "validation": validation, "test": evaluate(model, splits["test"])}
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        curve.append({"epoch": epoch, "seconds": round(seconds, 1), "validation": validation,
                      "best_test": best["test"]})  # fmt: skip
        if reached is None and target is not None and best["test"] <= target:
            reached = seconds
        if log:
            print(f"  epoch {epoch}: validation {validation:.5f}, best test {best['test']:.5f} "
                  f"({seconds:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
        if out_of_time:
            break
    if best["epoch"]:
        model.load_state_dict(best_state)  # the model that the reported test MSE belongs to
    return {
        "test_mse": best["test"],
        "best_epoch": best["epoch"],
        "validation_mse": best["validation"],
        "epochs_run": curve[-1]["epoch"] if curve else 0,
        "seconds": time.perf_counter() - started,
        "seconds_to_target": reached,
        "parameters": sum(p.numel() for p in model.parameters()),
        "curve": curve,
        "model": model,
    }


def cell_name(mode: str, eps: float) -> str:
    return f"{mode}_eps{eps:g}"


def parse_cells(text: str) -> list[tuple[str, float]]:
    """``"onset:0,onset:0.1,throughout:1"`` -> ``[("onset", 0.0), ...]``; names the bad entry."""
    cells = []
    for item in text.split(","):
        mode, _, eps = item.strip().partition(":")
        if mode not in MODES or not eps:
            raise ValueError(f"--field-cells: {item!r} is not mode:eps with mode in {sorted(MODES)}")
        cells.append((mode, float(eps)))
    return cells
