"""Training with Accelerate: ``geo-pe-train --config quickstart`` (or ``accelerate launch -m train``).

`load_config` reads a YAML file plus command-line overrides into a typed `RunConfig`; `train` runs the
two-phase schedule (phase I in a symmetric subspace, phase II freed), evaluates, checkpoints (resumable
exactly) and saves a model that ``AutoModel.from_pretrained`` loads. Tasks are `datasets` built
locally and registered with `register_task`.
"""

import importlib.util
import sys
from pathlib import Path


def _refuse_a_shadowed_models_package() -> None:
    """geo-pe installs the top-level packages ``models`` and ``train`` side by side. A ``models/`` folder
    or ``models.py`` in the working directory comes first on ``sys.path`` under ``python -m train``
    and ``accelerate launch -m train``: name it in one line instead of failing deep in an import."""
    spec = importlib.util.find_spec("models")
    ours = Path(__file__).resolve().parents[1] / "models" / "__init__.py"
    found = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if found == ours:
        return
    problem = (
        f"models: {found or 'nothing'} is imported as geo-pe's models package ({ours} expected); a models "
        "folder or models.py of your own in the working directory shadows it: run geo-pe-train (which does "
        "not read the working directory first), or run from another directory"
    )
    if sys.argv and sys.argv[0] == "-m":  # python -m train: the command line gets one line and status 2
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    raise ImportError(problem)


_refuse_a_shadowed_models_package()

from train.checkpoint import CheckpointError  # noqa: E402
from train.config import ModelArguments, RunConfig, TrainArguments, load_config  # noqa: E402
from train.loop import TrainerState, train  # noqa: E402
from train.tasks import TASKS, RotatedDigits, Task, register_task  # noqa: E402
from train.validation import ConfigError  # noqa: E402

__all__ = [
    "TASKS",
    "CheckpointError",
    "ConfigError",
    "ModelArguments",
    "RotatedDigits",
    "RunConfig",
    "Task",
    "TrainArguments",
    "TrainerState",
    "load_config",
    "register_task",
    "train",
]
