"""Equivariance toolkit speed: intertwiner solves as representations grow, closed forms vs dense layers.

Solves: W -> W maps for S_n permutation representations (n = rep dimension) and SO(3)
representations (copies of degrees 0..3, rep dimension d), by every applicable method ("schur" is
the structured closed form that `EquivariantLinear` stores: a coefficient block per pair of irreps).
Each solve runs in a fresh process so that its peak memory (max RSS above the process's baseline)
can be attributed to it; a method is skipped at a size where its memory would exceed the budget.

Layers at N = 1,024 (batch 64, one channel): DeepSets' ``a x + b sum(x)`` and the circulant's FFT
against the same layers expanded to an N x N ``nn.Linear``.

    python benchmarks/bench_equivariance.py [--quick]

Prints tables, then one JSON line.
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

SIZES = [8, 32, 100, 300, 1000]
MEMORY_BUDGET = 6e9  # bytes; dense solves need ~16 (m n)^2 bytes


def _rep(kind: str, size: int):
    from geo_pe.reps import PermutationRep, SO3Rep, symmetric

    if kind == "sn":
        return PermutationRep(symmetric(size))
    # SO(3): copies of degrees 0..3 (dims 1, 3, 5, 7: 16 per set of copies) up to `size` channels
    copies = max(1, size // 16)
    return SO3Rep([(copies, 0), (copies, 1), (copies, 2), (copies, 3)])


def _solve(kind: str, size: int, method: str, queue) -> None:
    import psutil

    from geo_pe.equivariance import intertwiner_basis, schur_blocks

    torch.set_num_threads(2)
    rep = _rep(kind, size)
    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    if method == "schur":  # the structured closed form that EquivariantLinear uses: no dense basis
        maps = sum(block.num_maps for block in schur_blocks(rep, rep))
    else:
        maps = intertwiner_basis(rep, rep, method=method).shape[0]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put((rep.dim, maps, seconds, max(0, peak - baseline)))


def _estimated_bytes(method: str, dim: int, kind: str) -> float:
    mn = dim * dim
    if method == "dense":
        return 24 * mn * mn  # Q and one Kronecker factor, float64
    if method == "kronecker":
        k = mn if kind == "sn" else mn / 3  # matched entries of the most selective generator (upper bound)
        k = dim if kind == "sn" else k
        return 16 * k * k * 3
    return 64 * mn  # orbits, schur: a few dense (m, n) arrays per basis element or label


def run_solves(sizes) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for kind, methods in (("sn", ("orbits", "kronecker", "dense")), ("so3", ("schur", "kronecker", "dense"))):
        for size in sizes:
            dim = size if kind == "sn" else 16 * max(1, size // 16)
            for method in methods:
                if _estimated_bytes(method, dim, kind) > MEMORY_BUDGET:
                    rows.append({"group": kind, "dim": dim, "method": method, "skipped": True})
                    continue
                queue = ctx.Queue()
                proc = ctx.Process(target=_solve, args=(kind, size, method, queue))
                proc.start()
                proc.join()
                if proc.exitcode != 0:
                    rows.append({"group": kind, "dim": dim, "method": method, "failed": proc.exitcode})
                    continue
                d, k, seconds, peak = queue.get()
                rows.append(
                    {
                        "group": kind,
                        "dim": d,
                        "method": method,
                        "k": k,
                        "seconds": seconds,
                        "peak_bytes": peak,
                    }
                )
    return rows


def median_time(fn, repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_layers() -> dict:
    from geo_pe.equivariance import CirculantLinear, DeepSetsLinear

    torch.manual_seed(0)
    n, batch = 1024, 64
    x = torch.randn(batch, n, 1)
    flat = x.flatten(1)
    out = {}
    with torch.no_grad():
        for name, layer in (("deepsets", DeepSetsLinear(n)), ("circulant", CirculantLinear(n))):
            dense = layer.to_dense()
            closed = median_time(lambda layer=layer: layer(x))
            expanded = median_time(lambda dense=dense: dense(flat))
            error = (layer(x).flatten(1) - dense(flat)).abs().max().item()
            out[name] = {"closed_ms": closed * 1e3, "dense_ms": expanded * 1e3, "max_abs_diff": error}
            if name == "circulant":
                out[name]["expanded_matrix_ms"] = (
                    median_time(lambda layer=layer: layer.dense_forward(x)) * 1e3
                )
            out[name]["params_closed"] = sum(p.numel() for p in layer.parameters())
            out[name]["params_dense"] = sum(p.numel() for p in dense.parameters())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 100 only")
    args = parser.parse_args()
    allocator = steady_allocator()
    sizes = [s for s in SIZES if s <= 100] if args.quick else SIZES
    rows = run_solves(sizes)
    print(f"intertwiner solves (W: rho -> rho), 2 threads, one process each; allocator: {allocator}")
    print(f"{'group':<6} {'dim':>5} {'method':<10} {'maps':>6} {'seconds':>9} {'peak MB':>9}")
    for r in rows:
        if r.get("skipped") or r.get("failed"):
            why = "skipped (memory)" if r.get("skipped") else f"failed ({r['failed']})"
            print(f"{r['group']:<6} {r['dim']:>5} {r['method']:<10} {why:>26}")
        else:
            print(
                f"{r['group']:<6} {r['dim']:>5} {r['method']:<10} {r['k']:>6} {r['seconds']:>9.3f} "
                f"{r['peak_bytes'] / 1e6:>9.1f}"
            )
    layers = run_layers()
    print("\nlayers at N = 1024, batch 64 (ms, median of 15)")
    for name, r in layers.items():
        print(
            f"  {name:<10} closed form {r['closed_ms']:8.3f}   dense nn.Linear {r['dense_ms']:8.3f}   "
            f"params {r['params_closed']} vs {r['params_dense']}   |diff| {r['max_abs_diff']:.1e}"
        )
    solved = [r for r in rows if "seconds" in r]
    result = {
        "solve_seconds": {f"{r['group']}_{r['dim']}_{r['method']}": round(r["seconds"], 4) for r in solved},
        "solve_peak_mb": {
            f"{r['group']}_{r['dim']}_{r['method']}": round(r["peak_bytes"] / 1e6, 1) for r in solved
        },
        "deepsets_closed_vs_dense_speedup": round(
            layers["deepsets"]["dense_ms"] / layers["deepsets"]["closed_ms"], 2
        ),
        "circulant_fft_vs_dense_speedup": round(
            layers["circulant"]["dense_ms"] / layers["circulant"]["closed_ms"], 2
        ),
        "circulant_fft_vs_expanded_matrix_speedup": round(
            layers["circulant"]["expanded_matrix_ms"] / layers["circulant"]["closed_ms"], 2
        ),
        "allocator": allocator,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
