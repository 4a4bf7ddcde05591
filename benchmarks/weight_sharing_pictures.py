"""Regenerate the weight-sharing pictures (Weiler et al. 2023) under docs/: one colour per parameter.

python benchmarks/weight_sharing_pictures.py [--out docs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geo_pe.equivariance import (
    CirculantLinear,
    DeepSetsLinear,
    InvariantPooling,
    ProductSetLinear,
    SnTensorLinear,
    draw_weight_sharing,
)

PICTURES = {
    "deepsets_n8.png": (DeepSetsLinear(8), "DeepSets, S_8 on sets: a I + b 11^T (2 parameters)"),
    "maron_s5_order2.png": (SnTensorLinear(5, 2, 2), "S_5, order 2 -> 2 (15 parameters)"),
    "hartford_s3xs4.png": (ProductSetLinear((3, 4)), "S_3 x S_4 on 3 x 4 arrays (4 parameters)"),
    "circulant_n8.png": (CirculantLinear(8), "C_8 cyclic shifts: circulant (8 parameters)"),
    "pooling_n8.png": (InvariantPooling(8, 1, 3), "C_8 / S_8 invariant pooling, 3 outputs (3 parameters)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"))
    args = parser.parse_args()
    for name, (layer, title) in PICTURES.items():
        path = draw_weight_sharing(layer, Path(args.out) / name, title=title)
        print(path)


if __name__ == "__main__":
    main()
