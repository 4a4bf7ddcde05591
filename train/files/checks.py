"""The checks every row of the ``dataset`` task passes before training, evaluation or prediction: shapes,
ragged lengths, finite values, labels and ids in range, non-zero quaternions and directions, points off
their centroid. The first bad row is named (column, split, file, row); ``skip_bad_rows`` drops them."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset

from geo_pe.reps.groups import SE3, SO3, Sphere
from train.files.reading import Column, read_column
from train.validation import ConfigError

__all__ = ["CHUNK_ROWS", "RowChecks"]

CHUNK_ROWS = 65_536  # rows per validation chunk: memory stays flat however long the file


@dataclass
class RowChecks:
    """What the checks read of the task: its options, mapped columns, feature widths, number of classes,
    the model's attribute spaces and its point attributes."""

    options: Any
    columns: list[Column]
    widths: dict[str, int]
    num_labels: int | None
    spaces: dict | None
    points: list[str]

    def check(self, table: Dataset, path: str, split_names: list[str], assignment=None) -> np.ndarray | None:
        """Check every row of ``table`` chunk by chunk; raise `ConfigError` at the first bad one, or with
        ``skip_bad_rows`` return the rows to keep (None: all good). ``assignment`` gives each row's split."""
        o = self.options
        columns = [c for c in self.columns if c.name in table.column_names]
        bad: dict[int, tuple[str, str]] = {}
        view = table.with_format("arrow")
        for start in range(0, len(table), CHUNK_ROWS):
            chunk = view[start : start + CHUNK_ROWS]
            tokens_of: dict[str, np.ndarray] = {}
            for column in columns:
                try:
                    values, tokens, found, rows = read_column(
                        chunk.column(column.name).combine_chunks(), column, self.widths.get(column.name)
                    )
                except TypeError as err:
                    raise ConfigError(f"{column.name}: {err} ({path})") from None
                for r, reason in {**self.meaning(column, values, rows), **found}.items():
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

    def meaning(self, column: Column, values: np.ndarray, rows: np.ndarray) -> dict[int, str]:
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
            wrong = (labels != np.round(labels)) | (labels < 0) | (labels >= self.num_labels)
            flag(
                wrong,
                lambda i: (
                    f"label {labels[i]:g} out of range: expected an integer in [0, {self.num_labels}) "
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
        if column.role.startswith("positions.") and self.spaces is not None:
            attribute = column.role.split(".", 1)[1]
            space = self.spaces.get(attribute)
            if isinstance(space, (SO3, SE3)):
                flag(
                    np.linalg.norm(flat[:, :4], axis=-1) == 0,
                    lambda i: f"zero quaternion (attribute {attribute!r})",
                )
            elif isinstance(space, Sphere) and attribute not in self.points:
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
