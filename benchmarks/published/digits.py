"""Rotated digits against what users would pick instead: an RBF SVM and a small CNN on the same rotated
point clouds, rasterised to an image.

The data are the ``rotated_digits`` task's (the same images, rotations, splits and labels, by its
``data_seed``, with the geo transformer's split: `TEST_FRACTION` of the images held out for test, as
in ``configs/experiments/digits.yaml``): each lit pixel of scikit-learn's 8x8 digits is a point at
radius r and angle theta, rotated by the example's angle. Here the points are splatted onto a 16 x 16
grid covering [-6, 6]^2 (pixel pitch 0.75 of the original pixel), weighted by intensity: bilinearly for
the CNN, and for the SVM bilinearly or as Gaussians, whichever validation prefers (a bilinear splat
leaves holes between rotated pixels, which cost the SVM 2-5 points at 50-300 images).

* SVM: scikit-learn's ``SVC`` with the RBF kernel on the flattened images, the splat, C and gamma
  chosen on the validation split from a grid (bilinear or Gaussian of width 0.5 .. 1 pixel, C in 1 ..
  1000, gamma in 0.001 .. 0.1 times the mean squared norm).
* CNN: two 3x3 convolutions (32, 64 channels, ReLU, max-pool) and a linear layer; Adam at 1e-3, batch
  64, up to ``epochs`` with the best validation epoch kept. With augmentation, each training example is
  rotated afresh from upright by an angle within the training range (for tilt labels, the label follows
  the new angle: the augmentation knows the labelling rule, the CNN's best case).

Every figure is the mean and spread over data seeds: each seed draws its own split and rotations.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

GRID, EXTENT = 16, 6.0
# the geo transformer's test split (its runs' base config), so that both see the same images per data seed
TEST_FRACTION = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "configs" / "experiments" / "digits.yaml").read_text()
)["data"]["test_fraction"]
# the SVM's splats, chosen on validation: bilinear (None) or Gaussians of these widths; the CNN's are
# bilinear, which served it best (a Gaussian of width 0.75 cost it 10 points at 50 images)
SPLATS = (None, 0.5, 0.75, 1.0)


def rasterise(
    features: torch.Tensor,
    angles: torch.Tensor,
    mask: torch.Tensor,
    extra_rotation=None,
    sigma: float | None = None,
) -> torch.Tensor:
    """(B, T, 2) [intensity, radius / 5], (B, T) angles, (B, T) mask -> (B, 1, GRID, GRID) images,
    weighted by intensity: each point split bilinearly over its 4 nearest pixels (``sigma`` None), or
    a Gaussian of width ``sigma`` (in original pixels) centred where it lies, normalised over the grid."""
    if sigma is not None:
        return _gaussian_splats(features, angles, mask, extra_rotation, sigma)
    intensity, radius = features[..., 0], features[..., 1] * 5.0
    theta = angles if extra_rotation is None else angles + extra_rotation[:, None]
    x, y = radius * torch.cos(theta), radius * torch.sin(theta)
    u = (x + EXTENT) / (2 * EXTENT) * (GRID - 1)  # column
    v = (EXTENT - y) / (2 * EXTENT) * (GRID - 1)  # row (y up)
    u0, v0 = u.floor().clamp(0, GRID - 2), v.floor().clamp(0, GRID - 2)
    du, dv = (u - u0).clamp(0, 1), (v - v0).clamp(0, 1)
    B = features.shape[0]
    image = torch.zeros(B, GRID * GRID, dtype=features.dtype)
    w = intensity * mask.to(features.dtype)
    for cu, cv, weight in (
        (0, 0, (1 - du) * (1 - dv)), (1, 0, du * (1 - dv)), (0, 1, (1 - du) * dv), (1, 1, du * dv)
    ):  # fmt: skip
        index = ((v0 + cv) * GRID + (u0 + cu)).long()
        image.scatter_add_(1, index, w * weight)
    return image.view(B, 1, GRID, GRID)


def _gaussian_splats(features, angles, mask, extra_rotation, sigma: float) -> torch.Tensor:
    intensity, radius = features[..., 0], features[..., 1] * 5.0
    theta = angles if extra_rotation is None else angles + extra_rotation[:, None]
    x, y = radius * torch.cos(theta), radius * torch.sin(theta)
    centres = torch.linspace(-EXTENT, EXTENT, GRID, dtype=features.dtype)
    columns = torch.exp(-((x[..., None] - centres) ** 2) / (2 * sigma**2))  # (B, T, GRID)
    rows = torch.exp(-((y[..., None] - centres.flip(0)) ** 2) / (2 * sigma**2))  # row 0 at the top
    splats = rows[..., :, None] * columns[..., None, :]  # (B, T, GRID, GRID)
    splats = splats / splats.sum((-2, -1), keepdim=True).clamp_min(1e-12)
    weight = (intensity * mask.to(features.dtype))[..., None, None]
    return (weight * splats).sum(1)[:, None]


def load_cell(range_deg: float, tilt_digits: int, train_size: int, data_seed: int = 0) -> dict:
    """The task's splits as tensors (features, angles, mask, labels, rotation, digit), held out as the
    geo transformer's runs hold them out (`TEST_FRACTION`)."""
    from train.tasks import RotatedDigits

    options = RotatedDigits.Options(
        rotation_range=range_deg, train_size=train_size, tilt_digits=tilt_digits, data_seed=data_seed,
        test_fraction=TEST_FRACTION,
    )  # fmt: skip
    task = RotatedDigits(options)
    splits = task.build()
    out = {}
    for name, split in splits.items():
        split = split.with_format("torch")[:]
        labels = split["labels"]
        out[name] = {
            "features": split["features"].float(),
            "angles": split["positions"].float(),
            "mask": split["attention_mask"],
            "labels": labels,
            "rotation": split["rotation"].double(),
            "digit": labels % 10,
        }
    out["tilt"] = (tilt_digits, math.radians(range_deg / 2), math.radians(range_deg))
    return out


def images(split: dict, sigma: float | None = None) -> torch.Tensor:
    return rasterise(split["features"], split["angles"], split["mask"], sigma=sigma)


def fit_svm(cell: dict) -> dict:
    """The RBF SVM with the splat (bilinear or a Gaussian's width), C and gamma chosen on the validation
    split."""
    from sklearn.svm import SVC

    y = {k: cell[k]["labels"].numpy() for k in ("train", "validation", "test")}
    best = (-1.0, None, None, {})
    for sigma in SPLATS:
        x = {k: images(cell[k], sigma).flatten(1).numpy() for k in ("train", "validation", "test")}
        scale = float((x["train"] ** 2).sum(1).mean())
        for C in (1.0, 10.0, 100.0, 1000.0):
            for g in (0.001, 0.003, 0.01, 0.03, 0.1):
                model = SVC(C=C, gamma=g * 100 / scale).fit(x["train"], y["train"])
                accuracy = float((model.predict(x["validation"]) == y["validation"]).mean())
                if accuracy > best[0]:
                    best = (accuracy, model, x["test"], {"C": C, "gamma": g, "sigma": sigma})
    accuracy, model, test, chosen = best
    return {"validation": accuracy, "test": float((model.predict(test) == y["test"]).mean()), **chosen}


class SmallCNN(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * (GRID // 4) ** 2, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _augmented(split: dict, index: torch.Tensor, tilt, generator: torch.Generator):
    """The examples ``index`` rotated afresh from upright within the training range (labels follow)."""
    tilt_digits, threshold, half_range = tilt
    new = (2 * torch.rand(len(index), generator=generator, dtype=torch.float64) - 1) * half_range
    extra = (new - split["rotation"][index]).float()
    x = rasterise(split["features"][index], split["angles"][index], split["mask"][index], extra)
    digit = split["digit"][index]
    labels = torch.where((digit < tilt_digits) & (new.abs() > threshold), digit + 10, digit)
    return x, labels


def fit_cnn(cell: dict, *, augment: bool, seed: int, epochs: int = 200, patience: int = 40) -> dict:
    torch.manual_seed(seed)
    classes = 10 + cell["tilt"][0]
    model = SmallCNN(classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = cell["train"]
    fixed = {k: images(cell[k]) for k in ("train", "validation", "test")}
    generator = torch.Generator().manual_seed(seed)

    def accuracy(split: str) -> float:
        model.eval()
        with torch.no_grad():
            out = float((model(fixed[split]).argmax(-1) == cell[split]["labels"]).float().mean())
        model.train()
        return out

    best, since, started = {"validation": -1.0}, 0, time.perf_counter()
    n = len(train["labels"])
    for epoch in range(1, epochs + 1):
        for index in torch.randperm(n, generator=generator).split(64):
            if augment:
                x, y = _augmented(train, index, cell["tilt"], generator)
            else:
                x, y = fixed["train"][index], train["labels"][index]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        validation = accuracy("validation")
        if validation > best["validation"]:
            best, since = {"validation": validation, "test": accuracy("test"), "epoch": epoch}, 0
        else:
            since += 1
            if since >= patience:
                break
    best["seconds"] = time.perf_counter() - started
    return best


CELLS = {  # name: (rotation range in degrees, tilt digits)
    "rotated_45": (45.0, 0),
    "full_circle": (180.0, 0),
    "tilt_45": (45.0, 10),
}
TRAIN_SIZES = (50, 100, 300, 1000)


METHODS = ("rbf_svm", "cnn", "cnn_aug")


def run(
    data_seeds: int | Sequence[int] = 5,
    sizes=TRAIN_SIZES,
    cells=CELLS,
    epochs: int = 200,
    cache=None,
    log=print,
    methods=METHODS,
) -> list[dict]:
    """Every cell x size x data seed (the task's ``data_seed``: the split and the rotations;
    ``data_seeds``, the first n or the seeds themselves): the SVM, and the CNN with and without
    augmentation (initialised from the same seed). Rows already in the JSON-lines file ``cache`` are
    kept; new ones are appended, so a run cut short resumes. ``methods`` picks among `METHODS`."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; expected some of {list(METHODS)}")
    done = {}
    if cache is not None and cache.is_file():
        for line in cache.read_text().splitlines():
            row = json.loads(line)
            if row.get("test_fraction") == TEST_FRACTION:  # a row on another split is not this protocol's
                done[row["cell"], row["train_size"], row["method"], row["data_seed"]] = row
    rows = []
    seeds = range(data_seeds) if isinstance(data_seeds, int) else data_seeds
    for data_seed in seeds:  # seed by seed: a run cut short keeps whole seeds
        for name, (range_deg, tilt) in cells.items():
            for size in sizes:
                cell = None
                for method in methods:
                    key = (name, size, method, data_seed)
                    if key not in done:
                        cell = cell or load_cell(range_deg, tilt, size, data_seed)
                        if method == "rbf_svm":
                            result = fit_svm(cell)
                        else:
                            result = fit_cnn(cell, augment=method == "cnn_aug", seed=data_seed, epochs=epochs)
                        labels = {"cell": name, "train_size": size, "method": method, "data_seed": data_seed,
                                  "test_fraction": TEST_FRACTION}  # fmt: skip
                        done[key] = {**labels, **result}
                        if cache is not None:
                            with cache.open("a") as file:
                                file.write(json.dumps(done[key]) + "\n")
                        log(done[key])
                    rows.append(done[key])
    return rows


def summary(rows: list[dict]) -> dict:
    """{cell: {train_size: {method: (mean, std) of test accuracy in %}}} over the rows' seeds."""
    out: dict = {}
    for r in rows:
        out.setdefault(r["cell"], {}).setdefault(str(r["train_size"]), {}).setdefault(r["method"], []).append(
            100 * r["test"]
        )
    for sizes in out.values():
        for methods in sizes.values():
            for method, values in methods.items():
                methods[method] = (float(np.mean(values)), float(np.std(values)))
    return out
