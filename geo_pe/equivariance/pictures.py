"""Pictures of weight-sharing patterns: one colour per independent parameter (Weiler et al. 2023)."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["draw_weight_sharing", "weight_sharing_pattern"]


def weight_sharing_pattern(basis: torch.Tensor, *, tol: float = 1e-9) -> torch.Tensor:
    """Label each weight by the basis element that dominates it: ``(m, n)``, -1 where all vanish.

    Exact for orbit bases (each weight in one orbit); for other bases, a readable summary.
    """
    if basis.dim() != 3:
        raise ValueError(f"basis: expected shape (k, m, n), got {tuple(basis.shape)}")
    if basis.shape[0] == 0:
        return torch.full(basis.shape[1:], -1, dtype=torch.long)
    magnitude = basis.abs()
    pattern = magnitude.argmax(dim=0)
    pattern[magnitude.max(dim=0).values <= tol] = -1
    return pattern


def draw_weight_sharing(source, path: str | Path, *, title: str | None = None, cell: float = 0.32) -> Path:
    """Save a PNG of the weight-sharing pattern of a layer, a basis ``(k, m, n)`` or a pattern ``(m, n)``.

    Needs matplotlib (``pip install geo-pe[plots]``). Returns the path written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("draw_weight_sharing needs matplotlib: pip install 'geo-pe[plots]'") from err
    if hasattr(source, "weight_sharing_pattern"):
        pattern = source.weight_sharing_pattern()
    elif isinstance(source, torch.Tensor) and source.dim() == 3:
        pattern = weight_sharing_pattern(source)
    elif isinstance(source, torch.Tensor) and source.dim() == 2:
        pattern = source.long()
    else:
        raise ValueError(
            "source: expected a layer with weight_sharing_pattern(), a basis (k, m, n) or a pattern (m, n)"
        )
    pattern = pattern.cpu()
    k = int(pattern.max()) + 1
    base = plt.get_cmap("tab20" if k <= 20 else "hsv", max(k, 1))
    colours = [(1, 1, 1, 1)] + [base(i % base.N) for i in range(k)]  # white for "no weight"
    m, n = pattern.shape
    fig, ax = plt.subplots(figsize=(max(2.0, n * cell), max(2.0, m * cell)))
    ax.imshow(pattern.numpy() + 1, cmap=ListedColormap(colours), vmin=0, vmax=k, interpolation="nearest")
    ax.set_xticks([x - 0.5 for x in range(1, n)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, m)], minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6 if max(m, n) <= 40 else 0.0)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title or f"{k} independent parameters", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
