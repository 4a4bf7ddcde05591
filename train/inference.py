"""Evaluate and predict with a trained run on a data file with the run's column mapping.

    geo-pe-evaluate runs/particles --data new.parquet [--output metrics.json] [--num_processes N]
    geo-pe-predict runs/particles --data new.parquet --output predictions.parquet [--num_processes N]

The first argument is a run directory (``run_config.yaml`` and ``model/``) or its ``model/`` folder. The
data file goes through the checks of training (`train.files`); ``predict`` needs no target column.
``evaluate`` prints the loss, the task's metric and the equivariance error and writes them as JSON
(default ``<run>/evaluation_<data file name>.json``); ``predict`` writes one row per input row
(parquet or JSON lines, by the output's suffix) with the run's ``id_column`` (else ``row``) and the
``prediction``: a class, a number, a 3-vector or 3x3 matrix, per row or (a list) per token. Both batch
the data with a progress bar; with several processes each takes a contiguous share and the results are
gathered in order. Outputs are written atomically (a temporary file, then a rename) and never
overwrite an existing file without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from train.validation import ConfigError

__all__ = ["evaluate_main", "load_run", "predict_main"]

OUTPUT_FORMATS = (".parquet", ".jsonl")


def load_run(path: str):
    """``(RunConfig, model directory)`` of a run directory or of its ``model/`` folder."""
    from train.config import load_config

    p = Path(path)
    if (p / "run_config.yaml").is_file() and (p / "model").is_dir():
        run, model_dir = p, p / "model"
    elif (p / "config.json").is_file() and (p.parent / "run_config.yaml").is_file():
        run, model_dir = p.parent, p
    else:
        raise ConfigError(
            f"run: {path} is neither a run directory (run_config.yaml and model/) nor the model/ folder "
            "of one"
        )
    return load_config(["--config", str(run / "run_config.yaml")]), model_dir


def _prepare(run: str, data: str):
    """The run's task bound to its trained model, and the checked data file as a split."""
    from train.files import FileDataset, load_table

    config, model_dir = load_run(run)
    task = config.make_task()
    if not isinstance(task, FileDataset):
        raise ConfigError(
            f"run: {run} trained task {config.task!r}; evaluate and predict read files with the column "
            "mapping of a 'dataset' run"
        )
    try:
        model = task.model_class.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        detail = " ".join(str(err).split())
        raise ConfigError(f"run: cannot load the model in {model_dir} ({detail})") from None
    table = task.use_file(load_table(data, "data", config.training.data_cache_dir), data, model)
    return config, task, model, table


def _launch(script: str, num_processes: int, argv: list[str]) -> int:
    from train.cli import launch_script

    return launch_script(script, num_processes, argv)


def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=doc, allow_abbrev=False)
    parser.add_argument("run", help="a run directory (run_config.yaml, model/) or its model/ folder")
    parser.add_argument("--data", required=True, help="parquet, .jsonl, .csv or a save_to_disk folder")
    parser.add_argument("--batch_size", type=int, default=None, help="rows per batch (default: the run's)")
    parser.add_argument("--num_processes", type=int, default=1, help="processes through accelerate launch")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def _write_atomic(path: Path, write) -> None:
    """``write(temporary_path)`` then rename: a crash never leaves a half-written output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    write(partial)
    os.replace(partial, path)


def _check_output(path: Path, overwrite: bool, formats=None) -> None:
    if formats is not None and path.suffix.lower() not in formats:
        raise ConfigError(f"output: expected a file ending in {' or '.join(formats)}, got {str(path)!r}")
    if path.exists() and not overwrite:
        raise ConfigError(f"output: {path} exists; pass --overwrite to replace it")


def _accelerator(args):
    """The run's Accelerator settings (device, mixed precision), without trackers."""
    from train.loop import make_accelerator

    return make_accelerator(dataclasses.replace(args, report_to="none"))


# --- evaluate ----------------------------------------------------------------------------------------------
def evaluate_run(run: str, data: str, output: str | None, batch_size: int | None, overwrite: bool) -> dict:
    """Metrics and the equivariance error of a run on ``data``; written to ``output`` (JSON)."""
    from train.evaluation import evaluate, measure_equivariance

    default = load_run(run)[1].parent / f"evaluation_{Path(data).stem}.json"
    out_path = Path(output) if output else default
    _check_output(out_path, overwrite)
    config, task, model, table = _prepare(run, data)
    if task.options.target not in table.column_names:
        raise ConfigError(f"{task.options.target}: evaluate needs the target column; {data} has none")
    args = config.training
    if batch_size is not None:
        args.eval_batch_size = batch_size
    accelerator = _accelerator(args)
    model = model.to(accelerator.device)
    split = task.split(table)
    metrics = evaluate(model, task, split, args, accelerator)
    metrics["equivariance_error"] = measure_equivariance(model, task, split, args, accelerator.device)
    result = {"run": str(run), "data": str(data), "rows": len(split), **metrics}
    if accelerator.is_main_process:
        _write_atomic(out_path, lambda p: p.write_text(json.dumps(result, indent=2) + "\n"))
        for key in ("loss", task.metric, "equivariance_error"):
            print(f"{key:>20}: {result[key]:.6g}")
        print(f"wrote {out_path}")
    return result


# --- predict -----------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_rows(task, model, split, batch_size: int, accelerator) -> list:
    """Each row's prediction (plain Python values), in row order across processes."""
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from train.batches import shard, to_device

    model.eval()
    mine = shard(torch.arange(len(split)), accelerator.process_index, accelerator.num_processes)
    rows: list = []
    chunks = [c for c in torch.split(mine, batch_size) if len(c)]
    for chunk in tqdm(chunks, desc="predict", disable=not accelerator.is_local_main_process):
        batch = to_device(split[chunk], accelerator.device)
        inputs, _ = task.inputs(batch)
        predictions = task.predictions(model(**inputs), inputs)
        rows += task.prediction_values(predictions, inputs)
    if accelerator.num_processes > 1:
        rows = gather_object(rows)  # rank order: the shards are contiguous, so row order
    return rows


def predict_run(run: str, data: str, output: str, batch_size: int | None, overwrite: bool) -> Path:
    out_path = Path(output)
    _check_output(out_path, overwrite, OUTPUT_FORMATS)
    config, task, model, table = _prepare(run, data)
    accelerator = _accelerator(config.training)
    model = model.to(accelerator.device)
    split = task.split(table)
    predictions = predict_rows(task, model, split, batch_size or config.training.eval_batch_size, accelerator)
    id_column = task.options.id_column
    ids = table[id_column] if id_column else list(range(len(table)))
    if accelerator.is_main_process:
        import pyarrow as pa

        columns = {id_column or "row": ids, "prediction": predictions}
        if out_path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            _write_atomic(out_path, lambda p: pq.write_table(pa.table(columns), p))
        else:

            def write_lines(p: Path) -> None:
                with p.open("w") as f:
                    for key, value in zip(columns[id_column or "row"], predictions, strict=True):
                        f.write(json.dumps({id_column or "row": key, "prediction": value}) + "\n")

            _write_atomic(out_path, write_lines)
        print(f"wrote {len(predictions)} predictions to {out_path}")
    return out_path


# --- entry points ------------------------------------------------------------------------------------------
def _main(argv, prog: str, doc: str, needs_output: bool, run_one) -> int:
    from train.checkpoint import CheckpointError
    from train.cli import _LAUNCHED, report_error

    parser = _parser(prog, doc)
    parser.add_argument("--output", required=needs_output, help="the output file")
    args = parser.parse_args(argv)
    if args.num_processes < 1:
        problem = f"num_processes: expected a positive integer, got {args.num_processes}"
        return report_error(ConfigError(problem))
    if args.batch_size is not None and args.batch_size < 1:
        return report_error(ConfigError(f"batch_size: expected a positive integer, got {args.batch_size}"))
    try:
        if args.num_processes > 1 and not os.environ.get(_LAUNCHED):
            _prepare(args.run, args.data)  # every check once, before the processes start
            if args.output:
                _check_output(Path(args.output), args.overwrite)
            return _launch(prog, args.num_processes, list(argv if argv is not None else sys.argv[1:]))
        run_one(args.run, args.data, args.output, args.batch_size, args.overwrite)
    except (ConfigError, CheckpointError) as err:
        return report_error(err)
    return 0


def evaluate_main(argv: list[str] | None = None) -> int:
    return _main(argv, "geo-pe-evaluate", "Evaluate a trained run on a data file.", False, evaluate_run)


def predict_main(argv: list[str] | None = None) -> int:
    doc = "Write a trained run's predictions for a data file."
    return _main(argv, "geo-pe-predict", doc, True, predict_run)
