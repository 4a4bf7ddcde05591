"""Wigner-D speed: geo_pe.reps.wigner_D (from quaternions) against e3nn.o3.wigner_D (from Euler angles).

Both compute the same representation on the same 10,000 rotations on the CPU, measured in one run.
Repeats alternate between the two implementations so that background load hits both alike, and the
median of each is reported. e3nn's time excludes its matrix -> angles conversion (it takes angles),
which favours e3nn. Characters (traces) are compared to show that both compute the same thing.

    python benchmarks/bench_wigner.py [--rotations 10000] [--repeats 15]

Prints a table, then one JSON line:
``{"speedup_vs_e3nn": {"1": ..., "2": ..., "4": ..., "8": ...}, "max_homomorphism_error_fp32": ..., ...}``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _allocator import steady_allocator

from geo_pe import quaternion
from geo_pe.reps import wigner_D


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--degrees", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's defaults (see _allocator.py)"
    )
    args = parser.parse_args()
    allocator = steady_allocator(not args.default_malloc)

    from e3nn import o3  # dev extra: the named peer

    q = quaternion.random(args.rotations, generator=0)
    angles = o3.matrix_to_angles(quaternion.to_matrix(q))
    theta = quaternion.rotation_angle(q.double())

    rows, speedups = [], {}
    for l in args.degrees:
        ours_fn = lambda l=l: wigner_D(q, l)  # noqa: E731
        theirs_fn = lambda l=l: o3.wigner_D(l, *angles)  # noqa: E731
        ours_fn(), theirs_fn()  # warm up
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(timed(ours_fn))
            theirs.append(timed(theirs_fn))
        t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
        trace_ours = wigner_D(q, l).diagonal(dim1=-2, dim2=-1).sum(-1).double()
        trace_theirs = o3.wigner_D(l, *angles).diagonal(dim1=-2, dim2=-1).sum(-1).double()
        exact = torch.sin((2 * l + 1) * theta / 2) / torch.sin(theta / 2)
        rows.append(
            (
                l,
                t_ours * 1e3,
                t_theirs * 1e3,
                t_theirs / t_ours,
                (trace_ours - trace_theirs).abs().max().item(),
                (trace_ours - exact).abs().max().item(),
                (trace_theirs - exact).abs().max().item(),
            )
        )
        speedups[str(l)] = round(t_theirs / t_ours, 2)

    q1, q2 = quaternion.random(args.rotations, generator=1), quaternion.random(args.rotations, generator=2)
    hom = {}
    for l in args.degrees:
        D12 = wigner_D(quaternion.multiply(q1, q2), l)
        hom[str(l)] = (D12 - wigner_D(q1, l) @ wigner_D(q2, l)).abs().max().item()

    threads = torch.get_num_threads()
    print(f"Wigner-D on {args.rotations} rotations, float32, {threads} threads, median of {args.repeats}")
    print(f"allocator: {allocator}")
    header = ("l", "geo_pe ms", "e3nn ms", "speedup", "|tr - tr_e3nn|", "geo_pe err", "e3nn err")
    print("{:>3} {:>10} {:>10} {:>8} {:>15} {:>11} {:>11}".format(*header))
    for l, a, b, s, d_peer, d_ours, d_theirs in rows:
        print(f"{l:>3} {a:>10.2f} {b:>10.2f} {s:>7.1f}x {d_peer:>15.2e} {d_ours:>11.2e} {d_theirs:>11.2e}")
    print("(err: largest |trace - sin((2l+1)t/2)/sin(t/2)| over the rotations, float32)")
    print(
        json.dumps(
            {
                "speedup_vs_e3nn": speedups,
                "max_homomorphism_error_fp32": max(hom.values()),
                "homomorphism_error_fp32_by_degree": hom,
                "max_character_diff_vs_e3nn": max(r[4] for r in rows),
                "max_character_error_fp32": {
                    "geo_pe": max(r[5] for r in rows),
                    "e3nn": max(r[6] for r in rows),
                },
                "rotations": args.rotations,
                "threads": torch.get_num_threads(),
                "allocator": allocator,
            }
        )
    )


if __name__ == "__main__":
    main()
