"""The phase switch under FSDP2 on 2 CPU processes (gloo): gather, set_phase, shard again. Checked
against the unsharded switch of the same phase I weights (an independent single-process computation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models import GeoTransformerConfig, GeoTransformerForSequenceClassification

SCRIPT = Path(__file__).with_name("sharded_switch_script.py")


@pytest.mark.slow  # two processes: the default run launches one pair (test_fsdp)
def test_fsdp2_phase_switch_on_two_processes_matches_the_unsharded_switch(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(SCRIPT), str(tmp_path)]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world"] == 2 and result["phase_history"] == ["equivariant", "free"]
    assert result["max_weight_change"] < 1e-5  # set_phase's own check: the same function
    io = torch.load(tmp_path / "io.pt")
    torch.testing.assert_close(io["after"], io["before"], atol=1e-5, rtol=1e-5)  # sharded, same function
    # the unsharded switch of the gathered phase I weights gives the gathered phase II start
    config = GeoTransformerConfig(
        feature_size=3, hidden_size=24, num_attention_heads=4, pe_absolute="so2:1x1+1x2",
        pe_relative="so2:1x1+1x2+2x0", phase_history=["equivariant"], num_labels=3,
    )  # fmt: skip
    reference = GeoTransformerForSequenceClassification(config)
    reference.load_state_dict(load_file(tmp_path / "phase_one.safetensors"))
    reference.set_phase("free")
    switched = load_file(tmp_path / "switched.safetensors")
    assert switched.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(switched[key], value, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        logits = reference.eval()(features=io["features"], positions=io["angles"]).logits
    torch.testing.assert_close(logits, io["after"], atol=1e-5, rtol=1e-5)
    # phase II trains the freed weights on both shards
    trained = load_file(tmp_path / "phase_two.safetensors")
    moved = max(float((trained[k] - switched[k]).abs().max()) for k in switched)
    assert moved > 1e-3 and all(torch.isfinite(torch.tensor(result["losses"])))


def test_carried_optimizer_state_is_what_rebuild_optimizer_keeps():
    """Unsharded, where `rebuild_optimizer` is the reference: carrying by name keeps the state of exactly
    the parameters that survive the switch (norms, MLP, head), and not of the replaced coefficients."""
    from geo_pe.phases import carry_optimizer_state, rebuild_optimizer

    config = GeoTransformerConfig(
        feature_size=3, hidden_size=24, num_attention_heads=4, pe_absolute="so2:1x1+1x2",
        pe_relative="so2:1x1+1x2+2x0", phase_history=["equivariant"], num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GeoTransformerForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model(
        features=torch.randn(4, 5, 3), positions=torch.rand(4, 5) * 6, labels=torch.tensor([0, 1, 2, 0])
    ).loss
    loss.backward()
    optimizer.step()
    old_parameters = dict(model.named_parameters())
    model.set_phase("free")
    reference = rebuild_optimizer(optimizer, model)
    carried = carry_optimizer_state(old_parameters, optimizer, model, torch.optim.AdamW(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    kept = {names[id(p)] for p in reference.state}
    assert kept and kept == {names[id(p)] for p in carried.state}
    assert not any("weight_param.value" in n for n in kept)  # the freed weights start afresh
    for p in reference.state:
        assert carried.state[p]["exp_avg"] is reference.state[p]["exp_avg"]
