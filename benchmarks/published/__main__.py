"""Public protocols with published figures, reproduced on this machine.

    python -m benchmarks.published nbody            # data, the protocol's trivial baselines, EGNN
    python -m benchmarks.published nbody --quick    # 200 / 100 / 100 systems, a few epochs (a CI test)

Results go to ``benchmarks/results/published/<benchmark>.json`` (``--out`` for another folder); the
simulated data are cached under ``--cache`` (default ``~/.cache/geo-pe/published``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.published.egnn import EGNN
from benchmarks.published.nbody import SPLITS, Systems, load_splits, trivial_baselines, write_parquet

RESULTS = Path(__file__).resolve().parents[1] / "results" / "published"
PUBLISHED_NBODY = {  # test MSE, Satorras et al. (2021) Table 2; SEGNN: Brandstetter et al. (2022)
    "Linear": 0.0819,
    "SE(3)-Transformer": 0.0244,
    "TFN": 0.0155,
    "GNN": 0.0107,
    "Radial Field": 0.0104,
    "EGNN": 0.0071,
    "SEGNN": 0.0043,
}


def _tensors(s: Systems) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(a, dtype=torch.float32) for a in (s.positions, s.velocities, s.charges))


@torch.no_grad()
def _mse(model: torch.nn.Module, s: Systems) -> float:
    model.eval()
    x, v, q = _tensors(s)
    prediction = torch.cat(
        [model(*batch) for batch in zip(x.split(500), v.split(500), q.split(500), strict=True)]
    )
    model.train()
    return float((prediction - torch.tensor(s.target_positions, dtype=torch.float32)).pow(2).mean())


def train_egnn(
    splits: dict[str, Systems], *, epochs: int, seed: int = 0, lr: float = 5e-4, batch: int = 100,
    eval_every: int = 5, target: float = PUBLISHED_NBODY["EGNN"], max_minutes: float | None = None,
) -> dict:  # fmt: skip
    """EGNN with the paper's settings; the test MSE at the best validation epoch, and the wall time at
    which the test MSE (at that point's best validation) first reached ``target``."""
    torch.manual_seed(seed)
    model = EGNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-12)
    x, v, q = _tensors(splits["train"])
    y = torch.tensor(splits["train"].target_positions, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    best = {"validation": float("inf")}
    curve, reached, started = [], None, time.perf_counter()
    for epoch in range(1, epochs + 1):
        for index in torch.randperm(len(x), generator=generator).split(batch):
            loss = (model(x[index], v[index], q[index]) - y[index]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch % eval_every == 0 or epoch == epochs:
            validation = _mse(model, splits["validation"])
            if validation < best["validation"]:
                best = {"epoch": epoch, "validation": validation, "test": _mse(model, splits["test"])}
            seconds = time.perf_counter() - started
            curve.append(
                {"epoch": epoch, "seconds": seconds, "validation": validation, "best_test": best["test"]}
            )
            if reached is None and best["test"] <= target:
                reached = seconds
            if max_minutes is not None and seconds > 60 * max_minutes:
                break
            line = f"  epoch {epoch}: validation {validation:.5f}, best test {best['test']:.5f}"
            line += f" ({seconds:.0f} s)"
            print(line, file=sys.stderr, flush=True)
    return {
        "test_mse": best["test"],
        "best_epoch": best["epoch"],
        "validation_mse": best["validation"],
        "seconds": time.perf_counter() - started,
        "seconds_to_published_egnn": reached,
        "parameters": sum(p.numel() for p in model.parameters()),
        "curve": curve,
    }


def nbody(args) -> dict:
    sizes = {"train": 200, "validation": 100, "test": 100} if args.quick else SPLITS
    splits = load_splits(args.cache, sizes=sizes)
    if args.parquet is not None:
        write_parquet(splits, args.parquet)
    result = {
        "egnn_settings": "4 layers, 64 channels, Adam 5e-4, batch 100 (as the paper); a wall-time budget",
        "protocol": "Satorras et al. 2021 N-body: 5 charged particles, frame 30 -> 40, 3,000/2,000/2,000",
        "sizes": {k: len(v) for k, v in splits.items()},
        "published": PUBLISHED_NBODY,
        "trivial_baselines": trivial_baselines(splits["train"], splits["test"]),
        "calibration_targets": {"start_position": 0.27, "constant_velocity": 0.11, "pooled_linear": 0.07},
    }
    print(json.dumps({"trivial_baselines": result["trivial_baselines"]}), flush=True)
    result["egnn"] = train_egnn(
        splits,
        epochs=2 if args.quick else args.epochs,
        eval_every=1 if args.quick else 5,
        max_minutes=args.minutes,
    )
    print(json.dumps({k: v for k, v in result["egnn"].items() if k != "curve"}), flush=True)
    return result


BENCHMARKS = {"nbody": nbody}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.published", description=__doc__.split("\n")[0]
    )
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="tiny data and a few epochs (CI)")
    parser.add_argument("--epochs", type=int, default=10_000, help="EGNN training epochs (the paper's)")
    parser.add_argument(
        "--minutes", type=float, help="stop EGNN after this wall time (the budget of a CPU run)"
    )
    parser.add_argument("--parquet", type=Path, help="also write the splits as parquet here (dataset task)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "geo-pe" / "published")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    np.seterr(all="ignore")
    result = BENCHMARKS[args.benchmark](args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.benchmark}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
