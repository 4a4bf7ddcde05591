"""Fully sharded training (FSDP2, ``torch.distributed.fsdp.fully_shard``), applied by the trainer itself.

Accelerate enables its FSDP plugin on GPUs only; on a CPU it runs plain data parallel. So that CPU
processes (gloo) and GPUs (NCCL) take one route, and CI tests the route GPUs take, the trainer reads the
launcher's FSDP settings (``accelerate launch --config_file configs/accelerate/fsdp.yaml``), takes them
away from Accelerate, and shards the model itself:

* every module of the shard-unit class (``fsdp_transformer_layer_cls_to_wrap``, GeoTransformerLayer) and
  then the root get ``fully_shard``; the optimizer is built on the sharded (DTensor) parameters;
* the phase switch gathers the full weights, switches an unsharded copy and shards it again
  (`geo_pe.phases.switch_phase_sharded`);
* ``save_pretrained`` writes a gathered full state dict (`full_state_dict`), never the live DTensors;
* checkpoints are sharded: each process writes its shards of the weights and the optimizer state through
  ``torch.distributed.checkpoint`` (`save_sharded`, `load_sharded`), so a resume is bit-exact.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from train.validation import ConfigError

__all__ = [
    "ShardingPlan",
    "full_state_dict",
    "load_full_state_dict",
    "load_sharded",
    "save_sharded",
]

_TRUE = ("true", "1", "yes")


@dataclass(frozen=True)
class ShardingPlan:
    """Which modules are shard units, and whether their parameters are freed after the forward."""

    layer_classes: tuple[str, ...] = ("GeoTransformerLayer",)
    reshard_after_forward: bool = True

    @classmethod
    def from_launcher(cls, environ: MutableMapping[str, str] | None = None) -> ShardingPlan | None:
        """The plan that ``accelerate launch`` passed in the environment, or None without FSDP. Takes
        ``ACCELERATE_USE_FSDP`` out of ``environ``, so that Accelerate itself wraps nothing."""
        environ = os.environ if environ is None else environ
        if environ.get("ACCELERATE_USE_FSDP", "false").lower() not in _TRUE:
            return None
        version = environ.get("FSDP_VERSION", "1")
        if version != "2":
            raise ConfigError(
                f"fsdp_version: geo-pe shards with FSDP2 (fully_shard); set fsdp_version: 2 in the "
                f"accelerate config, got {version}"
            )
        for key, what in (
            ("FSDP_OFFLOAD_PARAMS", "fsdp_offload_params"),
            ("FSDP_ACTIVATION_CHECKPOINTING", "fsdp_activation_checkpointing"),
        ):
            if environ.get(key, "false").lower() in _TRUE:
                raise ConfigError(f"{what}: not supported by the geo-pe trainer; set it to false")
        policy = environ.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
        if policy == "NO_WRAP":
            classes: tuple[str, ...] = ()
        elif policy == "TRANSFORMER_BASED_WRAP":
            names = environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "GeoTransformerLayer")
            classes = tuple(name.strip() for name in names.split(",") if name.strip())
        else:
            raise ConfigError(
                f"fsdp_auto_wrap_policy: expected TRANSFORMER_BASED_WRAP or NO_WRAP, got {policy}"
            )
        reshard = environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in _TRUE
        environ.pop("ACCELERATE_USE_FSDP")
        return cls(classes, reshard)

    def check(self, model: nn.Module) -> None:
        """`ConfigError` unless ``model`` has a module of every shard-unit class."""
        present = {type(m).__name__ for m in model.modules()}
        missing = [name for name in self.layer_classes if name not in present]
        if missing:
            raise ConfigError(
                f"fsdp_transformer_layer_cls_to_wrap: the model has no {', '.join(missing)} modules to "
                "shard; its shard unit is GeoTransformerLayer"
            )

    def shard(self, model: nn.Module) -> nn.Module:
        """``fully_shard`` every shard unit, then the root (in place); returns ``model``."""
        from torch.distributed.fsdp import fully_shard

        ensure_process_group()
        units = [m for m in model.modules() if type(m).__name__ in self.layer_classes]
        for unit in units:
            fully_shard(unit, reshard_after_forward=self.reshard_after_forward)
        fully_shard(model, reshard_after_forward=self.reshard_after_forward)
        return model


def ensure_process_group() -> None:
    """A one-process group when the launcher started a single process (``fully_shard`` needs a group)."""
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The gathered full weights on the CPU, on process 0 (``{}`` elsewhere). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load full weights held by process 0 into the sharded ``model`` (broadcast to the others)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    # the broadcast frees the storage of the tensors it sends: hand it copies, the caller keeps ``state``
    set_model_state_dict(model, {k: v.clone() for k, v in state.items()}, options=options)


def save_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Each process writes its shards of the weights and the optimizer state under ``directory``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": weights, "optimizer": optimizer_state}, checkpoint_id=str(directory))


def load_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Read back what `save_sharded` wrote, into a model sharded and an optimizer built as they were."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": weights, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
