"""The weight average (``ema_decay``): the recurrence against a float64 reference, the swap, exact
equivariance of an averaged phase I, and resume."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.train.conftest import tiny
from train import ConfigError, load_config, train
from train.averaging import WeightAverage
from train.monitor import read_log


def reference_average(trajectory: list[torch.Tensor], decay: float) -> torch.Tensor:
    """The average after each step, written as the recurrence in float64 scalars."""
    average = trajectory[0].double().clone()
    for updates, weights in enumerate(trajectory[1:]):
        rate = 1.0 - min(decay, (1 + updates) / (10 + updates))
        average = (1 - rate) * average + rate * weights.double()
    return average


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_average_follows_its_recurrence_and_skips_frozen_parameters(dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)).to(dtype)
    model[1].bias.requires_grad_(False)
    average = WeightAverage(model, decay=0.9)
    assert average.names == ["0.weight", "0.bias", "1.weight"]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    trajectory = [model[0].weight.detach().clone()]
    for _ in range(40):
        model(torch.randn(8, 4, dtype=dtype)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        average.update()
        trajectory.append(model[0].weight.detach().clone())
    expected = reference_average(trajectory, 0.9).to(dtype)
    torch.testing.assert_close(average.average[0], expected)
    assert not torch.allclose(average.average[0], model[0].weight)  # the average lags the weights


def test_applied_swaps_the_average_in_and_restores_the_weights_bit_for_bit():
    torch.manual_seed(1)
    model = torch.nn.Linear(5, 5)
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(torch.randn(5, 5))
    average.update()
    own = model.weight.detach().clone()
    x = torch.randn(3, 5)
    with average.applied():
        torch.testing.assert_close(model.weight, average.average[0], rtol=0, atol=0)
        inside = model(x)
    assert torch.equal(model.weight, own)
    expected = torch.nn.functional.linear(x, average.average[0], average.average[1])
    torch.testing.assert_close(inside, expected, rtol=0, atol=0)


def test_a_checkpointed_average_must_match_the_model():
    average = WeightAverage(torch.nn.Linear(3, 2), decay=0.9)
    state = average.state_dict()
    WeightAverage(torch.nn.Linear(3, 2), decay=0.9).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"ema_decay: the checkpoint's average of weight has shape"):
        WeightAverage(torch.nn.Linear(4, 2), decay=0.9).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"ema_decay: the checkpoint's weight average does not match"):
        WeightAverage(torch.nn.Linear(3, 2, bias=False), decay=0.9).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"ema_decay: expected a decay in \(0, 1\)"):
        WeightAverage(torch.nn.Linear(3, 2), decay=1.0)


def test_an_averaged_run_stays_equivariant_in_phase_one_and_resumes_exactly(tmp_path, data_cache):
    whole, split, plain = tmp_path / "whole", tmp_path / "split", tmp_path / "plain"
    ema = ("--ema_decay", "0.8", "--load_best_model_at_end", "false")
    results = train(load_config(tiny(whole, data_cache, *ema)))
    assert results["phases"][0]["equivariance_error"] < 1e-5  # the average of equivariant weights
    evals = [r for r in read_log(whole / "log.jsonl") if r["kind"] == "eval"]
    assert all(r["equivariance_error"] < 1e-5 for r in evals if r["phase"] == "equivariant")
    # the saved model is the average, not the last weights
    train(load_config(tiny(plain, data_cache, "--load_best_model_at_end", "false")))
    averaged, last = (load_file(str(run / "phase1_model" / "model.safetensors")) for run in (whole, plain))
    assert any(not torch.equal(averaged[k], last[k]) for k in last)
    # stopped in phase II and resumed: the checkpointed average carries on exactly
    train(load_config(tiny(split, data_cache, *ema, "--stop_after_steps", "9")))
    assert (split / "checkpoints" / "step_00000009" / "average.safetensors").is_file()
    train(load_config(tiny(split, data_cache, *ema, "--resume")))
    a, b = (load_file(str(run / "model" / "model.safetensors")) for run in (whole, split))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
