"""Natural-image patches for the layerwise experiments: scikit-learn's two bundled photographs
(``load_sample_images``: a temple in China, a flower) cut into small patches with a fixed split.

Unlike 8x8 digits, whose left-right mirror images are mostly other digit-like images, natural patches
carry the mirror statistics of real scenes: edges at every orientation, no canonical side. Each image is
cut on a grid of ``size`` x ``size`` patches (stride ``stride``); the grid rows alternate between the
splits in blocks, so train and test patches never overlap.

    >>> train, test = natural_patches(size=16, stride=16)
    >>> train.shape[1:], test.shape[1:]
    (torch.Size([1, 16, 16]), torch.Size([1, 16, 16]))
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["natural_patches"]


def natural_patches(
    size: int = 16,
    *,
    stride: int | None = None,
    grey: bool = True,
    test_every: int = 5,
    return_sources: bool = False,
) -> tuple[torch.Tensor, ...]:
    """``(train, test)`` patches ``(n, channels, size, size)`` in [0, 1], float32. Every ``test_every``-th
    band of grid rows goes to the test split (bands are ``size`` rows tall, so no pixel is shared).
    With ``return_sources``, also ``(train_sources, test_sources)``: the photograph each patch came from
    (0 or 1), a mirror-invariant label."""
    if not (isinstance(size, int) and size >= 2):
        raise ValueError(f"size: expected an integer >= 2, got {size!r}")
    stride = size if stride is None else stride
    if not (isinstance(stride, int) and stride >= 1):
        raise ValueError(f"stride: expected a positive integer, got {stride!r}")
    if not (isinstance(test_every, int) and test_every >= 2):
        raise ValueError(f"test_every: expected an integer >= 2, got {test_every!r}")
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise ImportError(
            "natural_patches: needs scikit-learn (and Pillow) for the bundled photographs"
        ) from None
    train, test, train_sources, test_sources = [], [], [], []
    for source, image in enumerate(load_sample_images().images):
        pixels = image.astype(np.float32) / 255.0
        if grey:
            pixels = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            pixels = pixels[..., None]
        height, width = pixels.shape[:2]
        for top in range(0, height - size + 1, stride):
            band = top // size
            is_test = band % test_every == test_every - 1
            target, sources = (test, test_sources) if is_test else (train, train_sources)
            # a patch that reaches into another band's rows is dropped, so the splits never share pixels
            if (top + size - 1) // size != band:
                continue
            for left in range(0, width - size + 1, stride):
                target.append(pixels[top : top + size, left : left + size].transpose(2, 0, 1))
                sources.append(source)
    patches = torch.from_numpy(np.stack(train)), torch.from_numpy(np.stack(test))
    if not return_sources:
        return patches
    return *patches, torch.tensor(train_sources), torch.tensor(test_sources)
