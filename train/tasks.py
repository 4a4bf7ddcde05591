"""Tasks: datasets built locally with `datasets.Dataset.from_generator`, and the model settings they need.

A task is a class with an ``Options`` dataclass (its command-line and YAML settings), registered by name
with `register_task`. It builds ``train``/``validation``/``test`` splits (every setting that changes the
data goes through ``gen_kwargs``, so the datasets cache is never stale), says which model head and
settings it needs, and turns a batch into model inputs. Later experiments add tasks the same way::

    @register_task
    class MyTask(Task):
        name = "my_task"

        @dataclass
        class Options:
            size: int = 100

        ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from datasets import Array2D, Dataset, DatasetDict, Features, Sequence, Value

from models import GeoTransformerForSequenceClassification
from train.validation import check_range, check_types

__all__ = ["TASKS", "RotatedDigits", "Task", "register_task"]

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available as ``task: <cls.name>`` in configs."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__}: a task needs a non-empty `name`")
    TASKS[cls.name] = cls
    return cls


class Task:
    """Base class. Subclasses set ``name``, ``Options``, ``metric`` and ``model_class`` and implement
    `build` and `model_settings`; `inputs` splits a batch into model inputs and labels."""

    name: ClassVar[str] = ""
    metric: ClassVar[str] = "accuracy"  # "accuracy" (higher is better) or "mse" (lower is better)
    model_class: ClassVar[type] = GeoTransformerForSequenceClassification

    @dataclass
    class Options:
        pass

    def __init__(self, options):
        self.options = options

    def build(self, cache_dir: str | None = None) -> DatasetDict:
        """The ``train``, ``validation`` and ``test`` splits, formatted as torch tensors."""
        raise NotImplementedError

    def model_settings(self) -> dict:
        """Config fields the task fixes (``feature_size``, ``num_labels``, ...)."""
        raise NotImplementedError

    def inputs(self, batch: dict) -> tuple[dict, torch.Tensor]:
        """``(model inputs without labels, labels)`` from a collated batch."""
        labels = batch["labels"]
        return {k: v for k, v in batch.items() if k != "labels"}, labels

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    def predictions(self, out) -> torch.Tensor:
        """The model's outputs that the metric reads (logits or regression predictions)."""
        return out.logits if self.metric == "accuracy" else out.predictions

    def score(self, out, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(sum of the metric over the batch, number of scored items)``; labels -100 are skipped."""
        if self.metric == "accuracy":
            valid = labels != -100
            correct = (out.logits.argmax(-1) == labels) & valid
            return correct.sum(), int(valid.sum())
        errors = (out.predictions - labels.to(out.predictions.dtype)).pow(2)
        return errors.sum(), errors.numel()


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "task rotated_digits: needs scikit-learn for its bundled digits; pip install 'geo-pe[train]'"
        ) from None
    return load_digits()


def _digit_examples(indices, rotation_range_deg, seed, max_tokens, min_intensity):
    """One example per digit image: its lit pixels as tokens (intensity, radius; polar angle rotated by a
    random angle in [-range, range])."""
    digits = _load_digits()
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    x, y = cols - 3.5, 3.5 - rows  # pixel centres, origin at the image centre, y up
    radius, angle = np.hypot(x, y), np.arctan2(y, x)
    half_range = math.radians(rotation_range_deg)
    for index in indices:
        image = digits.images[index]
        lit = image >= min_intensity
        n = int(lit.sum())
        rotation = rng.uniform(-half_range, half_range)
        features = np.zeros((max_tokens, 2), dtype=np.float32)
        angles = np.zeros(max_tokens, dtype=np.float32)
        mask = np.zeros(max_tokens, dtype=np.int64)
        features[:n, 0] = image[lit] / 16.0
        features[:n, 1] = radius[lit] / 5.0
        angles[:n] = np.angle(np.exp(1j * (angle[lit] + rotation)))  # wrapped to (-pi, pi]
        mask[:n] = 1
        yield {
            "features": features,
            "positions": angles,
            "attention_mask": mask,
            "labels": int(digits.target[index]),
            "rotation": float(rotation),
        }


@register_task
class RotatedDigits(Task):
    """scikit-learn's 8x8 digits (1,797 images) as point clouds: each lit pixel is a token with invariant
    features (intensity, radius) and its polar angle as the SO(2) element. Every image is rotated by a
    random angle within ``rotation_range`` degrees; below 180 the upright orientation still tells 6 from
    9, which an exactly invariant model cannot see and a phase II model can learn.
    """

    name = "rotated_digits"
    metric = "accuracy"

    @dataclass
    class Options:
        rotation_range: float = 60.0  # degrees: rotations uniform in [-range, range]
        validation_fraction: float = 0.1
        test_fraction: float = 0.2
        min_intensity: int = 1  # pixels at or above this level (0..16) are tokens
        data_seed: int = 0

        def __post_init__(self):
            check_types(self)
            check_range("rotation_range", self.rotation_range, low=0.0, high=180.0)
            for name in ("validation_fraction", "test_fraction"):
                check_range(name, getattr(self, name), low=0.0, high=0.5, low_open=True, high_open=True)
            check_range("min_intensity", self.min_intensity, low=1, high=16)
            check_range("data_seed", self.data_seed, low=0)

    def model_settings(self) -> dict:
        return {"feature_size": 2, "num_labels": 10}

    def build(self, cache_dir: str | None = None) -> DatasetDict:
        o = self.options
        images = _load_digits().images
        max_tokens = int((images >= o.min_intensity).sum(axis=(1, 2)).max())
        order = np.random.default_rng(o.data_seed).permutation(len(images))
        n_val, n_test = round(o.validation_fraction * len(images)), round(o.test_fraction * len(images))
        parts = {
            "test": order[:n_test],
            "validation": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :],
        }
        features = Features(
            {
                "features": Array2D((max_tokens, 2), "float32"),
                "positions": Sequence(Value("float32"), length=max_tokens),
                "attention_mask": Sequence(Value("int64"), length=max_tokens),
                "labels": Value("int64"),
                "rotation": Value("float64"),
            }
        )
        splits = {}
        for offset, (split, indices) in enumerate(parts.items()):
            gen_kwargs = {
                "indices": tuple(int(i) for i in indices),  # a list would be split into shards
                "rotation_range_deg": float(o.rotation_range),
                "seed": o.data_seed * 1000 + offset,
                "max_tokens": max_tokens,
                "min_intensity": o.min_intensity,
            }
            dataset = Dataset.from_generator(
                _digit_examples, features=features, gen_kwargs=gen_kwargs, cache_dir=cache_dir
            )
            splits[split] = dataset.with_format("torch", columns=list(features))
        return DatasetDict(splits)

    def inputs(self, batch: dict) -> tuple[dict, torch.Tensor]:
        inputs = {k: batch[k] for k in ("features", "positions", "attention_mask")}
        return inputs, batch["labels"]
