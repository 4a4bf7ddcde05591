"""The O(3) Inertia task of Finzi, Welling and Wilson (2021, EMLP) and its broken variant ModifiedInertia of
Finzi, Benton and Wilson (2021, Residual Pathway Priors), from the papers' protocol.

A system is k = 5 point masses: masses softplus(z), z ~ N(0, 1), positions N(0, I_3). The target is the
inertia tensor I = sum_i m_i (|r_i|^2 I_3 - r_i r_i^T), flattened to 9 numbers, without normalisation of
inputs or targets. ModifiedInertia adds ``breaking`` (0.3 in the paper) times v e_z^T with v = I e_z:
the third column of I is scaled by 1 + breaking, which no O(3)-equivariant map can produce. A data set of
3,000 systems is split 1,000 / 1,000 / 1,000 (train / validation / test); the score is the test MSE over
the 9 entries. The reference training: Adam at 3e-3 with a cosine schedule, batch 500.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.published.nbody import write_tables

MASSES = 5
SPLIT = {"train": 1000, "validation": 1000, "test": 1000}


@dataclass
class InertiaSplit:
    """``masses`` (N, 5), ``positions`` (N, 5, 3), ``targets`` (N, 3, 3)."""

    masses: np.ndarray
    positions: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.masses)

    def flat_inputs(self) -> np.ndarray:
        """(N, 20) as the reference code lays them out: the 5 masses, then the 5 positions."""
        return np.concatenate((self.masses, self.positions.reshape(len(self), -1)), axis=1)


def inertia_tensors(masses: np.ndarray, positions: np.ndarray, breaking: float = 0.0) -> np.ndarray:
    """(N, 5), (N, 5, 3) -> (N, 3, 3): sum_i m_i (|r_i|^2 I - r_i r_i^T), plus ``breaking`` times
    (I e_z) e_z^T (ModifiedInertia)."""
    r2 = (positions**2).sum(-1)[..., None, None]
    outer = positions[..., :, None] * positions[..., None, :]
    inertia = (masses[..., None, None] * (r2 * np.eye(3) - outer)).sum(1)
    if breaking:
        inertia = inertia.copy()
        inertia[..., :, 2] *= 1.0 + breaking
    return inertia


def make_splits(seed: int, breaking: float = 0.0, sizes: dict[str, int] = SPLIT) -> dict[str, InertiaSplit]:
    """Fresh systems for each split, from one seed (the three splits are disjoint draws)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in sizes.items():
        z = rng.standard_normal((n, MASSES * 4))
        masses = np.logaddexp(0.0, z[:, :MASSES])  # softplus
        positions = z[:, MASSES:].reshape(n, MASSES, 3)
        splits[name] = InertiaSplit(masses, positions, inertia_tensors(masses, positions, breaking))
    return splits


class ReferenceMLP(nn.Module):
    """The papers' MLP baseline: 3 hidden layers of 384 with swish (SiLU), on the 20 flat inputs."""

    def __init__(self, width: int = 384, layers: int = 3):
        super().__init__()
        sizes = [MASSES * 4] + [width] * layers
        blocks = []
        for a, b in itertools.pairwise(sizes):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(width, 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 20) -> (B, 3, 3)."""
        return self.net(x).unflatten(-1, (3, 3))


def train_reference_mlp(
    splits: dict[str, InertiaSplit], *, epochs: int = 300, seed: int = 0, lr: float = 3e-3, batch: int = 500
) -> dict:
    """The MLP as the reference trains it (Adam, cosine schedule, ``epochs`` over 1,000 systems); the test
    MSE at the best validation epoch."""
    torch.manual_seed(seed)
    model = ReferenceMLP()
    tensors = {
        k: (torch.tensor(s.flat_inputs(), dtype=torch.float32), torch.tensor(s.targets, dtype=torch.float32))
        for k, s in splits.items()
    }
    x, y = tensors["train"]
    steps = epochs * -(-len(x) // batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)

    def mse(split: str) -> float:
        with torch.no_grad():
            return float(F.mse_loss(model(tensors[split][0]), tensors[split][1]))

    best = {"validation": float("inf")}
    for epoch in range(1, epochs + 1):
        for index in torch.randperm(len(x), generator=generator).split(batch):
            loss = F.mse_loss(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        validation = mse("validation")
        if validation < best["validation"]:
            best = {"epoch": epoch, "validation": validation, "test": mse("test")}
    return {"test_mse": best["test"], "validation_mse": best["validation"], "best_epoch": best["epoch"],
            "steps": steps}  # fmt: skip


def equivariant_floor(split: InertiaSplit, breaking: float) -> float:
    """MSE of the best O(3)-equivariant predictor on ``split``, one that knows I exactly. The inputs'
    law is rotation invariant, so that predictor is the rotation average of the target map,
    E_R[R^T T(R x) R] = I + breaking I E_R[R^T e_z e_z^T R] = (1 + breaking / 3) I, and its error is the
    part no equivariant model can fit: breaking^2 times the mean of (I / 3 - I e_z e_z^T)^2."""
    inertia = inertia_tensors(split.masses, split.positions)
    return float((((1.0 + breaking / 3.0) * inertia - split.targets) ** 2).mean())


def write_parquet(splits: dict[str, InertiaSplit], folder) -> dict:
    """The splits as parquet for the ``dataset`` task: one row per system with ``mass`` and ``radius``
    (per point), ``position`` (the point as a direction from the origin, 3-vectors) and ``target``
    (the 3x3 matrix)."""
    columns = {
        split: {
            "system": np.arange(len(s)),
            "mass": s.masses[..., None].tolist(),
            "radius": np.linalg.norm(s.positions, axis=-1)[..., None].tolist(),
            "position": s.positions.tolist(),
            "target": s.targets.tolist(),
        }
        for split, s in splits.items()
    }
    return write_tables(columns, folder)
