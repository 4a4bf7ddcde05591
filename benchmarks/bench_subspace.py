"""Random-subspace training cost: a step in {w_t + A theta} against a full-space step.

MLPs of about 10^5 and 10^6 parameters (three square linear layers, batch 64, fp32, Adam). In a fresh
process per configuration: the median time of a full-space training step (forward, backward, optimizer
step), then ``set_phase(model, "subspace", subspace_dim=d, projection=kind, freeze_others=True)`` (one
global theta, as in Li et al. 2018) and the median subspace step, and the peak memory that the switch
adds (max RSS during the subspace steps above the RSS before the switch). Configurations whose
projection would not fit in the memory budget are skipped (the dense A is D x d floats).

    python benchmarks/bench_subspace.py [--quick]

Prints a table, then one JSON line, e.g. ``{"fastfood_step_vs_full_max": ..., "dense_mem_bytes_d1000": ...}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

import torch
from _allocator import steady_allocator

MODELS = {"1e5": 180, "1e6": 577}  # width of three square layers: 3 * (w^2 + w) parameters
DIMS = [10, 100, 1000, 10000]
KINDS = ["fastfood", "sparse", "dense"]
MEMORY_BUDGET = 3e9


def _steps(model, opt, x, y, steps: int) -> float:
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _run(width: int, kind: str, d: int, steps: int, queue) -> None:
    import psutil

    from geo_pe.phases import set_phase

    steady_allocator()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    layers = [torch.nn.Linear(width, width) for _ in range(3)]
    model = torch.nn.Sequential(layers[0], torch.nn.Tanh(), layers[1], torch.nn.Tanh(), layers[2])
    D = sum(p.numel() for p in model.parameters())
    x, y = torch.randn(64, width), torch.randn(64, width)
    full = _steps(model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y, steps)
    before = psutil.Process().memory_info().rss
    report = set_phase(model, "subspace", subspace_dim=d, projection=kind, freeze_others=True)
    theta = [p for p in model.parameters() if p.requires_grad]
    sub = _steps(model, torch.optim.Adam(theta, lr=1e-3), x, y, steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put(
        {
            "D": D,
            "full_s": full,
            "subspace_s": sub,
            "extra_bytes": max(0, peak - before),
            "trainable": report.trainable_parameters,
        }
    )


def projection_bytes(kind: str, D: int, d: int) -> float:
    if kind == "dense":
        return 8.0 * D * d  # float64 draw, float32 copy
    if kind == "sparse":
        return 24.0 * d * D**0.5
    return 40.0 * D


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 1e5 model and d <= 1000 only")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    allocator = steady_allocator()
    models = {"1e5": MODELS["1e5"]} if args.quick else MODELS
    dims = [d for d in DIMS if d <= 1000] if args.quick else DIMS
    ctx = mp.get_context("spawn")
    rows = []
    for label, width in models.items():
        D = 3 * (width * width + width)
        for d in dims:
            for kind in KINDS:
                if projection_bytes(kind, D, d) > MEMORY_BUDGET:
                    rows.append({"model": label, "D": D, "d": d, "kind": kind, "skipped": True})
                    continue
                queue = ctx.Queue()
                proc = ctx.Process(target=_run, args=(width, kind, d, args.steps, queue))
                proc.start()
                proc.join()
                if proc.exitcode != 0:
                    rows.append({"model": label, "D": D, "d": d, "kind": kind, "failed": proc.exitcode})
                    continue
                rows.append({"model": label, "d": d, "kind": kind, **queue.get()})
    print(
        f"subspace training step vs full-space step (fp32, batch 64, Adam, 2 threads); allocator: {allocator}"
    )
    header = ("model", "D", "d", "kind", "full ms", "subsp. ms", "ratio", "extra MB")
    print("{:<6} {:>9} {:>6} {:<9} {:>8} {:>9} {:>6} {:>9}".format(*header))
    for r in rows:
        if "full_s" not in r:
            why = "skipped (memory)" if r.get("skipped") else f"failed ({r.get('failed')})"
            print(f"{r['model']:<6} {r['D']:>9} {r['d']:>6} {r['kind']:<9} {why:>36}")
            continue
        ratio = r["subspace_s"] / r["full_s"]
        print(
            f"{r['model']:<6} {r['D']:>9} {r['d']:>6} {r['kind']:<9} {r['full_s'] * 1e3:>8.2f} "
            f"{r['subspace_s'] * 1e3:>9.2f} {ratio:>6.2f} {r['extra_bytes'] / 1e6:>9.1f}"
        )
    done = [r for r in rows if "full_s" in r]
    fastfood = [r["subspace_s"] / r["full_s"] for r in done if r["kind"] == "fastfood"]
    result = {
        "fastfood_step_vs_full_max": round(max(fastfood), 2) if fastfood else None,
        "fastfood_step_vs_full": {
            f"{r['model']}_d{r['d']}": round(r["subspace_s"] / r["full_s"], 2)
            for r in done
            if r["kind"] == "fastfood"
        },
        "sparse_step_vs_full": {
            f"{r['model']}_d{r['d']}": round(r["subspace_s"] / r["full_s"], 2)
            for r in done
            if r["kind"] == "sparse"
        },
        "dense_step_vs_full": {
            f"{r['model']}_d{r['d']}": round(r["subspace_s"] / r["full_s"], 2)
            for r in done
            if r["kind"] == "dense"
        },
        "extra_mem_bytes": {f"{r['kind']}_{r['model']}_d{r['d']}": r["extra_bytes"] for r in done},
        "dense_mem_bytes_d1000": next(
            (r["extra_bytes"] for r in done if r["kind"] == "dense" and r["d"] == 1000), None
        ),
        "allocator": allocator,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
