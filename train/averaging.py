"""An exponential moving average of a model's trainable weights, evaluated and kept in place of them.

With decay d, after the n-th optimizer step of a phase the average moves toward the weights by
1 - min(d, (1 + n) / (10 + n)): the short warm-up keeps the first averages from clinging to the weights
the phase started from (Polyak and Juditsky 1992; the warm-up as in TensorFlow's
``ExponentialMovingAverage(num_updates=...)``).

Averaging preserves every linear constraint the parameters satisfy, so a phase I model held in the
equivariant subspace stays exactly equivariant when its weights are averaged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from train.validation import ConfigError


class WeightAverage:
    """The moving average of ``model``'s trainable floating-point parameters (the model's own tensors are
    read, never replaced). ``applied()`` swaps the average into the model for a block (evaluation)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema_decay: expected a decay in (0, 1), got {decay}")
        self.decay = decay
        self.names, self.parameters = [], []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and parameter.is_floating_point():
                self.names.append(name)
                self.parameters.append(parameter)
        self.average = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    def rate(self) -> float:
        """The weight of the current parameters in the next update."""
        return 1.0 - min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average toward the current weights (after each optimizer step)."""
        torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], self.rate())
        self.updates += 1

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Make the average the model's weights (in place: optimizers and compiled graphs keep theirs)."""
        for parameter, average in zip(self.parameters, self.average, strict=True):
            parameter.copy_(average)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model runs on the averaged weights inside the block and on its own weights after it."""
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.parameters]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, own in zip(self.parameters, saved, strict=True):
                    parameter.copy_(own)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averages by parameter name, and the update count (for checkpoints)."""
        pairs = zip(self.names, self.average, strict=True)
        state = {name: average.detach().cpu().contiguous() for name, average in pairs}
        state["__updates__"] = torch.tensor(self.updates)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict()``; the parameter names and shapes must be the model's."""
        names = set(state) - {"__updates__"}
        if names != set(self.names) or "__updates__" not in state:
            missing, unexpected = sorted(set(self.names) - names), sorted(names - set(self.names))
            raise ConfigError(
                f"ema_decay: the checkpoint's weight average does not match the model "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        with torch.no_grad():
            for name, average in zip(self.names, self.average, strict=True):
                if state[name].shape != average.shape:
                    raise ConfigError(
                        f"ema_decay: the checkpoint's average of {name} has shape "
                        f"{tuple(state[name].shape)}, the model's {tuple(average.shape)}"
                    )
                average.copy_(state[name])
        self.updates = int(state["__updates__"])
