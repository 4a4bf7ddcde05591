"""The ``dataset`` task itself: the column mapping, the model it needs, splits and metrics (see the
package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset, DatasetDict
from transformers.utils import ModelOutput

from geo_pe import quaternion
from geo_pe.reps.groups import SE3, SO2, SO3, Sphere, Translations
from models import (
    GeoTransformerForEquivariantRegression,
    GeoTransformerForSequenceClassification,
    GeoTransformerForSequenceRegression,
    GeoTransformerForTokenClassification,
)
from train.batches import Split
from train.files.checks import RowChecks
from train.files.collation import ArrowSplit, collate_rows
from train.files.reading import TARGET_SHAPES, TARGET_WHAT, Column, load_table, nested_levels
from train.tasks import Task, register_task
from train.validation import ConfigError, check_range, check_types

__all__ = ["FileDataset"]

IN_MEMORY_BYTES = 32 * 2**20  # splits below this (as Arrow data) are held as tensors when rows match


@register_task
class FileDataset(Task):
    """Your own data from files, with a column mapping (see the module docstring and docs/own_data.md)."""

    name = "dataset"

    @dataclass
    class Options:
        train_file: str | None = None
        validation_file: str | None = None
        test_file: str | None = None
        validation_fraction: float = 0.1  # of train_file, when validation_file is not given
        test_fraction: float = 0.1  # of train_file, when test_file is not given
        split_seed: int = 0
        features: list[str] | None = None
        sequence_features: list[str] | None = None
        input_ids: str | None = None
        vocab_size: int | None = None
        positions: dict | None = None
        target: str = "label"
        target_kind: Literal["class", "scalar", "vector", "matrix", "symmetric_matrix", "position"] = "class"
        target_level: Literal["sequence", "token"] = "sequence"
        num_labels: int | None = None
        id_column: str | None = None
        fixed_length: int | None = None
        skip_bad_rows: bool = False
        sign_symmetric_features: list[str] | None = None

        def __post_init__(self):
            for name in ("features", "sequence_features"):  # one column may be given as a string
                if isinstance(getattr(self, name), str):
                    setattr(self, name, [getattr(self, name)])
            check_types(self)
            if self.train_file is None:
                raise ConfigError(
                    "train_file: the dataset task needs a training file (parquet, .jsonl, .csv)"
                )
            for name in ("validation_fraction", "test_fraction"):
                check_range(name, getattr(self, name), low=0.0, high=0.5, high_open=True)
            check_range("split_seed", self.split_seed, low=0)
            for name in ("features", "sequence_features"):
                value = getattr(self, name)
                if value is not None and not all(isinstance(c, str) for c in value):
                    raise ConfigError(f"{name}: expected a list of column names, got {value!r}")
            if self.positions is not None and (
                not self.positions
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.positions.items())
            ):
                raise ConfigError(
                    f"positions: expected a mapping attribute -> column, got {self.positions!r}"
                )
            if not (self.features or self.sequence_features or self.input_ids):
                raise ConfigError("features, sequence_features, input_ids: map at least one input column")
            for name in ("vocab_size", "num_labels", "fixed_length"):
                if getattr(self, name) is not None:
                    check_range(name, getattr(self, name), low=1)
            if self.target_kind == "scalar" and self.target_level == "token":
                raise ConfigError(
                    "target_level: a scalar target is per sequence; per token use class, vector, matrix or "
                    "position"
                )
            if self.target_kind == "position" and not self.positions:
                raise ConfigError("target_kind: position outputs move with a mapped position attribute")
            if isinstance(self.sign_symmetric_features, str):
                self.sign_symmetric_features = [self.sign_symmetric_features]
            mapped = (self.features or []) + (self.sequence_features or [])
            for name in self.sign_symmetric_features or []:
                if name not in mapped:
                    raise ConfigError(
                        f"sign_symmetric_features: {name!r} is not a mapped feature column (features and "
                        f"sequence_features map {mapped})"
                    )

    def __init__(self, options: Options):
        super().__init__(options)
        o = options
        self.metric = "accuracy" if o.target_kind == "class" else "mse"
        self.model_class = {
            ("class", "sequence"): GeoTransformerForSequenceClassification,
            ("class", "token"): GeoTransformerForTokenClassification,
            ("scalar", "sequence"): GeoTransformerForSequenceRegression,
        }.get((o.target_kind, o.target_level), GeoTransformerForEquivariantRegression)
        self._tables: dict[str, tuple[str, Dataset]] | None = None
        self._widths: dict[str, int] = {}
        self._flip_channels: list[int] | None = None
        self._spaces: dict | None = None
        self._shared: list[list[str]] = []
        self._points: list[str] = []
        self._output_attribute: str | None = None
        self._num_labels: int | None = o.num_labels

    # --- what the model needs ---------------------------------------------------------------------------
    @property
    def uses_positions(self) -> bool:
        return bool(self.options.positions)

    def columns(self, with_target: bool = True) -> list[Column]:
        """The mapped columns; element shapes of the position attributes come from the model's spaces."""
        o = self.options
        out = [Column(c, "features", True, None, "features") for c in o.features or []]
        out += [
            Column(c, "sequence_features", False, None, "sequence features")
            for c in o.sequence_features or []
        ]
        if o.input_ids:
            out.append(Column(o.input_ids, "input_ids", True, (), "a token id"))
        for attribute, column in (o.positions or {}).items():
            shape, what = None, f"attribute {attribute!r}"
            if self._spaces is not None and attribute in self._spaces:
                shape, what = _element(self._spaces[attribute], attribute)
            out.append(Column(column, f"positions.{attribute}", True, shape, what))
        if with_target:
            per_token = o.target_level == "token"
            out.append(
                Column(
                    o.target, "target", per_token, TARGET_SHAPES[o.target_kind], TARGET_WHAT[o.target_kind]
                )
            )
        return out

    def open(self, cache_dir: str | None = None) -> dict[str, tuple[str, Dataset]]:
        """The files as memory-mapped tables (checked for the mapped columns and rows), the feature widths
        read from the first training row and the number of classes from the training labels."""
        if self._tables is not None:
            return self._tables
        o = self.options
        tables = {"train": (o.train_file, load_table(o.train_file, "train_file", cache_dir))}
        for split, path in (("validation", o.validation_file), ("test", o.test_file)):
            if path is not None:
                tables[split] = (path, load_table(path, f"{split}_file", cache_dir))
        needed = [c.name for c in self.columns()] + ([o.id_column] if o.id_column else [])
        for split, (path, table) in tables.items():
            missing = [c for c in dict.fromkeys(needed) if c not in table.column_names]
            if missing:
                raise ConfigError(
                    f"{missing[0]}: no such column in split {split!r} ({path}); it has {table.column_names}"
                )
            if len(table) == 0:
                raise ConfigError(f"{split}_file: split {split!r} ({path}) is empty")
        self._tables = tables
        train_path, train = tables["train"]
        self._read_widths(train, f"split 'train', {train_path}")
        if o.target_kind == "class" and self._num_labels is None:
            self._num_labels = self._column_max(o.target, o.target_level == "token", "target") + 1
        return tables

    @property
    def augments_training_batches(self) -> bool:
        return bool(self.options.sign_symmetric_features)

    def training_batch(self, batch: dict, generator: torch.Generator) -> dict:
        """``sign_symmetric_features``: the columns' signs flipped together in a random half of the
        examples (one coin per example from ``generator``); the labels stay (the flip is a symmetry)."""
        if not self.options.sign_symmetric_features:
            return batch
        features = batch["features"]
        coins = torch.randint(0, 2, (features.shape[0], 1, 1), generator=generator).to(features.device)
        signs = torch.ones(features.shape[-1], dtype=features.dtype, device=features.device)
        signs[self._sign_symmetric_channels()] = -1.0
        flipped = torch.where(coins.bool(), features * signs, features)
        return {**batch, "features": flipped}

    def _sign_symmetric_channels(self) -> list[int]:
        """The feature channels of ``sign_symmetric_features``, found once from the column widths."""
        if self._flip_channels is None:
            o, channels, start = self.options, [], 0
            for name in (o.features or []) + (o.sequence_features or []):
                if name in o.sign_symmetric_features:
                    channels += range(start, start + self._widths[name])
                start += self._widths[name]
            self._flip_channels = channels
        return self._flip_channels

    def _column_max(self, name: str, per_token: bool, key: str) -> int:
        path, train = self.open()["train"]
        column = train.data.column(name)
        if per_token and (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
            column = pc.list_flatten(column)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise ConfigError(
                f"{name}: expected numbers in split 'train' ({path}) to infer {key} from, got {column.type} "
                f"values; give class labels as integers 0 .. num_labels - 1"
            )
        try:
            top = pc.max(column).as_py()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            top = None
        if top is None or not np.isfinite(top):
            raise ConfigError(f"{name}: no usable values in split 'train' ({path}) to infer {key} from")
        return int(top)

    @property
    def feature_size(self) -> int:
        o = self.options
        return sum(self._widths[c] for c in (o.features or []) + (o.sequence_features or []))

    def model_settings(self) -> dict:
        o = self.options
        self.open()
        settings: dict = {"feature_size": self.feature_size}
        if o.input_ids:
            settings["vocab_size"] = o.vocab_size or self._column_max(o.input_ids, True, "vocab_size") + 1
        if o.target_kind == "class":
            settings["num_labels"] = self._num_labels
        elif o.target_kind == "scalar":
            settings["num_labels"] = 1
        else:
            target = o.target_kind
            settings.update(equivariant_target=target, equivariant_level=o.target_level)
        return settings

    def bind(self, model) -> None:
        """Read the model's group spaces (element shapes, transforms), shared rotations, point attributes
        and output attribute; `ConfigError` when the encodings and the mapping disagree on attributes."""
        inner = getattr(model, "model", model)
        self._spaces = dict(getattr(inner, "attribute_spaces", None) or {})
        self._shared = [list(g) for g in (model.config.shared_rotations or [])]
        self._points = list(model.config.point_attributes or [])
        self._output_attribute = getattr(model, "attribute", None)
        mapped, read = set(self.options.positions or {}), set(self._spaces)
        if read - mapped:
            raise ConfigError(
                f"positions: the encodings (pe_absolute, pe_relative) read attribute(s) "
                f"{sorted(read - mapped)} that the mapping does not give (it maps {sorted(mapped)})"
            )
        if mapped - read:
            raise ConfigError(
                f"positions: attribute(s) {sorted(mapped - read)} are mapped but no encoding reads them "
                f"(the encodings read {sorted(read)}); drop them or use them in pe_absolute or pe_relative"
            )

    def use_file(self, table: Dataset, path: str, model) -> Dataset:
        """Prepare to read one file with a trained model (evaluate, predict): widths and classes from the
        model, every row checked; returns the rows to use (all, or the good ones with skip_bad_rows)."""
        self._tables = {}  # never open the training files
        self._read_widths(table, path)
        if self.feature_size != model.config.feature_size:
            raise ConfigError(
                f"features: {path} has {self.feature_size} features per token, the model reads "
                f"{model.config.feature_size}"
            )
        if self.options.target_kind == "class":
            self._num_labels = model.config.num_labels
        self.bind(model)
        needed = [c.name for c in self.columns(with_target=False)]
        needed += [self.options.id_column] if self.options.id_column else []
        missing = [c for c in dict.fromkeys(needed) if c not in table.column_names]
        if missing:
            raise ConfigError(f"{missing[0]}: no such column in {path}; it has {table.column_names}")
        if len(table) == 0:
            raise ConfigError(f"data: {path} is empty")
        keep = self.check(table, path, ["data"])
        return table if keep is None else table.select(np.flatnonzero(keep))

    def _read_widths(self, table: Dataset, path: str) -> None:
        """The width of each feature column, from its first row."""
        first = table.with_format("arrow")[:1]
        for column in self.columns(with_target=False):
            if column.role in ("features", "sequence_features"):
                try:
                    _, counts = nested_levels(first.column(column.name).combine_chunks())
                except TypeError as err:
                    raise ConfigError(f"{column.name}: {err} ({path}, row 0)") from None
                depth = int(column.per_token)
                self._widths[column.name] = int(max(counts[depth][0], 1)) if len(counts) > depth else 1

    def prediction_values(self, predictions: torch.Tensor, inputs: dict) -> list:
        """One plain value per row: a class index, a number, a 3-vector or 3x3 matrix (as lists); per
        token, the list over the row's tokens."""
        o = self.options
        values = predictions.argmax(-1) if o.target_kind == "class" else predictions
        values = values.detach().cpu()
        if o.target_level == "sequence":
            return values.tolist()
        lengths = inputs["attention_mask"].sum(-1).tolist()
        return [row[:n] for row, n in zip(values.tolist(), lengths, strict=True)]

    # --- the data ----------------------------------------------------------------------------------------
    def build(self, cache_dir: str | None = None) -> DatasetDict:
        """Validated splits (memory-mapped Arrow tables); `ConfigError` at the first bad row."""
        o = self.options
        tables = self.open(cache_dir)
        train_path, train = tables["train"]
        fractions = {"validation": o.validation_fraction, "test": o.test_fraction}
        carved = [s for s in ("test", "validation") if s not in tables]
        assignment = np.zeros(len(train), dtype=np.int8)  # 0 train, 1 validation, 2 test
        codes = {"train": 0, "validation": 1, "test": 2}
        if carved:
            order = np.random.default_rng(o.split_seed).permutation(len(train))
            start = 0
            for split in carved:
                n = round(fractions[split] * len(train))
                assignment[order[start : start + n]] = codes[split]
                start += n
        names = {code: split for split, code in codes.items()}
        keep = {"train": self.check(train, train_path, [names[int(a)] for a in (0, 1, 2)], assignment)}
        for split in ("validation", "test"):
            if split in tables:
                path, table = tables[split]
                keep[split] = self.check(table, path, [split])
        splits = {}
        for split, code in codes.items():
            if split in tables and split != "train":
                path, table = tables[split]
                rows = keep[split]
            else:
                path, table = train_path, train
                rows = assignment == code
                if keep["train"] is not None:
                    rows &= keep["train"]
            if rows is not None and not rows.any():
                key = f"{split}_fraction" if split in carved else f"{split}_file"
                raise ConfigError(f"{key}: split {split!r} ({path}) has no rows left")
            splits[split] = table if rows is None or rows.all() else table.select(np.flatnonzero(rows))
        return DatasetDict(splits)

    def check(self, table: Dataset, path: str, split_names: list[str], assignment=None) -> np.ndarray | None:
        """Check every row of ``table`` (`RowChecks`); the rows to keep with ``skip_bad_rows``."""
        checks = RowChecks(
            self.options, self.columns(), self._widths, self._num_labels, self._spaces, self._points
        )
        return checks.check(table, path, split_names, assignment)

    def split(self, dataset: Dataset) -> ArrowSplit | Split:
        """A small split whose rows all have one length is collated once and indexed per batch (a
        `train.batches.Split`: the same batches, without reading and padding rows at every step); any
        other stays memory-mapped and is collated batch by batch, each padded to its longest row."""
        rows = ArrowSplit(dataset, self)
        if dataset.data.nbytes > IN_MEMORY_BYTES:
            return rows
        whole = rows[slice(None)]
        if self.options.fixed_length is None and not bool(whole["attention_mask"].all()):
            return rows
        return Split(whole)

    # --- batches --------------------------------------------------------------------------------------
    def collate(self, table: pa.Table) -> dict[str, torch.Tensor]:
        """Padded tensors of a batch of rows (`collate_rows`)."""
        o = self.options
        columns = [c for c in self.columns() if c.name in table.column_names]
        return collate_rows(table, columns, self._widths, o.fixed_length, o.target_kind == "class")

    def predictions(self, out: ModelOutput, inputs: dict | None = None) -> torch.Tensor:
        """Per-token outputs are zero on padded tokens (what the model puts there is no prediction)."""
        predictions = super().predictions(out)
        return self._padding_zeroed(predictions, inputs)

    def _padding_zeroed(self, values: torch.Tensor, inputs: dict | None) -> torch.Tensor:
        if self.options.target_level != "token" or inputs is None:
            return values
        mask = inputs["attention_mask"].bool()
        return values.masked_fill(~mask.reshape(*mask.shape, *([1] * (values.dim() - 2))), 0)

    def score(self, out: ModelOutput, labels: torch.Tensor, inputs: dict | None = None):
        if self.metric == "accuracy" or self.options.target_level == "sequence" or inputs is None:
            return super().score(out, labels, inputs)
        errors = (out.predictions - labels.to(out.predictions.dtype)).pow(2)
        mask = inputs["attention_mask"]
        keep = mask.to(errors.dtype).reshape(*mask.shape, *([1] * (errors.dim() - 2)))
        return (errors * keep).sum(), keep.sum() * errors[0, 0].numel()

    # --- symmetry ---------------------------------------------------------------------------------------
    def _draw(self, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One random global element per example and attribute (attributes that share a rotation get
        the same one), drawn in a fixed order so that `transform_output` can draw it again."""
        draws: dict[str, torch.Tensor] = {}
        for attribute in sorted(self._spaces or {}):
            if attribute in draws:
                continue
            h = self._spaces[attribute].acting_group.sample(
                (batch, 1), generator=generator, dtype=torch.float64
            )
            for shared in self._shared:
                if attribute in shared:
                    draws.update(dict.fromkeys(shared, h))
            draws[attribute] = h
        return draws

    def transform(self, inputs: dict, generator: torch.Generator) -> dict:
        if not self._spaces:
            return dict(inputs)
        positions = inputs["positions"]
        draws = self._draw(inputs["attention_mask"].shape[0], generator)
        moved = {}
        for attribute, g in positions.items():
            h = draws[attribute].to(device=g.device, dtype=g.dtype)
            moved[attribute] = self._spaces[attribute].act(h, g)
        return {**inputs, "positions": moved}

    def transform_output(
        self, predictions: torch.Tensor, inputs: dict, generator: torch.Generator
    ) -> torch.Tensor:
        """The predictions moved by the element `transform` draws from a generator in the same state."""
        if self.model_class is not GeoTransformerForEquivariantRegression or not self._spaces:
            return predictions
        draws = self._draw(inputs["attention_mask"].shape[0], generator)
        h = draws[self._output_attribute].to(device=predictions.device, dtype=predictions.dtype)
        space = self._spaces[self._output_attribute]
        R = quaternion.to_matrix(h[..., :4] if isinstance(space, SE3) else h)  # (B, 1, 3, 3)
        shift = h[..., 4:] if isinstance(space, SE3) else torch.zeros_like(h[..., :3])  # (B, 1, 3)
        if self.options.target_level == "sequence":
            R, shift = R[:, 0], shift[:, 0]
        if self.options.target_kind in ("matrix", "symmetric_matrix"):
            return self._padding_zeroed(R @ predictions @ R.transpose(-1, -2), inputs)
        turned = (R @ predictions[..., None])[..., 0]
        turned = turned + shift if self.options.target_kind == "position" else turned
        return self._padding_zeroed(turned, inputs)


def _element(space, attribute: str) -> tuple[tuple[int, ...], str]:
    """Shape of one element of ``space`` and what it is, for the checks and their messages."""
    if isinstance(space, SO2):
        return (), f"an angle (attribute {attribute!r})"
    if isinstance(space, Translations):
        return (
            () if space.ndim == 1 else (space.ndim,)
        ), f"a point of R^{space.ndim} (attribute {attribute!r})"
    if isinstance(space, SO3):
        return (4,), f"a quaternion (attribute {attribute!r})"
    if isinstance(space, SE3):
        return (7,), f"a pose, quaternion then translation (attribute {attribute!r})"
    if isinstance(space, Sphere):
        return (3,), f"a 3-vector (attribute {attribute!r})"
    return tuple(space.sample((1,)).shape[1:]), f"attribute {attribute!r}"
