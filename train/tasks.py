"""Tasks: datasets built locally with `datasets.Dataset.from_generator`, and what the model needs of them.

A task is a class with an ``Options`` dataclass (its command-line and YAML settings), registered by name
with `register_task`. It builds ``train``/``validation``/``test`` splits (every setting that changes the
data goes through ``gen_kwargs``, so the datasets cache is never stale), fixes the model settings it
needs, turns a batch into model inputs, and knows its symmetry: `Task.transform` applies a random global
group element to a batch (to the group elements in ``positions`` and, for the plain baselines that get
raw coordinates as features, to those features), which the training loop uses for the equivariance
error, the equivariance loss and augmentation.

============== ===================================================== ==================================
task           tokens                                                symmetry (and how it is broken)
============== ===================================================== ==================================
rotated_digits lit pixels of 8x8 digits: intensity, radius; angle     SO(2) rotations (6 vs 9, tilt labels)
motifs         symbols at integer positions offset + i               translations (absolute labels)
rotor_chain    rigid rotors: chain index, orientation quaternion     SO(3) (an external field eps)
============== ===================================================== ==================================

Every task has a ``plain_features`` option: the group elements become raw coordinates among the features
(angles as (x, y), positions as numbers, orientations as rotation-matrix entries) and no positions are
given, for the baseline a user would build without geo-pe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from datasets import Array2D, Dataset, DatasetDict, Features, Sequence, Value
from transformers.utils import ModelOutput

from geo_pe import quaternion
from models import GeoTransformerForSequenceClassification, GeoTransformerForSequenceRegression
from train.validation import ConfigError, check_range, check_types

__all__ = ["TASKS", "Motifs", "RotatedDigits", "RotorChain", "Task", "register_task"]

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available as ``task: <cls.name>`` in configs."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__}: a task needs a non-empty `name`")
    TASKS[cls.name] = cls
    return cls


class Task:
    """Base class. Subclasses set ``name``, ``Options``, ``metric`` and ``model_class`` and implement
    `build`, `model_settings` and `transform`; `inputs` splits a batch into model inputs and labels."""

    name: ClassVar[str] = ""
    metric: ClassVar[str] = "accuracy"  # "accuracy" (higher is better) or "mse" (lower is better)
    model_class: ClassVar[type] = GeoTransformerForSequenceClassification

    @dataclass
    class Options:
        plain_features: bool = False

    def __init__(self, options: Options):
        self.options = options

    @property
    def uses_positions(self) -> bool:
        """Whether the model gets group elements (``positions``) and so needs a group PE."""
        return not self.options.plain_features

    def build(self, cache_dir: str | None = None) -> DatasetDict:
        """The ``train``, ``validation`` and ``test`` splits, formatted as torch tensors."""
        raise NotImplementedError

    def model_settings(self) -> dict:
        """Config fields the task fixes (``feature_size``, ``vocab_size``, ``num_labels``, ...)."""
        raise NotImplementedError

    def bind(self, model) -> None:
        """Called with the task's model once it is built (before `build`): a task whose data depend on
        the model's encodings (element shapes, symmetry) reads them here."""

    def split(self, dataset: Dataset):
        """A built split as `train.batches.Split`-like rows: ``split[indices]`` is a collated batch. By
        default the whole split as tensors in memory (indexing an Arrow table per batch costs more than a
        small model's step); `train.files` reads batches from the memory-mapped table instead."""
        from train.batches import Split

        return Split(dataset[:])

    def inputs(self, batch: dict) -> tuple[dict, torch.Tensor | None]:
        """``(model inputs without labels, labels)`` from a collated batch (labels None when the batch
        has none, for prediction)."""
        keys = [k for k in ("input_ids", "features", "positions", "attention_mask") if k in batch]
        if not self.uses_positions:
            keys = [k for k in keys if k != "positions"]
        return {k: batch[k] for k in keys}, batch.get("labels")

    def transform(self, inputs: dict, generator: torch.Generator) -> dict:
        """The inputs after a random global group element per example (positions and raw coordinates)."""
        raise NotImplementedError

    @property
    def augments_training_batches(self) -> bool:
        """Whether `training_batch` changes training batches (the task's own data symmetries)."""
        return False

    def training_batch(self, batch: dict, generator: torch.Generator) -> dict:
        """A collated training ``batch`` after the task's own label-preserving transformations, drawn
        from ``generator`` (the dataset task's ``sign_symmetric_features``); unchanged by default."""
        return batch

    @property
    def resamples_orientation(self) -> bool:
        """Whether the task implements `resample_orientation` (``in_range_augmentation``)."""
        return type(self).resample_orientation is not Task.resample_orientation

    def resample_orientation(self, batch: dict, generator: torch.Generator) -> dict:
        """The collated training ``batch`` with every example turned to an orientation drawn afresh within
        the task's training range, its label following the task's rule (``in_range_augmentation``)."""
        raise NotImplementedError

    def transform_output(
        self, predictions: torch.Tensor, inputs: dict, generator: torch.Generator
    ) -> torch.Tensor:
        """How the predictions move under the element that `transform` draws from a generator in the
        same state: unchanged for invariant outputs (labels, energies)."""
        return predictions

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    def predictions(self, out: ModelOutput, inputs: dict | None = None) -> torch.Tensor:
        """The model's outputs that the metric reads (logits or regression predictions); ``inputs`` (the
        batch) lets per-token outputs zero their padded tokens."""
        return out.logits if self.metric == "accuracy" else out.predictions

    def score(
        self, out: ModelOutput, labels: torch.Tensor, inputs: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | int]:
        """``(sum of the metric over the batch, number of scored items)``, on the outputs' device (no host
        sync); labels -100 are skipped. ``inputs`` (with the attention mask) for per-token metrics."""
        if self.metric == "accuracy":
            valid = labels != -100
            correct = (out.logits.argmax(-1) == labels) & valid
            return correct.sum(), valid.sum()
        errors = (out.predictions - labels.to(out.predictions.dtype)).pow(2)
        return errors.sum(), errors.numel()


def _build_splits(generator, features: Features, common: dict, splits: dict, cache_dir) -> DatasetDict:
    """One `Dataset.from_generator` per split: ``common`` and the split's own kwargs as ``gen_kwargs``."""
    out = {}
    for split, own in splits.items():
        dataset = Dataset.from_generator(
            generator, features=features, gen_kwargs={**common, **own}, cache_dir=cache_dir
        )
        out[split] = dataset.with_format("torch", columns=list(features))
    return DatasetDict(out)


def _rotate_plane(features: torch.Tensor, columns: tuple[int, int], angle: torch.Tensor) -> torch.Tensor:
    """Rotate the (x, y) feature columns by ``angle`` ``(B,)`` (padding rows are zero and stay zero)."""
    x, y = features[..., columns[0]], features[..., columns[1]]
    c, s = angle.cos()[:, None].to(x.dtype), angle.sin()[:, None].to(x.dtype)
    out = features.clone()
    out[..., columns[0]], out[..., columns[1]] = c * x - s * y, s * x + c * y
    return out


# --- SO(2): rotated digits --------------------------------------------------------------------------------
def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError(
            "task: rotated_digits needs scikit-learn for its bundled digits; pip install 'geo-pe[train]' "
            "(or pip install scikit-learn)"
        ) from None
    return load_digits()


def _digit_examples(
    indices, range_deg, seed, max_tokens, min_intensity, tilt_digits, tilt_deg, plain, planar=False
):
    """One example per digit image: its lit pixels as tokens, the image rotated by a random angle in
    [-range, range]; digits below ``tilt_digits`` get label digit + 10 when tilted beyond ``tilt_deg``.
    ``planar``: positions are the turned pixel centres (x, y), features the intensity only."""
    digits = _load_digits()
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    x, y = cols - 3.5, 3.5 - rows  # pixel centres, origin at the image centre, y up
    radius, angle = np.hypot(x, y), np.arctan2(y, x)
    half_range = math.radians(range_deg)
    width = 4 if plain else 1 if planar else 2
    for index in indices:
        image = digits.images[index]
        lit = image >= min_intensity
        n = int(lit.sum())
        rotation = rng.uniform(-half_range, half_range)
        features = np.zeros((max_tokens, width), dtype=np.float32)
        positions = np.zeros((max_tokens, 2) if planar else max_tokens, dtype=np.float32)  # padding: 0
        mask = np.zeros(max_tokens, dtype=np.int64)
        turned = angle[lit] + rotation
        features[:n, 0] = image[lit] / 16.0
        if planar:
            positions[:n] = np.stack((radius[lit] * np.cos(turned), radius[lit] * np.sin(turned)), axis=-1)
        else:
            features[:n, 1] = radius[lit] / 5.0
            positions[:n] = np.angle(np.exp(1j * turned))  # wrapped to (-pi, pi]
        if plain:
            features[:n, 2] = radius[lit] * np.cos(turned) / 5.0
            features[:n, 3] = radius[lit] * np.sin(turned) / 5.0
        mask[:n] = 1
        label = int(digits.target[index])
        if label < tilt_digits and abs(rotation) > math.radians(tilt_deg):
            label += 10
        yield {
            "features": features,
            "positions": positions,
            "attention_mask": mask,
            "labels": label,
            "rotation": float(rotation),
        }


@register_task
class RotatedDigits(Task):
    """scikit-learn's 8x8 digits (1,797 images) as point clouds: each lit pixel is a token with invariant
    features (intensity, radius) and its polar angle as the SO(2) element. Each image is rotated by a
    seeded random angle within ``rotation_range`` degrees (``test_rotation_range`` for validation and
    test: 0 and 180 test upright training on rotated digits). With ``planar_points`` the positions are
    the pixel centres (x, y) about the image centre, in pixels, and the features the intensity only: a
    model with ``point_attributes`` reads the angle and radius itself, and the pairwise distances
    (``distance_bias``) that angles alone give only indirectly.

    Symmetry breaking, weak: below 180 degrees the upright orientation tells 6 from 9 (handwritten 6
    and 9 are not exact rotations of each other, so this signal is weak). Strong and adjustable: the
    first ``tilt_digits`` digits get their own label when tilted by more than ``tilt_threshold`` degrees
    (default half the range), so a fraction ``tilt_digits / 10`` of the labels depends on orientation.
    """

    name = "rotated_digits"
    metric = "accuracy"

    @dataclass
    class Options:
        rotation_range: float = 60.0  # degrees: rotations uniform in [-range, range]
        test_rotation_range: float | None = None  # validation and test; None: as rotation_range
        train_size: int | None = None  # images in the training split (None: all that are left)
        validation_fraction: float = 0.1
        test_fraction: float = 0.2
        tilt_digits: int = 0  # digits 0 .. tilt_digits-1 get label digit + 10 when tilted
        tilt_threshold: float | None = None  # degrees; None: half of rotation_range
        min_intensity: int = 1  # pixels at or above this level (0..16) are tokens; 0: all 64
        plain_features: bool = False  # (x, y) among the features and no positions
        planar_points: bool = False  # positions are pixel centres (x, y), not angles (point_attributes)
        data_seed: int = 0

        def __post_init__(self):
            check_types(self)
            check_range("rotation_range", self.rotation_range, low=0.0, high=180.0)
            if self.test_rotation_range is not None:
                check_range("test_rotation_range", self.test_rotation_range, low=0.0, high=180.0)
            for name in ("validation_fraction", "test_fraction"):
                check_range(name, getattr(self, name), low=0.0, high=0.5, low_open=True, high_open=True)
            check_range("tilt_digits", self.tilt_digits, low=0, high=10)
            if self.tilt_threshold is not None:
                check_range("tilt_threshold", self.tilt_threshold, low=0.0, high=180.0)
            if self.train_size is not None:
                check_range("train_size", self.train_size, low=1)
            check_range("min_intensity", self.min_intensity, low=0, high=16)
            check_range("data_seed", self.data_seed, low=0)
            if self.plain_features and self.planar_points:
                raise ConfigError(
                    "planar_points: the plain features carry (x, y) without positions; set one of "
                    "plain_features and planar_points"
                )

    def model_settings(self) -> dict:
        o = self.options
        return {
            "feature_size": 4 if o.plain_features else 1 if o.planar_points else 2,
            "num_labels": 10 + self.options.tilt_digits,
        }

    def build(self, cache_dir: str | None = None) -> DatasetDict:
        o = self.options
        images = _load_digits().images
        max_tokens = int((images >= o.min_intensity).sum(axis=(1, 2)).max())
        order = np.random.default_rng(o.data_seed).permutation(len(images))
        n_val, n_test = round(o.validation_fraction * len(images)), round(o.test_fraction * len(images))
        train = order[n_test + n_val :]
        if o.train_size is not None:
            if o.train_size > len(train):
                raise ValueError(
                    f"train_size: at most {len(train)} images are left for training, got {o.train_size}"
                )
            train = train[: o.train_size]
        test_range = o.rotation_range if o.test_rotation_range is None else o.test_rotation_range
        tilt = o.tilt_threshold if o.tilt_threshold is not None else o.rotation_range / 2
        width = 4 if o.plain_features else 1 if o.planar_points else 2
        positions = (
            Array2D((max_tokens, 2), "float32")
            if o.planar_points
            else Sequence(Value("float32"), length=max_tokens)
        )
        features = Features(
            {
                "features": Array2D((max_tokens, width), "float32"),
                "positions": positions,
                "attention_mask": Sequence(Value("int64"), length=max_tokens),
                "labels": Value("int64"),
                "rotation": Value("float64"),
            }
        )
        common = {
            "max_tokens": max_tokens,
            "min_intensity": o.min_intensity,
            "tilt_digits": o.tilt_digits,
            "tilt_deg": float(tilt),
            "plain": o.plain_features,
            "planar": o.planar_points,
        }
        splits = {  # a tuple: datasets would split a list of indices into shards
            "train": {"indices": tuple(map(int, train)), "range_deg": float(o.rotation_range)},
            "validation": {
                "indices": tuple(map(int, order[n_test : n_test + n_val])),
                "range_deg": float(test_range),
            },
            "test": {"indices": tuple(map(int, order[:n_test])), "range_deg": float(test_range)},
        }
        for offset, own in enumerate(splits.values()):
            own["seed"] = o.data_seed * 1000 + offset
        return _build_splits(_digit_examples, features, common, splits, cache_dir)

    def resample_orientation(self, batch: dict, generator: torch.Generator) -> dict:
        """Each image turned from its drawn rotation to a new one, uniform in [-rotation_range,
        rotation_range] as the training split draws them; tilt labels follow the new angle."""
        o = self.options
        size = batch["labels"].shape[0]
        new = (2 * torch.rand(size, generator=generator, dtype=torch.float64) - 1) * math.radians(
            o.rotation_range
        )
        new = new.to(batch["positions"].device)
        turn = new - batch["rotation"].to(torch.float64)
        out = dict(batch)
        if o.planar_points:
            out["positions"] = _rotate_plane(batch["positions"], (0, 1), turn)
        else:
            angles = batch["positions"].to(torch.float64) + turn[:, None]
            out["positions"] = (torch.remainder(angles + math.pi, 2 * math.pi) - math.pi).to(
                batch["positions"].dtype
            )
        if o.plain_features:
            out["features"] = _rotate_plane(batch["features"], (2, 3), turn)
        digit = batch["labels"] % 10  # tilted digits carry digit + 10
        tilt = o.tilt_threshold if o.tilt_threshold is not None else o.rotation_range / 2
        tilted = (digit < o.tilt_digits) & (new.abs() > math.radians(tilt))
        out["labels"] = torch.where(tilted, digit + 10, digit)
        out["rotation"] = new.to(batch["rotation"].dtype)
        return out

    def transform(self, inputs: dict, generator: torch.Generator) -> dict:
        batch = inputs["features"].shape[0]
        angle = (2 * torch.rand(batch, generator=generator, dtype=torch.float64) - 1) * math.pi
        angle = angle.to(inputs["features"].device)
        out = dict(inputs)
        if self.options.plain_features:
            out["features"] = _rotate_plane(inputs["features"], (2, 3), angle)
        elif self.options.planar_points:
            out["positions"] = _rotate_plane(inputs["positions"], (0, 1), angle)
        else:
            out["positions"] = inputs["positions"] + angle[:, None].to(inputs["positions"].dtype)
        return out


# --- translations: motifs at relative positions -----------------------------------------------------------
def _motif_examples(count, seed, seq_len, vocab, max_offset, gap, absolute_fraction, plain):
    """Sequences of symbols at positions offset + i; label 1 when symbol 1 is followed by symbol 2 at
    distance ``gap`` (half of the examples). Sequences starting with the marker symbol (a fraction
    ``absolute_fraction``) have that label flipped when the offset is in the upper half."""
    rng = np.random.default_rng(seed)
    marker = vocab - 1
    for _ in range(count):
        want = int(rng.integers(2))
        while True:
            tokens = rng.integers(vocab - 1, size=seq_len)  # no marker yet
            has = bool(np.any((tokens[:-gap] == 1) & (tokens[gap:] == 2)))
            if has == bool(want):
                break
            if want:  # plant the motif
                i = int(rng.integers(seq_len - gap))
                tokens[i], tokens[i + gap] = 1, 2
                break
        absolute = rng.random() < absolute_fraction
        if absolute:
            tokens = tokens.copy()
            tokens[0] = marker
            want = int(np.any((tokens[:-gap] == 1) & (tokens[gap:] == 2)))
        offset = int(rng.integers(max_offset + 1))
        label = want ^ int(absolute and offset > max_offset // 2)
        positions = (offset + np.arange(seq_len)).astype(np.float32)
        feature = positions[:, None] / (max_offset + seq_len) if plain else np.ones((seq_len, 1), np.float32)
        yield {"input_ids": tokens.astype(np.int64), "features": feature.astype(np.float32),
               "positions": positions, "labels": label}  # fmt: skip


@register_task
class Motifs(Task):
    """Translations (sinusoidal PEs): symbols at integer positions ``offset + i`` with a random offset;
    the label says whether symbol 1 is followed by symbol 2 at distance ``gap``, a function of relative
    positions only. A fraction ``absolute_fraction`` of the sequences starts with a marker symbol and has
    its label flipped when the offset is in the upper half: 0 is exact, 1 broken, in between approximate.
    """

    name = "motifs"
    metric = "accuracy"

    @dataclass
    class Options:
        seq_len: int = 16
        vocab: int = 6
        max_offset: int = 48
        gap: int = 3
        absolute_fraction: float = 0.0
        train_size: int = 1000
        validation_size: int = 500
        test_size: int = 2000
        plain_features: bool = False  # the position as a number among the features, no positions
        data_seed: int = 0

        def __post_init__(self):
            check_types(self)
            check_range("seq_len", self.seq_len, low=2)
            check_range("vocab", self.vocab, low=4)
            check_range("max_offset", self.max_offset, low=0)
            check_range("gap", self.gap, low=1, high=self.seq_len - 1)
            check_range("absolute_fraction", self.absolute_fraction, low=0.0, high=1.0)
            for name in ("train_size", "validation_size", "test_size"):
                check_range(name, getattr(self, name), low=1)
            check_range("data_seed", self.data_seed, low=0)

    def model_settings(self) -> dict:
        return {"vocab_size": self.options.vocab, "feature_size": 1, "num_labels": 2}

    def build(self, cache_dir: str | None = None) -> DatasetDict:
        o = self.options
        features = Features(
            {
                "input_ids": Sequence(Value("int64"), length=o.seq_len),
                "features": Array2D((o.seq_len, 1), "float32"),
                "positions": Sequence(Value("float32"), length=o.seq_len),
                "labels": Value("int64"),
            }
        )
        common = {
            "seq_len": o.seq_len,
            "vocab": o.vocab,
            "max_offset": o.max_offset,
            "gap": o.gap,
            "absolute_fraction": float(o.absolute_fraction),
            "plain": o.plain_features,
        }
        sizes = {"train": o.train_size, "validation": o.validation_size, "test": o.test_size}
        splits = {s: {"count": n, "seed": o.data_seed * 1000 + i} for i, (s, n) in enumerate(sizes.items())}
        return _build_splits(_motif_examples, features, common, splits, cache_dir)

    def transform(self, inputs: dict, generator: torch.Generator) -> dict:
        o = self.options
        batch = inputs["input_ids"].shape[0]
        shift = torch.randint(-o.max_offset, o.max_offset + 1, (batch, 1), generator=generator)
        out = dict(inputs)
        if o.plain_features:
            scale = o.max_offset + o.seq_len
            out["features"] = inputs["features"] + (shift.to(inputs["features"]) / scale)[..., None]
        else:
            out["positions"] = inputs["positions"] + shift.to(inputs["positions"])
        return out


# --- SO(3) x translation: a chain of rigid rotors ---------------------------------------------------------
def _rotor_energy(R: np.ndarray, eps: float, coupling: str, field: str) -> np.ndarray:
    """E = - sum_{i<j} J(|i-j|) tr(R_i^T R_j) - eps sum_i f(e_z . R_i e_z), for R ``(N, n, 3, 3)``."""
    n = R.shape[1]
    gram = np.einsum("nixy,njxy->nij", R, R)  # tr(R_i^T R_j)
    d = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    J = np.exp(-(d - 1.0)) if coupling == "exp" else (d == 1).astype(float)
    J = np.triu(J, k=1)
    zz = R[:, :, 2, 2]
    f = zz if field == "linear" else zz**2
    return -(gram * J).sum((1, 2)) - eps * f.sum(1)


def _rotor_examples(count, seed, n_rotors, eps, coupling, field, plain, mean, std):
    rng = np.random.default_rng(seed)
    q = torch.from_numpy(rng.standard_normal((count, n_rotors, 4)))
    q = q / q.norm(dim=-1, keepdim=True)
    R = quaternion.to_matrix(q).numpy()
    energy = (_rotor_energy(R, eps, coupling, field) - mean) / std
    index = np.arange(n_rotors, dtype=np.float32)
    for k in range(count):
        if plain:
            feats = np.concatenate((R[k].reshape(n_rotors, 9), index[:, None] / n_rotors), axis=1)
        else:
            feats = np.ones((n_rotors, 1))
        yield {"features": feats.astype(np.float32), "positions": index,
               "orientations": q[k].numpy().astype(np.float32), "labels": float(energy[k])}  # fmt: skip


@register_task
class RotorChain(Task):
    """SO(3) x translation: a chain of ``n_rotors`` rigid rotors with random orientations R_i (unit
    quaternions) at chain index i; the target is the standardised energy

        E = - sum_{i<j} J(|i-j|) tr(R_i^T R_j) - eps sum_i f(e_z . R_i e_z),

    J(d) = exp(-(d - 1)) (``coupling: exp``) or nearest neighbours only, f linear or quadratic. The pair
    term is invariant under a global rotation R_i -> h R_i; the external field (``eps``) breaks it.
    Positions: ``{"position": chain index, "orientation": quaternion}``.
    """

    name = "rotor_chain"
    metric = "mse"
    model_class = GeoTransformerForSequenceRegression

    @dataclass
    class Options:
        n_rotors: int = 8
        eps: float = 0.0
        coupling: Literal["exp", "nearest"] = "exp"
        field: Literal["linear", "quadratic"] = "linear"
        train_size: int = 1000
        validation_size: int = 500
        test_size: int = 2000
        plain_features: bool = False  # rotation-matrix entries and the index among the features
        data_seed: int = 0

        def __post_init__(self):
            check_types(self)
            check_range("n_rotors", self.n_rotors, low=2)
            check_range("eps", self.eps, low=0.0)
            for name in ("train_size", "validation_size", "test_size"):
                check_range(name, getattr(self, name), low=1)
            check_range("data_seed", self.data_seed, low=0)

    def model_settings(self) -> dict:
        return {"feature_size": 10 if self.options.plain_features else 1, "num_labels": 1}

    def standardisation(self) -> tuple[float, float]:
        """Mean and standard deviation of the energy over 20,000 reference chains (fixed seed)."""
        o = self.options
        q = torch.from_numpy(np.random.default_rng(12345).standard_normal((20000, o.n_rotors, 4)))
        R = quaternion.to_matrix(q / q.norm(dim=-1, keepdim=True)).numpy()
        energy = _rotor_energy(R, o.eps, o.coupling, o.field)
        return float(energy.mean()), float(energy.std())

    def build(self, cache_dir: str | None = None) -> DatasetDict:
        o = self.options
        mean, std = self.standardisation()
        width = 10 if o.plain_features else 1
        features = Features(
            {
                "features": Array2D((o.n_rotors, width), "float32"),
                "positions": Sequence(Value("float32"), length=o.n_rotors),
                "orientations": Array2D((o.n_rotors, 4), "float32"),
                "labels": Value("float32"),
            }
        )
        common = {"n_rotors": o.n_rotors, "eps": float(o.eps), "coupling": o.coupling, "field": o.field,
                  "plain": o.plain_features, "mean": mean, "std": std}  # fmt: skip
        sizes = {"train": o.train_size, "validation": o.validation_size, "test": o.test_size}
        splits = {s: {"count": n, "seed": o.data_seed * 1000 + i} for i, (s, n) in enumerate(sizes.items())}
        return _build_splits(_rotor_examples, features, common, splits, cache_dir)

    def inputs(self, batch: dict) -> tuple[dict, torch.Tensor]:
        inputs = {"features": batch["features"]}
        if self.uses_positions:
            inputs["positions"] = {"position": batch["positions"], "orientation": batch["orientations"]}
        return inputs, batch["labels"]

    def transform(self, inputs: dict, generator: torch.Generator) -> dict:
        batch = inputs["features"].shape[0]
        h = quaternion.random(batch, 1, generator=generator, dtype=torch.float64).to(
            inputs["features"].device
        )
        out = dict(inputs)
        if self.options.plain_features:  # rotate the matrix entries: R_i -> h R_i
            n = inputs["features"].shape[1]
            R = inputs["features"][..., :9].reshape(batch, n, 3, 3)
            turned = quaternion.to_matrix(h).to(R.dtype) @ R
            out["features"] = torch.cat((turned.reshape(batch, n, 9), inputs["features"][..., 9:]), dim=-1)
        else:
            q = inputs["positions"]["orientation"]
            out["positions"] = {**inputs["positions"], "orientation": quaternion.multiply(h.to(q.dtype), q)}
        return out
