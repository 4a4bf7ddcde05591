"""The shipped models under ``benchmarks/results/models/``, scored on systems simulated afresh (seeds the
training never saw), with the input conventions written out once.

ModifiedInertia (``modified_inertia``): ``features`` (N, 5, 2) = [mass, |r|], ``positions={"position": r}``
with r (N, 5, 3) the positions about the origin; ``predictions`` (N, 3, 3) is the target matrix.

N-body (``nbody``, no field): ``features`` (N, 5, 2) = [charge, |v|], ``positions={"position": x,
"velocity": v}`` with x, v (N, 5, 3) the positions and velocities at the input frame; ``predictions``
(N, 5, 3) are the positions 1,000 steps later.
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.published import inertia, nbody

MODELS = Path(__file__).resolve().parents[1] / "results" / "models"


def load(name: str, folder: Path = MODELS):
    """A shipped model in eval mode."""
    from models import GeoTransformerForEquivariantRegression

    return GeoTransformerForEquivariantRegression.from_pretrained(folder / name).eval()


@torch.no_grad()
def modified_inertia_mse(model, seed: int, count: int = 2000, breaking: float = 0.3) -> float:
    """Test MSE on ``count`` fresh ModifiedInertia systems drawn with ``seed``."""
    test = inertia.make_splits(seed, breaking, {"test": count})["test"]
    r = torch.tensor(test.positions, dtype=torch.float32)
    masses = torch.tensor(test.masses, dtype=torch.float32)
    features = torch.stack((masses, r.norm(dim=-1)), dim=-1)
    predictions = model(features=features, positions={"position": r}).predictions
    return float((predictions - torch.tensor(test.targets, dtype=torch.float32)).pow(2).mean())


@torch.no_grad()
def nbody_mse(model, seed: int, count: int = 2000) -> float:
    """Test MSE on ``count`` fresh N-body systems simulated with ``seed`` (no field)."""
    test = nbody.make_split(count, seed)
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
