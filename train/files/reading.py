"""Reading the files of the ``dataset`` task: tables from parquet, JSON lines, CSV or ``save_to_disk``
folders, and the values of one mapped column as numpy arrays (token counts, bad rows named)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from train.validation import ConfigError

__all__ = ["FORMATS", "TARGET_SHAPES", "TARGET_WHAT", "Column", "load_table", "nested_levels", "read_column"]

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}

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
        while err.__cause__ is not None or err.__context__ is not None:  # datasets wraps the reader's error
            err = err.__cause__ or err.__context__
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


def nested_levels(array: pa.Array) -> tuple[np.ndarray, list[np.ndarray]]:
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


def read_column(array: pa.Array, column: Column, width: int | None = None):
    """``(values (entries, *shape), tokens per row or None, bad rows {row: reason}, row of each entry)``.

    An entry is a token's value (per-token columns) or a row's. ``width``: the entry width when
    ``column.shape`` is None (features: a number or a list of ``width`` numbers). Bad rows are reported
    and left out of ``values``; their token counts are -1.
    """
    numbers, counts = nested_levels(array)
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
