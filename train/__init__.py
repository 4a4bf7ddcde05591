"""Training with Accelerate: ``geo-pe-train --config quickstart`` (or ``accelerate launch -m train``).

`load_config` reads a YAML file plus command-line overrides into a typed `RunConfig`; `train` runs the
two-phase schedule (phase I in a symmetric subspace, phase II freed), evaluates, checkpoints (resumable
exactly) and saves a model that ``AutoModel.from_pretrained`` loads. Tasks are `datasets` built
locally and registered with `register_task`.
"""

from train.checkpoint import CheckpointError
from train.config import ModelArguments, RunConfig, TrainArguments, load_config
from train.loop import TrainerState, train
from train.tasks import TASKS, RotatedDigits, Task, register_task
from train.validation import ConfigError

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
