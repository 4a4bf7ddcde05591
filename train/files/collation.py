"""Batches of the ``dataset`` task: rows read from the memory-mapped table when they are drawn and padded
into the model's inputs, with their attention masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset

from train.files.reading import Column, read_column

__all__ = ["ArrowSplit", "collate_rows"]


def collate_rows(
    table: pa.Table,
    columns: list[Column],
    widths: dict[str, int],
    fixed_length: int | None,
    integer_labels: bool,
) -> dict[str, torch.Tensor]:
    """Padded tensors of a batch of rows: features, input_ids, positions, attention_mask, labels
    (class indices when ``integer_labels``, padded with -100 per token). ``fixed_length`` pads every
    batch to one length (static shapes for torch.compile)."""
    read, tokens = {}, None
    for column in columns:
        values, counts, found, _ = read_column(
            table.column(column.name).combine_chunks(), column, widths.get(column.name)
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
    length = fixed_length or max(int(tokens.max(initial=0)), 1)
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
            integer = integer_labels
            if column.per_token:
                out["labels"] = pad(values, -100, np.int64) if integer else pad(values)
            else:
                out["labels"] = torch.from_numpy(values.astype(np.int64 if integer else np.float32))
    if parts:
        out["features"] = torch.cat(parts, dim=-1)
    return out


class ArrowSplit:
    """A split read from its memory-mapped table one batch at a time: ``split[indices]`` is the padded
    batch of those rows (`FileDataset.collate`)."""

    def __init__(self, dataset: Dataset, task):
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
