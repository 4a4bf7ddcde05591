"""Write a small particle dataset to parquet: charged particles under Coulomb forces, and how far each
moves. It is the data of the walk-through in docs/own_data.md:

    python examples/particles.py --out data/particles            # train/validation/test .parquet
    geo-pe-train --config examples/particles.yaml                # two-phase training, from the files
    geo-pe-evaluate runs/particles --data data/particles/test.parquet
    geo-pe-predict runs/particles --data data/particles/test.parquet --output predictions.parquet

Each row is one system of 3 to 6 particles (so rows have different lengths): charges +-1, positions
N(0, 1) per coordinate, velocities of norm 0.5 in random directions. Forces q_i q_j r_ij / |r_ij|^3
(clipped at +-100 per component), leapfrog with dt = 0.001 for ``--steps`` steps; the target is each
particle's displacement. ``--field eps`` adds a uniform field eps e_z from the start (force q eps e_z):
the rotation symmetry is then broken, which phase II of the two-phase model can learn.

Columns: ``system`` (an id), ``charge`` and ``speed`` (per particle), ``position`` and ``velocity`` (a
3-vector per particle) and ``displacement`` (a 3-vector per particle, the target).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

MAX_PARTICLES = 6


def simulate(count: int, seed: int, steps: int = 500, field: float = 0.0, dt: float = 1e-3) -> dict:
    """``count`` systems; arrays padded to 6 particles (absent ones have charge 0 and are dropped)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, MAX_PARTICLES + 1, size=count)
    present = np.arange(MAX_PARTICLES)[None, :] < sizes[:, None]
    charge = np.where(present, rng.choice([-1.0, 1.0], size=(count, MAX_PARTICLES)), 0.0)
    x = rng.normal(size=(count, MAX_PARTICLES, 3))
    direction = rng.normal(size=(count, MAX_PARTICLES, 3))
    v = 0.5 * direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    x0, v0 = x.copy(), v.copy()
    external = np.array([0.0, 0.0, field])

    def force(x):
        r = x[:, :, None, :] - x[:, None, :, :]  # r_ij = x_i - x_j
        distance = np.linalg.norm(r, axis=-1, keepdims=True)
        distance = np.where(distance == 0, 1.0, distance)  # i = j: r_ii = 0, so no self-force
        pair = charge[:, :, None, None] * charge[:, None, :, None] * r / distance**3
        f = np.clip(pair.sum(axis=2), -100, 100)
        return f + charge[..., None] * external

    a = force(x)
    for _ in range(steps):  # leapfrog (kick-drift-kick), unit masses
        v = v + 0.5 * dt * a
        x = x + dt * v
        a = force(x)
        v = v + 0.5 * dt * a
    return {"sizes": sizes, "charge": charge, "x0": x0, "v0": v0, "displacement": x - x0}


def to_rows(data: dict, first_id: int = 0) -> dict[str, list]:
    """Ragged per-particle lists, one row per system."""
    columns = ("system", "charge", "speed", "position", "velocity", "displacement")
    rows: dict[str, list] = {k: [] for k in columns}
    for i, n in enumerate(data["sizes"]):
        rows["system"].append(first_id + i)
        rows["charge"].append(data["charge"][i, :n].tolist())
        rows["speed"].append(np.linalg.norm(data["v0"][i, :n], axis=-1).tolist())
        rows["position"].append(data["x0"][i, :n].tolist())
        rows["velocity"].append(data["v0"][i, :n].tolist())
        rows["displacement"].append(data["displacement"][i, :n].tolist())
    return rows


def write(out: Path, sizes: dict[str, int], seed: int, steps: int, field: float) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    paths, first = [], 0
    for offset, (split, count) in enumerate(sizes.items()):
        rows = to_rows(simulate(count, seed * 10 + offset, steps, field), first)
        first += count
        path = out / f"{split}.parquet"
        pq.write_table(pa.table(rows), path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/particles"), help="folder of the files")
    parser.add_argument("--train", type=int, default=2000, help="training systems")
    parser.add_argument("--validation", type=int, default=500, help="validation systems")
    parser.add_argument("--test", type=int, default=500, help="test systems")
    parser.add_argument("--steps", type=int, default=500, help="leapfrog steps of dt = 0.001 per example")
    parser.add_argument("--field", type=float, default=0.0, help="field eps along z (breaks rotations)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = {"train": args.train, "validation": args.validation, "test": args.test}
    for path in write(args.out, sizes, args.seed, args.steps, args.field):
        print(path)


if __name__ == "__main__":
    main()
