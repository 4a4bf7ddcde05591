"""The shipped models under ``benchmarks/results/models/``, scored on systems simulated afresh (seeds the
training never saw), with the input conventions written out once.

ModifiedInertia (``modified_inertia``): ``features`` (N, 5, 1) = [mass] (a model with two features also
reads [mass, |r|]), ``positions={"position": r}`` with r (N, 5, 3) the positions about the origin, raw;
``predictions`` (N, 3, 3) is the target matrix.

N-body (``nbody``, no field): ``features`` (N, 5, 2) = [charge, |v|], ``positions={"position": x,
"velocity": v}`` with x, v (N, 5, 3) the positions and velocities at the input frame; ``predictions``
(N, 5, 3) are the positions 1,000 steps later.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from benchmarks.published import inertia, nbody

MODELS = Path(__file__).resolve().parents[1] / "results" / "models"


def load(name: str, folder: Path = MODELS):
    """A shipped model in eval mode."""
    from models import GeoTransformerForEquivariantRegression

    return GeoTransformerForEquivariantRegression.from_pretrained(folder / name).eval()


@torch.no_grad()
def modified_inertia_errors(model, seed: int, count: int = 2000, breaking: float = 0.3) -> torch.Tensor:
    """Each system's squared error (mean over the 9 entries), ``(count,)``, on fresh ModifiedInertia
    systems drawn with ``seed``."""
    test = inertia.make_splits(seed, breaking, {"test": count})["test"]
    r = torch.tensor(test.positions, dtype=torch.float32)
    masses = torch.tensor(test.masses, dtype=torch.float32)
    columns = (masses, r.norm(dim=-1))[: model.config.feature_size]  # [mass] or [mass, |r|]
    features = torch.stack(columns, dim=-1)
    parts = []
    for chunk in range(0, count, 2000):
        window = slice(chunk, chunk + 2000)
        parts.append(model(features=features[window], positions={"position": r[window]}).predictions)
    targets = torch.tensor(test.targets, dtype=torch.float32)
    return (torch.cat(parts) - targets).pow(2).flatten(1).mean(1)


def modified_inertia_mse(model, seed: int, count: int = 2000, breaking: float = 0.3) -> float:
    """Test MSE on ``count`` fresh ModifiedInertia systems drawn with ``seed``."""
    return float(modified_inertia_errors(model, seed, count, breaking).mean())


def error_summary(errors: torch.Tensor) -> dict:
    """Mean, median, 90th and 99th percentiles and maximum of per-system errors, and the share of the
    mean carried by the worst 0.5% of systems (heavy tails show there)."""
    ordered = errors.double().sort().values
    worst = ordered[-max(1, len(ordered) // 200) :]
    return {
        "systems": len(ordered),
        "mean": float(ordered.mean()),
        "median": float(ordered.median()),
        "p90": float(ordered.quantile(0.9)),
        "p99": float(ordered.quantile(0.99)),
        "max": float(ordered[-1]),
        "worst_half_percent_share": float(worst.sum() / ordered.sum()),
    }


@lru_cache(maxsize=4)
def fresh_nbody(seed: int, count: int) -> nbody.Systems:
    """``count`` N-body systems simulated afresh with ``seed``, once per process (about 30 s for 2,000):
    the shipped model and the split-difficulty baseline read the same ones."""
    return nbody.make_split(count, seed)


@torch.no_grad()
def nbody_mse(model, seed: int, count: int = 2000) -> float:
    """Test MSE on ``count`` fresh N-body systems simulated with ``seed`` (no field)."""
    test = fresh_nbody(seed, count)
    x, v = (torch.tensor(a, dtype=torch.float32) for a in (test.positions, test.velocities))
    features = torch.stack((torch.tensor(test.charges, dtype=torch.float32), v.norm(dim=-1)), dim=-1)
    parts = []
    for chunk in range(0, count, 500):
        window = slice(chunk, chunk + 500)
        positions = {"position": x[window], "velocity": v[window]}
        parts.append(model(features=features[window], positions=positions).predictions)
    return float((torch.cat(parts) - torch.tensor(test.target_positions, dtype=torch.float32)).pow(2).mean())


def fresh_scores(seeds: tuple[int, ...] = (7, 8), count: int = 2000, folder: Path = MODELS) -> dict:
    """{model: {seed: MSE}} for every shipped model present in ``folder``."""
    scorers = {"modified_inertia": modified_inertia_mse, "nbody": nbody_mse}
    out = {}
    for name, score in scorers.items():
        if (folder / name / "config.json").is_file():
            model = load(name, folder)
            out[name] = {str(seed): score(model, seed, count) for seed in seeds}
    return out
