"""Peak memory of training on your own files: a 1,000,000-row parquet file against a 100,000-row one.

    python benchmarks/bench_data_memory.py                     # 100,000 and 1,000,000 rows
    python benchmarks/bench_data_memory.py --rows 10000 100000 --steps 50

Each file holds particle systems of 3 to 6 particles (the columns of examples/particles.py, random
values); validation and test are small files of their own. Every size trains the same model for the same
steps in a fresh process (``python -m train``, one process) and records its peak resident memory,
sampled from /proc every 20 ms and split into anonymous memory (allocated by the process) and
file-backed pages (the memory-mapped Arrow table, resident once read: page cache the kernel can drop
under pressure), and its wall time. Anonymous memory should not grow with the file; the figure is the
ratio of its peaks. The first run of a file converts it to Arrow in the datasets cache (timed apart,
``cache_seconds``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def _lists(values: np.ndarray, offsets: np.ndarray, width: int | None = None) -> pa.Array:
    flat = pa.array(values.reshape(-1), type=pa.float32())
    inner = flat if width is None else pa.FixedSizeListArray.from_arrays(flat, width)
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), inner)


def write_particles(path: Path, rows: int, seed: int = 0, chunk: int = 200_000) -> None:
    """``rows`` random particle systems, written in row groups (the writer never holds the whole file)."""
    rng = np.random.default_rng(seed)
    schema = None
    writer = None
    first_id = 0
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        sizes = rng.integers(3, 7, size=n)
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        tokens = int(offsets[-1])
        direction = rng.normal(size=(tokens, 3))
        direction = 0.5 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
        table = pa.table(
            {
                "system": pa.array(np.arange(first_id, first_id + n)),
                "charge": _lists(rng.choice([-1.0, 1.0], size=tokens), offsets),
                "speed": _lists(np.full(tokens, 0.5), offsets),
                "position": _lists(rng.normal(size=(tokens, 3)), offsets, 3),
                "velocity": _lists(
                    0.5 * direction / np.linalg.norm(direction, axis=1, keepdims=True), offsets, 3
                ),
                "displacement": _lists(0.1 * rng.normal(size=(tokens, 3)), offsets, 3),
            }
        )
        first_id += n
        if writer is None:
            schema = table.schema
            writer = pq.ParquetWriter(path, schema)
        writer.write_table(table)
    writer.close()


def _memory_kb(pid: int) -> dict[str, int]:
    """Resident memory of a process from /proc: total, anonymous (heap) and file-backed (mapped files)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0])
    return fields


def train_once(train_file: Path, small: Path, out: Path, cache: Path, steps: int) -> dict:
    """One training run in a child process, its memory sampled every 20 ms: peak resident (MB), split
    into anonymous memory (what the process allocated) and file-backed pages (the memory-mapped Arrow
    table as it is read: page cache the kernel may drop), and the wall time."""
    command = [
        sys.executable, "-m", "train",
        "--config", str(ROOT / "examples" / "particles.yaml"),
        "--train_file", str(train_file),
        "--validation_file", str(small), "--test_file", str(small),
        "--output_dir", str(out), "--overwrite_output_dir", "true",
        "--data_cache_dir", str(cache),
        "--phase1_steps", str(steps // 2), "--phase2_steps", str(steps - steps // 2),
        "--eval_steps", str(steps), "--save_steps", str(steps), "--report_to", "none", "--plot", "false",
    ]  # fmt: skip
    started = time.perf_counter()
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as child:
        while child.poll() is None:
            try:
                for key, value in _memory_kb(child.pid).items():
                    peaks[key] = max(peaks[key], value)
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.02)
        stderr = child.stderr.read()
    seconds = time.perf_counter() - started
    if child.returncode:
        raise RuntimeError(stderr[-3000:])
    return {
        "peak_rss_mb": peaks["VmRSS"] / 1024,
        "peak_anonymous_mb": peaks["RssAnon"] / 1024,
        "peak_file_backed_mb": peaks["RssFile"] / 1024,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the files here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        small = work / "small.parquet"
        write_particles(small, 256, seed=1)
        for rows in args.rows:
            path = work / f"train_{rows}.parquet"
            started = time.perf_counter()
            write_particles(path, rows)
            written = time.perf_counter() - started
            code = (
                "import json, sys; sys.path.insert(0, sys.argv[1]);"
                "from benchmarks.bench_data_memory import train_once; from pathlib import Path;"
                "print(json.dumps(train_once(*map(Path, sys.argv[2:6]), int(sys.argv[6]))))"
            )
            cache = work / f"cache_{rows}"

            def run(out: Path, steps: int, path=path, cache=cache, code=code) -> list[str]:
                paths = (path, small, out, cache)
                return [sys.executable, "-c", code, str(ROOT), *map(str, paths), str(steps)]

            started = time.perf_counter()
            subprocess.run(run(work / "warm", 2), capture_output=True, text=True, check=True)  # Arrow cache
            cache_seconds = time.perf_counter() - started
            measured = run(work / f"run_{rows}", args.steps)
            completed = subprocess.run(measured, capture_output=True, text=True, check=True)
            record = json.loads(completed.stdout.strip().splitlines()[-1])
            record.update(
                file_mb=path.stat().st_size / 2**20, write_seconds=written, cache_seconds=cache_seconds
            )
            results[rows] = record
            print(json.dumps({"rows": rows, **{k: round(v, 1) for k, v in record.items()}}), flush=True)
    sizes = sorted(results)
    if len(sizes) > 1:
        ratios = {
            f"{key}_{sizes[-1]}_vs_{sizes[0]}": round(results[sizes[-1]][key] / results[sizes[0]][key], 3)
            for key in ("peak_rss_mb", "peak_anonymous_mb")
        }
        print(json.dumps(ratios))
    return results


if __name__ == "__main__":
    main()
