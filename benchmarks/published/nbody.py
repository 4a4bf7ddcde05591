"""The charged N-body system of Kipf et al. (2018) in the protocol of Satorras et al. (2021, EGNN).

Written from the physics and the protocol's description: 5 particles with charges +-1; Coulomb forces
F_i = sum_j q_i q_j (x_i - x_j) / |x_i - x_j|^3, each component clipped at +-100; dt = 0.001 with the
update of Kipf et al.'s simulator (a first kick, then drift-kick steps); initial positions N(0, 1) per
coordinate, velocities of norm 0.5 in random directions; a frame every 100 steps (frame 0: the initial
state). Inputs are positions and velocities at frame 30 and the charges; the target is the positions at
frame 40 (1,000 steps later). 3,000 / 2,000 / 2,000 trajectories; MSE on positions.

``field`` adds a uniform force q_i eps e_z from step ``field_from`` on (0: throughout; the input frame's
step 3,000: switched on as the particles enter, the broken case).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DT, SAMPLE_EVERY, MAX_FORCE = 1e-3, 100, 100.0
INPUT_FRAME, TARGET_FRAME = 30, 40
SPLITS = {"train": 3000, "validation": 2000, "test": 2000}


@dataclass
class Systems:
    """``charges (N, n)``, and at the input and target frames ``positions``/``velocities (N, n, 3)``."""

    charges: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    target_positions: np.ndarray
    target_velocities: np.ndarray

    def __len__(self) -> int:
        return len(self.charges)

    def subset(self, count: int) -> Systems:
        return Systems(*(a[:count] for a in vars(self).values()))


def forces(x: np.ndarray, charges: np.ndarray) -> np.ndarray:
    """Coulomb forces ``(N, n, 3)`` on each particle, clipped per component at +-100."""
    r = x[:, :, None, :] - x[:, None, :, :]  # r_ij = x_i - x_j
    distance3 = np.sum(r * r, axis=-1) ** 1.5
    n = x.shape[1]
    distance3[:, np.arange(n), np.arange(n)] = np.inf  # no self-force
    strength = charges[:, :, None] * charges[:, None, :] / distance3
    return np.clip(np.sum(strength[..., None] * r, axis=2), -MAX_FORCE, MAX_FORCE)


def simulate(
    count: int,
    seed: int,
    *,
    particles: int = 5,
    frames: int = TARGET_FRAME,
    field: float = 0.0,
    field_from: int = 0,
) -> dict[str, np.ndarray]:
    """``count`` trajectories: charges, and positions and velocities ``(count, frames + 1, n, 3)``."""
    rng = np.random.default_rng(seed)
    charges = rng.choice([-1.0, 1.0], size=(count, particles))
    x = rng.normal(size=(count, particles, 3))
    v = rng.normal(size=(count, particles, 3))
    v = 0.5 * v / np.linalg.norm(v, axis=-1, keepdims=True)
    external = charges[..., None] * np.array([0.0, 0.0, field])
    positions = np.zeros((count, frames + 1, particles, 3))
    velocities = np.zeros_like(positions)
    positions[:, 0], velocities[:, 0] = x, v

    def force(x, step):
        f = forces(x, charges)
        return f + external if field and step >= field_from else f

    v = v + DT * force(x, 0)
    for step in range(1, frames * SAMPLE_EVERY + 1):
        x = x + DT * v
        if step % SAMPLE_EVERY == 0:
            positions[:, step // SAMPLE_EVERY], velocities[:, step // SAMPLE_EVERY] = x, v
        v = v + DT * force(x, step)
    return {"charges": charges, "positions": positions, "velocities": velocities}


def make_split(count: int, seed: int, field: float = 0.0, field_from: int = 0) -> Systems:
    run = simulate(count, seed, field=field, field_from=field_from)
    p, v = run["positions"], run["velocities"]
    return Systems(
        run["charges"], p[:, INPUT_FRAME], v[:, INPUT_FRAME], p[:, TARGET_FRAME], v[:, TARGET_FRAME]
    )


def time_reversed(systems: Systems) -> Systems:
    """The same trajectories run backwards, from the stored data alone: the target frame's positions
    with their velocities reversed, and the input frame's positions as the target.

    Newton's equations are symmetric under t -> -t, and leapfrog keeps the symmetry: a frame stores x_s
    and v_{s-1/2}, and the simulator run from x_T and -v_{T+1/2} lands exactly on x_0. Only the force law
    gives v_{T+1/2} = v_{T-1/2} + dt F(x_T), and a model must not be handed it; the stored -v_{T-1/2}
    differs by that one kick (at most 0.1 per component, the clip), so each reversed example is the
    exact map's output up to the drift of one kick. The field benchmark's external force would not
    reverse: no field."""
    return Systems(
        systems.charges,
        systems.target_positions,
        -systems.target_velocities,
        systems.positions,
        -systems.velocities,
    )


def with_time_reversed(systems: Systems) -> Systems:
    """``systems`` followed by their `time_reversed` copies: twice the examples of the same map."""
    backwards = time_reversed(systems)
    pairs = zip(vars(systems).values(), vars(backwards).values(), strict=True)
    return Systems(*(np.concatenate((forwards, reversed_)) for forwards, reversed_ in pairs))


def load_splits(
    cache: Path | None = None,
    seed: int = 0,
    field: float = 0.0,
    field_from: int = 0,
    sizes: dict | None = None,
) -> dict[str, Systems]:
    """The three splits (seeded, one stream each), cached as ``.npz`` under ``cache``."""
    sizes = sizes or SPLITS
    out = {}
    for offset, (split, count) in enumerate(sizes.items()):
        name = f"nbody_{split}_{count}_s{seed}_f{field:g}_from{field_from}.npz"
        path = None if cache is None else Path(cache) / name
        if path is not None and path.is_file():
            data = np.load(path)
            out[split] = Systems(*(data[k] for k in ("charges", "positions", "velocities", "target_positions",
                                                      "target_velocities")))  # fmt: skip
            continue
        systems = make_split(count, 1000 * seed + offset, field, field_from)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **vars(systems))
        out[split] = systems
    return out


# --- the protocol's trivial baselines ---------------------------------------------------------------------
def mse(prediction: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean((prediction - target) ** 2))


def linear_dynamics_time(train: Systems) -> float:
    """The time t of EGNN's "Linear" baseline, x_T ~ x_0 + t v_0, by least squares on ``train``."""
    displacement, velocity = (train.target_positions - train.positions).ravel(), train.velocities.ravel()
    return float(displacement @ velocity / (velocity @ velocity))


def linear_dynamics_mse(systems: Systems, time: float) -> float:
    """MSE of x_0 + ``time`` v_0 on ``systems``: the one published baseline whose figure (0.0819,
    Satorras et al. 2021, Table 2) any split can be held against, so a split's difficulty."""
    return mse(systems.positions + time * systems.velocities, systems.target_positions)


def trivial_baselines(train: Systems, test: Systems) -> dict[str, float]:
    """Test MSE of: the start position; constant velocity over the 1,000 steps; a linear fit pooled over
    particles and coordinates, x_T ~ a x_0 + b v_0, and EGNN's linear dynamics x_T ~ x_0 + t v_0 (both by
    least squares on the training split)."""
    elapsed = (TARGET_FRAME - INPUT_FRAME) * SAMPLE_EVERY * DT
    features = np.stack((train.positions.ravel(), train.velocities.ravel()), axis=1)
    coefficients, *_ = np.linalg.lstsq(features, train.target_positions.ravel(), rcond=None)
    linear = coefficients[0] * test.positions + coefficients[1] * test.velocities
    return {
        "start_position": mse(test.positions, test.target_positions),
        "constant_velocity": mse(test.positions + elapsed * test.velocities, test.target_positions),
        "pooled_linear": mse(linear, test.target_positions),
        "linear_dynamics": linear_dynamics_mse(test, linear_dynamics_time(train)),
    }


def write_tables(columns: dict[str, dict], folder: Path) -> dict[str, Path]:
    """``{split: {column: values}}`` as ``folder/<split>.parquet``, one row per system (the files the
    ``dataset`` task reads); returns the paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, table in columns.items():
        paths[split] = folder / f"{split}.parquet"
        # written aside, then moved in one step: a run of another seed reading the same files (the data
        # do not depend on the seed) never sees a half-written one
        partial = paths[split].with_name(f".{split}.{os.getpid()}.parquet")
        pq.write_table(pa.table(table), partial)
        os.replace(partial, paths[split])
    return paths


def write_parquet(splits: dict[str, Systems], folder: Path) -> dict[str, Path]:
    """The splits as parquet files for the ``dataset`` task: one row per system with ``charge``,
    ``speed`` (per particle), ``position``, ``velocity`` (3-vectors per particle, input frame) and
    ``target`` (positions at the target frame)."""
    columns = {
        split: {
            "system": np.arange(len(s)),
            "charge": s.charges.tolist(),
            "speed": np.linalg.norm(s.velocities, axis=-1).tolist(),
            "position": s.positions.tolist(),
            "velocity": s.velocities.tolist(),
            "target": s.target_positions.tolist(),
        }
        for split, s in splits.items()
    }
    return write_tables(columns, folder)
