"""Entry point: ``accelerate launch -m train --config FILE [--key value ...]`` or ``python -m train``."""

from __future__ import annotations

import sys

from train.checkpoint import CheckpointError
from train.config import load_config
from train.loop import train
from train.validation import ConfigError


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
        train(config)
    except (ConfigError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
