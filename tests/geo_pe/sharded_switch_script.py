"""Run by tests/geo_pe/test_sharded.py under torchrun (2 CPU processes, gloo): FSDP2 phase I training,
the sharded phase switch, phase II training; rank 0 writes what the test checks."""

import json
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

from geo_pe.phases import switch_phase_sharded
from models import GeoTransformerConfig, GeoTransformerForSequenceClassification


def shard(model):
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)


def full_state(model):
    return {k: v.detach().clone() for k, v in get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True)).items()}  # fmt: skip


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = GeoTransformerConfig(
        feature_size=3, hidden_size=24, num_attention_heads=4, pe_absolute="so2:1x1+1x2",
        pe_relative="so2:1x1+1x2+2x0", phase_history=["equivariant"], num_labels=3,
    )  # fmt: skip
    model = GeoTransformerForSequenceClassification(config)
    shard(model)
    gen = torch.Generator().manual_seed(1)
    features, angles = torch.randn(8, 5, 3, generator=gen), torch.rand(8, 5, generator=gen) * 6
    labels = torch.randint(0, 3, (8,), generator=gen)
    mine = slice(rank * 8 // world, (rank + 1) * 8 // world)

    def train(model, steps):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(steps):
            loss = model(features=features[mine], positions=angles[mine], labels=labels[mine]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
        return losses

    train(model, 3)
    model.eval()
    with torch.no_grad():
        before = model(features=features, positions=angles).logits
    phase_one = full_state(model)
    model, report = switch_phase_sharded(
        model, "free", rebuild=lambda: GeoTransformerForSequenceClassification(config), shard=shard
    )
    with torch.no_grad():
        after = model.eval()(features=features, positions=angles).logits
    switched = full_state(model)
    model.train()
    losses = train(model, 4)
    phase_two = full_state(model)
    if rank == 0:
        save_file(phase_one, f"{out}/phase_one.safetensors")
        save_file(switched, f"{out}/switched.safetensors")
        save_file(phase_two, f"{out}/phase_two.safetensors")
        torch.save({"before": before, "after": after, "features": features, "angles": angles}, f"{out}/io.pt")
        with open(f"{out}/result.json", "w") as f:
            json.dump({"world": world, "losses": losses, "max_weight_change": report.max_weight_change,
                       "phase_history": model.config.phase_history}, f)  # fmt: skip
    dist.barrier()  # rank 0 has written everything before any process tears the group down
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
