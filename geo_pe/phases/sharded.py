"""The phase switch of a model sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``).

`set_phase` builds new parametrisations from the current weights, which a sharded model holds in pieces
(DTensor shards) across processes. `switch_phase_sharded` gathers the full weights on every process,
loads them into a fresh unsharded copy of the model, switches that copy's phase (the same function,
checked by `set_phase`) and shards it again::

    model, report = switch_phase_sharded(
        model, "free", rebuild=lambda: GeoTransformerForSequenceClassification(config), shard=shard_layers
    )
    optimizer = carry_optimizer_state(old_parameters, old_optimizer, model, torch.optim.AdamW(...))

Every process must call it (the gather is a collective). ``rebuild()`` returns the model's architecture in
its current phase (for the HF models: the class and the config, whose ``phase_history`` is the phase
state); ``shard(module)`` applies ``fully_shard`` as the training script did. The new model's parameters
are new objects: `carry_optimizer_state` carries the optimizer state of those that survive the switch
(by name), as `rebuild_optimizer` does for an unsharded model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from geo_pe.phases.phase import PhaseReport, set_phase

__all__ = ["carry_optimizer_state", "switch_phase_sharded"]


def switch_phase_sharded(
    model: nn.Module,
    phase: str,
    *,
    rebuild: Callable[[], nn.Module],
    shard: Callable[[nn.Module], object],
    **set_phase_arguments,
) -> tuple[nn.Module, PhaseReport]:
    """``(the model in ``phase``, sharded again, and the switch's report)``; see the module docstring.
    Keyword arguments go to ``model.set_phase`` (HF models) or `geo_pe.phases.set_phase`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))  # collective
    fresh = rebuild()
    try:
        fresh.load_state_dict(full)
    except RuntimeError as err:
        raise ValueError(
            "rebuild: the rebuilt model does not match the sharded one; build it in the current phase "
            f"({err})"
        ) from None
    if hasattr(fresh, "set_phase"):
        report = fresh.set_phase(phase, **set_phase_arguments)
    else:
        report = set_phase(fresh, phase, **set_phase_arguments)
    shard(fresh)
    return fresh, report


def carry_optimizer_state(
    old_parameters: dict[str, nn.Parameter],
    old_optimizer: torch.optim.Optimizer,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> torch.optim.Optimizer:
    """Give ``optimizer`` (built on ``model``) the state that ``old_optimizer`` held for the parameter of the
    same name, shape and sharding in ``old_parameters`` (``dict(old_model.named_parameters())`` taken
    before the switch). Parameters the switch replaced (phase I coefficients) start afresh. Returns
    ``optimizer``."""
    trainable = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, parameter in model.named_parameters():
        old = old_parameters.get(name)
        if old is None or id(parameter) not in trainable or old not in old_optimizer.state:
            continue
        if old.shape != parameter.shape or getattr(old, "placements", None) != getattr(
            parameter, "placements", None
        ):
            continue
        optimizer.state[parameter] = old_optimizer.state[old]
    return optimizer
