"""Batches as a pure function of (seed, step), and the splits they are cut from.

Step s uses positions ``[s mod E] * B ...`` of the permutation drawn for epoch ``s // E`` from the seed,
and every process takes its contiguous share of that global batch: resuming (or switching phase) at any
step skips exactly the batches already seen, and one process with global batch B computes what k
processes with B / k each compute.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

import torch

from train.validation import ConfigError

__all__ = ["STREAMS", "Split", "StepBatches", "shard", "step_generator", "to_device"]

T = TypeVar("T")


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


def to_device(batch: T, device: torch.device | str) -> T:
    """Move a batch (tensors, nested dicts of tensors) to ``device``. To a GPU through pinned memory and
    asynchronously: a copy from pageable memory makes the host wait for the device at every step."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if not isinstance(batch, torch.Tensor):
        return batch
    if torch.device(device).type == "cuda" and batch.device.type == "cpu":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


class Split:
    """A dataset split held as tensors: ``split[index]`` is the batch of those rows."""

    def __init__(self, columns: dict):
        """``columns``: tensors with one row per example, or dicts of them (``positions``)."""
        self.columns = columns
        first = next(iter(columns.values()))
        self.size = len(first if isinstance(first, torch.Tensor) else next(iter(first.values())))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index) -> dict:
        return _rows(self.columns, index)


def _rows(columns: dict, index) -> dict:
    return {k: _rows(v, index) if isinstance(v, dict) else v[index] for k, v in columns.items()}


STREAMS = ("task", "transform", "equivariance", "orientation")  # what a step draws, each its own stream


def step_generator(seed: int, step: int, stream: str = "task", rank: int = 0) -> torch.Generator:
    """A generator for the random draws of one step: a pure function of (seed, step, stream, rank).

    Every (step, stream, rank) gets its own seed, a 64-bit hash of the four: the draws of one process never
    repeat another's, or another stream's, or another step's (an affine mix such as
    ``(seed * P + step) * k + stream`` collides once a rank's streams pass k)."""
    if stream not in STREAMS:
        raise ValueError(f"stream: expected one of {STREAMS}, got {stream!r}")
    digest = hashlib.blake2b(f"{seed}/{step}/{stream}/{rank}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "big") >> 1)
