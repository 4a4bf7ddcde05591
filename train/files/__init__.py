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

The package: `reading` (files and columns), `checks` (every row before use), `collation` (padded
batches) and `task` (the task that ties them to the model).
"""

from train.files.collation import ArrowSplit, collate_rows
from train.files.reading import Column, load_table, read_column
from train.files.task import FileDataset

__all__ = ["ArrowSplit", "Column", "FileDataset", "collate_rows", "load_table", "read_column"]
