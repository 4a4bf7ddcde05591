"""The ``dataset`` task: your own files, read through `datasets` and described by a column mapping.

    task: dataset
    data:
      train_file: particles_train.parquet     # parquet, .jsonl/.json, .csv, or a save_to_disk folder
      validation_file: particles_val.parquet  # optional: else validation_fraction of train_file
      features: [charge, speed]               # per-token numbers (a list per row, or a list of lists)
      positions: {position: position, velocity: velocity}   # attribute -> column, per token
      target: displacement
      target_kind: vector                     # class, scalar, vector, matrix, symmetric_matrix or position
      target_level: token                     # token or sequence

One row is one example (a set or sequence of tokens). Per-token columns hold a list per row, one entry
per token: a number, or a list of numbers (a direction, a quaternion, a pose, several features); a
plain number per row is one token (CSV cells hold numbers only, so CSV files have one token per row).
``sequence_features`` are numbers per row, repeated on every token. Rows may have different numbers of
tokens: batches are padded and their attention masks built (``fixed_length`` requires one length).

Every row is checked before training, chunk by chunk, and the first bad row of each column is named (the
column, the split, the file and the row): missing columns, wrong element shapes, ragged lengths, NaN or
infinite values, zero quaternions and directions, labels out of range, empty splits. Bad rows are never
dropped silently: ``skip_bad_rows: true`` drops them and reports how many.

The data stay memory-mapped: the splits are Arrow tables (``select`` keeps an index mapping, no copy), and
each batch is read and padded when it is drawn (`ArrowSplit`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
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
from train.tasks import Task, register_task
from train.validation import ConfigError, check_range, check_types

__all__ = ["ArrowSplit", "FileDataset", "load_table"]

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
CHUNK_ROWS = 65_536  # rows per validation chunk: memory stays flat however long the file
TARGET_SHAPES = {
    "class": (),
    "scalar": (),
    "vector": (3,),
    "matrix": (3, 3),
    "symmetric_matrix": (3, 3),
    "position": (3,),
}


def load_table(path: str, key: str, cache_dir: str | None = None) -> Dataset:
    """A memory-mapped `Dataset` from a parquet, JSON lines, CSV file or a ``save_to_disk`` folder;
    `ConfigError` naming ``key`` when the file is missing or unreadable."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{key}: no such file or folder {path!r}")
    try:
        if p.is_dir():
            if not (p / "dataset_info.json").is_file():
                raise ConfigError(
                    f"{key}: {path} is a folder but not one written by Dataset.save_to_disk "
                    "(no dataset_info.json); give a parquet, .jsonl or .csv file"
                )
            loaded = Dataset.load_from_disk(str(p))
        else:
            kind = FORMATS.get(p.suffix.lower())
            if kind is None:
                raise ConfigError(
                    f"{key}: unknown format {p.suffix!r} of {path}; expected one of {sorted(FORMATS)} "
                    "or a save_to_disk folder"
                )
            if p.stat().st_size == 0 or (kind == "parquet" and _parquet_rows(p, key) == 0):
                raise ConfigError(f"{key}: {path} is empty (no rows)")
            reader = {"parquet": Dataset.from_parquet, "json": Dataset.from_json, "csv": Dataset.from_csv}
            loaded = reader[kind](str(p), cache_dir=cache_dir)
    except ConfigError:
        raise
    except Exception as err:  # a corrupt or malformed file: say which and why, in one line
        raise ConfigError(
            f"{key}: cannot read {path} ({type(err).__name__}: {' '.join(str(err).split())})"
        ) from None
    if not isinstance(loaded, Dataset):
        raise ConfigError(f"{key}: {path} holds a DatasetDict; save one split per folder")
    return loaded


def _parquet_rows(path: Path, key: str) -> int:
    """The row count from the parquet footer; a truncated or foreign file is named before any reader
    logs its own complaint."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except Exception as err:
        raise ConfigError(
            f"{key}: cannot read {path} ({type(err).__name__}: {' '.join(str(err).split())}); the parquet "
            "file is truncated or corrupt"
        ) from None


# --- columns ---------------------------------------------------------------------------------------------
@dataclass
class Column:
    """A mapped column: ``role`` in the model inputs, one entry per token or per row, each of ``shape``
    (None: any fixed width, read from the first row)."""

    name: str
    role: str  # features, sequence_features, input_ids, positions.<attribute>, target
    per_token: bool
    shape: tuple[int, ...] | None
    what: str  # what one entry is, for the messages


def _levels(array: pa.Array) -> tuple[np.ndarray, list[np.ndarray]]:
    """Numbers (float64, nulls as NaN) and the list lengths at each nesting level (nulls as -1)."""
    counts = []
    while (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or pa.types.is_fixed_size_list(array.type)
    ):
        lengths = pc.list_value_length(array).fill_null(-1).to_numpy(zero_copy_only=False)
        counts.append(lengths.astype(np.int64))
        array = array.flatten()
    if not (
        pa.types.is_integer(array.type) or pa.types.is_floating(array.type) or pa.types.is_boolean(array.type)
    ):
        raise TypeError(f"expected numbers, got values of type {array.type}")
    numbers = array.to_numpy(zero_copy_only=False)
    return np.asarray(numbers, dtype=np.float64), counts


def _owners(rows: int, counts: list[np.ndarray]) -> list[np.ndarray]:
    """For each nesting level, the row each item of that level belongs to (level 0: the rows)."""
    owners = [np.arange(rows)]
    for level in counts:
        owners.append(np.repeat(owners[-1], np.maximum(level, 0)))
    return owners


def _at_centroid(points: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of the ``points`` (entries, 3), grouped into sets by ``rows``, lie at their set's centroid
    (within 1e-6 of the set's size): the model reads each point's direction from the centroid."""
    points = points.astype(np.float64)
    starts = np.unique(rows, return_inverse=True)[1]
    count = np.bincount(starts).astype(np.float64)
    total = np.zeros((len(count), 3))
    np.add.at(total, starts, points)
    distance = np.linalg.norm(points - (total / count[:, None])[starts], axis=-1)
    size = np.zeros(len(count))
    np.maximum.at(size, starts, distance)
    return distance <= 1e-6 * np.maximum(size[starts], 1e-30)


def read_column(array: pa.Array, column: Column, width: int | None = None):
    """``(values (entries, *shape), tokens per row or None, bad rows {row: reason}, row of each entry)``.

    An entry is a token's value (per-token columns) or a row's. ``width``: the entry width when
    ``column.shape`` is None (features: a number or a list of ``width`` numbers). Bad rows are reported
    and left out of ``values``; their token counts are -1.
    """
    numbers, counts = _levels(array)
    rows = len(array)
    single = column.per_token and not counts  # plain numbers in a per-token column: one token per row
    depth = int(column.per_token and not single)
    entry_depth = len(counts) - depth
    if column.shape is None:
        shape: tuple[int, ...] = (width or 1,) if entry_depth == 1 else ()
        allowed = entry_depth in (0, 1)
    else:
        shape = column.shape
        allowed = entry_depth == len(shape) or (len(shape) == 2 and entry_depth == 1)  # 3x3 or 9 numbers
    if not allowed:
        one = {0: "a number", 1: f"a list of {math.prod(shape)} numbers", 2: "a 3x3 list of lists"}[
            len(shape)
        ]
        where = "a list per row (one entry per token) of entries, each" if column.per_token else "per row"
        raise ConfigError(
            f"{column.name}: expected {where} {one} ({column.what}); the column holds {array.type}"
        )
    extents = list(shape) if entry_depth == len(shape) else [math.prod(shape)]
    owners = _owners(rows, counts)
    bad: dict[int, str] = {}
    if counts:
        for r in np.flatnonzero(counts[0] < 0):
            bad.setdefault(int(r), "missing value")
    for k, extent in enumerate(extents):
        level = depth + k
        for item in np.flatnonzero(counts[level] != extent):
            got = counts[level][item]
            reason = (
                "missing value"
                if got < 0
                else f"an entry has {got} numbers where {column.what} needs {extent}"
            )
            bad.setdefault(int(owners[level][item]), reason)
    finite = np.isfinite(numbers)
    if not finite.all():
        for r in np.unique(owners[-1][~finite]):
            bad.setdefault(int(r), "NaN, infinite or missing value")
    tokens = counts[0].copy() if depth else (np.ones(rows, dtype=np.int64) if single else None)
    entry_rows = owners[depth]
    if bad:
        keep = np.ones(rows, dtype=bool)
        keep[list(bad)] = False
        numbers = numbers[keep[owners[-1]]]
        entry_rows = entry_rows[keep[entry_rows]]
        if tokens is not None:
            tokens[~keep] = -1
    size = math.prod(shape)
    values = numbers.reshape(len(entry_rows), *shape)
    if size == 0:
        values = numbers.reshape(len(entry_rows), 0)
    return values, tokens, bad, entry_rows


# --- the task ----------------------------------------------------------------------------------------------
TARGET_WHAT = {
    "class": "a class index",
    "scalar": "a number",
    "vector": "a 3-vector",
    "matrix": "a 3x3 matrix",
    "symmetric_matrix": "a symmetric 3x3 matrix",
    "position": "a 3-vector position",
}


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
                    _, counts = _levels(first.column(column.name).combine_chunks())
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
        """Check every row of ``table`` chunk by chunk; raise `ConfigError` at the first bad one, or with
        ``skip_bad_rows`` return the rows to keep (None: all good). ``assignment`` gives each row's split."""
        o = self.options
        columns = [c for c in self.columns() if c.name in table.column_names]
        bad: dict[int, tuple[str, str]] = {}
        view = table.with_format("arrow")
        for start in range(0, len(table), CHUNK_ROWS):
            chunk = view[start : start + CHUNK_ROWS]
            tokens_of: dict[str, np.ndarray] = {}
            for column in columns:
                try:
                    values, tokens, found, rows = read_column(
                        chunk.column(column.name).combine_chunks(), column, self._widths.get(column.name)
                    )
                except TypeError as err:
                    raise ConfigError(f"{column.name}: {err} ({path})") from None
                for r, reason in {**self._meaning(column, values, rows), **found}.items():
                    bad.setdefault(start + r, (column.name, reason))
                if tokens is not None:
                    tokens_of[column.name] = tokens
            reference_name, reference = next(iter(tokens_of.items()), (None, None))
            for name, tokens in tokens_of.items():
                for r in np.flatnonzero((tokens >= 0) & (reference >= 0) & (tokens != reference)):
                    reason = f"{tokens[r]} tokens but {reference_name!r} has {reference[r]} (ragged row)"
                    bad.setdefault(start + int(r), (name, reason))
                if o.fixed_length is not None:
                    for r in np.flatnonzero((tokens >= 0) & (tokens != o.fixed_length)):
                        reason = f"{tokens[r]} tokens where fixed_length is {o.fixed_length}"
                        bad.setdefault(start + int(r), (name, reason))
                for r in np.flatnonzero(tokens == 0):
                    bad.setdefault(start + int(r), (name, "no tokens"))
        if not bad:
            return None
        rows = sorted(bad)
        first = rows[0]
        split = split_names[int(assignment[first])] if assignment is not None else split_names[0]
        column, reason = bad[first]
        message = f"{column}: split {split!r} ({path}), row {first}: {reason}"
        if not o.skip_bad_rows:
            more = f"; {len(rows) - 1} more bad row(s)" if len(rows) > 1 else ""
            raise ConfigError(f"{message}{more} (skip_bad_rows: true drops them and reports how many)")
        warnings.warn(
            f"skip_bad_rows: dropped {len(rows)} of {len(table)} rows of {path} (first: {message})",
            stacklevel=2,
        )
        keep = np.ones(len(table), dtype=bool)
        keep[rows] = False
        return keep

    def _meaning(self, column: Column, values: np.ndarray, rows: np.ndarray) -> dict[int, str]:
        """Checks that need the column's meaning: labels and ids in range, non-zero quaternions and
        directions. ``rows``: the chunk row of each entry."""
        o = self.options
        out: dict[int, str] = {}

        def flag(wrong: np.ndarray, describe) -> None:
            for i in np.flatnonzero(wrong):
                out.setdefault(int(rows[i]), describe(i))

        flat = values.reshape(len(values), -1)
        if column.role == "target" and o.target_kind == "class":
            labels = flat[:, 0]
            wrong = (labels != np.round(labels)) | (labels < 0) | (labels >= self._num_labels)
            flag(
                wrong,
                lambda i: (
                    f"label {labels[i]:g} out of range: expected an integer in [0, {self._num_labels}) "
                    "(num_labels)"
                ),
            )
        if column.role == "target" and o.target_kind == "symmetric_matrix":
            matrices = flat.reshape(-1, 3, 3)
            asymmetry = np.abs(matrices - matrices.transpose(0, 2, 1)).max(axis=(1, 2))
            scale = np.abs(matrices).max(axis=(1, 2))
            flag(
                asymmetry > 1e-5 * np.maximum(scale, 1.0),
                lambda i: f"the matrix is not symmetric (|M - M^T| up to {asymmetry[i]:.3g}); use matrix",
            )
        if column.role == "input_ids":
            ids = flat[:, 0]
            top = o.vocab_size if o.vocab_size is not None else math.inf
            flag(
                (ids < 0) | (ids >= top) | (ids != np.round(ids)),
                lambda i: f"token id {ids[i]:g} out of range [0, {top}) (vocab_size)",
            )
        if column.role.startswith("positions.") and self._spaces is not None:
            attribute = column.role.split(".", 1)[1]
            space = self._spaces.get(attribute)
            if isinstance(space, (SO3, SE3)):
                flag(
                    np.linalg.norm(flat[:, :4], axis=-1) == 0,
                    lambda i: f"zero quaternion (attribute {attribute!r})",
                )
            elif isinstance(space, Sphere) and attribute not in self._points:
                flag(
                    np.linalg.norm(flat, axis=-1) == 0, lambda i: f"zero direction (attribute {attribute!r})"
                )
            elif isinstance(space, Sphere) and len(flat):
                flag(
                    _at_centroid(flat, rows),
                    lambda i: (
                        f"a point of attribute {attribute!r} lies at the centroid of its row's points, "
                        "where its direction is undefined (so does the point of a row of one)"
                    ),
                )
        return out

    def split(self, dataset: Dataset) -> ArrowSplit:
        return ArrowSplit(dataset, self)

    # --- batches --------------------------------------------------------------------------------------
    def collate(self, table: pa.Table) -> dict[str, torch.Tensor]:
        """Padded tensors of a batch of rows: features, input_ids, positions, attention_mask, labels."""
        o = self.options
        columns = [c for c in self.columns() if c.name in table.column_names]
        read, tokens = {}, None
        for column in columns:
            values, counts, found, _ = read_column(
                table.column(column.name).combine_chunks(), column, self._widths.get(column.name)
            )
            if found:
                row, reason = next(iter(found.items()))
                raise ValueError(
                    f"{column.name}: row {row} of the batch: {reason} (the data changed after checking?)"
                )
            read[column.name] = values
            if counts is not None:
                tokens = counts
        batch = len(table)
        tokens = np.ones(batch, dtype=np.int64) if tokens is None else tokens
        length = o.fixed_length or max(int(tokens.max(initial=0)), 1)
        mask = np.arange(length)[None, :] < tokens[:, None]

        def pad(values: np.ndarray, fill=0, dtype=np.float32) -> torch.Tensor:
            out = np.full((batch, length, *values.shape[1:]), fill, dtype=dtype)
            out[mask] = values
            return torch.from_numpy(out)

        out: dict = {"attention_mask": torch.from_numpy(mask.astype(np.int64))}
        parts = []
        for column in columns:
            values = read[column.name]
            if column.role == "features":
                parts.append(pad(values.reshape(len(values), -1)))
            elif column.role == "sequence_features":
                per_row = torch.from_numpy(values.reshape(batch, -1).astype(np.float32))
                parts.append(per_row[:, None, :].expand(batch, length, -1))
            elif column.role == "input_ids":
                out["input_ids"] = pad(values, 0, np.int64)
            elif column.role.startswith("positions."):
                out.setdefault("positions", {})[column.role.split(".", 1)[1]] = pad(values)
            elif column.role == "target":
                integer = o.target_kind == "class"
                if column.per_token:
                    out["labels"] = pad(values, -100, np.int64) if integer else pad(values)
                else:
                    out["labels"] = torch.from_numpy(values.astype(np.int64 if integer else np.float32))
        if parts:
            out["features"] = torch.cat(parts, dim=-1)
        return out

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


class ArrowSplit:
    """A split read from its memory-mapped table one batch at a time: ``split[indices]`` is the padded
    batch of those rows (`FileDataset.collate`)."""

    def __init__(self, dataset: Dataset, task: FileDataset):
        self.dataset, self.task = dataset.with_format("arrow"), task
        self.size = len(dataset)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        if isinstance(index, slice):
            rows = list(range(*index.indices(self.size)))
        else:
            rows = torch.as_tensor(index).reshape(-1).tolist()
        return self.task.collate(self.dataset[rows])
