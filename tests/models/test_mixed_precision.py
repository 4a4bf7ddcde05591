"""Mixed precision: every model, head and PE mode under CUDA's autocast policy (imitated on the CPU by
`geo_pe.amp.cuda_autocast_policy`) and held entirely in bf16, against the float32 model as the oracle."""

from __future__ import annotations

import pytest
import torch

from geo_pe.amp import cuda_autocast_policy
from models import (
    GeoTransformerConfig,
    GeoTransformerForEquivariantRegression,
    GeoTransformerForSequenceClassification,
    GeoTransformerForTokenClassification,
)
from tests.models.test_equivariant_heads import CASES as HEAD_CASES
from tests.models.test_equivariant_heads import make, sample
from tests.models.test_modeling import CASES, inputs, make_config

HALF = [torch.bfloat16, torch.float16]
# Relative error of a half-precision forward against float32: bf16 keeps 8 bits of mantissa, fp16 11.
RELATIVE_ERROR = {torch.bfloat16: 0.08, torch.float16: 0.02}

NBODY = dict(  # benchmarks/published/nbody.yaml: point attributes, pair geometry, GTA, gates
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=8,
    pe_absolute="s2@position:1x1+s2@velocity:1x1",
    pe_relative="s2@position:1x1+1x2",
    pe_relative_mode="gta",
    pe_gate=True,
    shared_rotations=[["position", "velocity"]],
    point_attributes=["position"],
    output_attribute="position",
    distance_bias=16,
    distance_bias_max=6.0,
    relative_point_values=True,
    feature_size=2,
    equivariant_target="position",
    equivariant_level="token",
    initializer_range=0.2,
)


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    y, reference = y.detach().double(), reference.detach().double()
    return float((y - reference).norm() / reference.norm())


def half_step(model, batch: dict, labels: torch.Tensor, dtype: torch.dtype):
    """One forward and backward under the CUDA policy; returns the outputs' logits or predictions."""
    model.zero_grad()
    with cuda_autocast_policy(dtype):
        out = model(**batch, labels=labels)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(g.dtype == torch.float32 for g in grads)  # autocast leaves the parameters in float32
    return out


@pytest.mark.parametrize("with_ids", [False, True], ids=["features", "ids+features"])
@pytest.mark.parametrize("phase", ["equivariant", "free"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("half", HALF, ids=["bf16", "fp16"])
def test_every_group_and_mode_trains_under_cuda_autocast(case, phase, with_ids, half):
    """Features alone make the input projection's output half precision under autocast: the case that
    crashed on a GPU (a float32 ``pow`` added into a bf16 buffer in ``token_invariants``)."""
    for cls, labels in (
        (GeoTransformerForSequenceClassification, torch.tensor([0, 2])),
        (GeoTransformerForTokenClassification, torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)),
    ):
        torch.manual_seed(0)
        model = cls(make_config(case, phase, initializer_range=0.1)).train()
        model.config.attention_dropout = model.config.classifier_dropout = 0.0
        batch = inputs(model.model, torch.float32)
        if not with_ids:
            batch.pop("input_ids")
        reference = model(**batch).logits
        out = half_step(model, batch, labels, half)
        assert relative_error(out.logits, reference) < RELATIVE_ERROR[half]


@pytest.mark.parametrize("level", ["sequence", "token"])
@pytest.mark.parametrize("case", list(HEAD_CASES))
@pytest.mark.parametrize("half", HALF, ids=["bf16", "fp16"])
def test_equivariant_heads_train_under_cuda_autocast(case, level, half):
    model = make(case, level, torch.float32, initializer_range=0.1).train()
    _, kind, _ = HEAD_CASES[case]
    batch = {"features": torch.randn(B := 3, T := 5, 2), "positions": sample(kind, (B, T), 1, torch.float32)}
    reference = model(**batch).predictions
    out = half_step(model, batch, torch.randn_like(reference), half)
    assert relative_error(out.predictions, reference) < RELATIVE_ERROR[half]


@pytest.mark.parametrize("target", ["vector", "symmetric_matrix", "matrix"])
@pytest.mark.parametrize("half", HALF, ids=["bf16", "fp16"])
def test_moment_readout_trains_under_cuda_autocast(target, half):
    from tests.models.test_equivariant_heads import cloud, moment_model

    model = moment_model(target, "sequence", torch.float32).train()
    batch = cloud(torch.float32)
    reference = model(**batch).predictions
    out = half_step(model, batch, torch.randn_like(reference), half)
    assert relative_error(out.predictions, reference) < RELATIVE_ERROR[half]


# EGNN's dynamics inside attention: signed pair weights, moving points, the raw velocity
DYNAMICS = dict(point_messages="signed", coordinate_updates=True, vector_inputs=["velocity"])


@pytest.mark.parametrize("dynamics", [False, True], ids=["static", "dynamics"])
@pytest.mark.parametrize("phase", ["equivariant", "free"])
@pytest.mark.parametrize("half", HALF, ids=["bf16", "fp16"])
def test_nbody_model_trains_under_cuda_autocast(phase, half, dynamics):
    torch.manual_seed(0)
    settings = {**NBODY, **(DYNAMICS if dynamics else {})}
    model = GeoTransformerForEquivariantRegression(GeoTransformerConfig(**settings, phase_history=[phase]))
    gen = torch.Generator().manual_seed(0)
    batch = {
        "features": torch.randn(4, 5, 2, generator=gen),
        "positions": {"position": torch.randn(4, 5, 3, generator=gen), "velocity": torch.randn(4, 5, 3)},
    }
    reference = model(**batch).predictions
    out = half_step(model, batch, reference.detach() + 0.1, half)
    assert relative_error(out.predictions, reference) < RELATIVE_ERROR[half]


@pytest.mark.parametrize("descriptors", [False, True], ids=["distances", "descriptors"])
@pytest.mark.parametrize("half", HALF, ids=["bf16", "fp16"])
def test_planar_digits_model_trains_under_cuda_autocast(half, descriptors):
    """Pixels as planar points with pairwise-distance biases (the digits benchmark's planar model), and
    with local descriptors: the angles, radii, radial functions and descriptors are read in float32
    whatever the policy."""
    from tests.models.test_equivariant_heads import planar_model

    torch.manual_seed(0)
    model = planar_model("origin", torch.float32, descriptors=descriptors).train()
    gen = torch.Generator().manual_seed(0)
    pixels = 3 * torch.randn(4, 6, 2, generator=gen)
    batch = {"features": torch.rand(4, 6, 1, generator=gen), "positions": pixels,
             "attention_mask": torch.tensor([[1] * 6] * 3 + [[1] * 4 + [0] * 2])}  # fmt: skip
    reference = model(**batch).logits
    if descriptors:  # the descriptors ignore the policy: float32, bit for bit
        args = ({"angle": pixels}, batch["features"], batch["attention_mask"].bool())
        eager = model.model._local_descriptors(*args)
        with cuda_autocast_policy(half):
            assert torch.equal(model.model._local_descriptors(*args), eager)
    out = half_step(model, batch, torch.tensor([0, 1, 2, 3]), half)
    assert relative_error(out.logits, reference) < RELATIVE_ERROR[half]


BF16_CASES = ["t1-rotary", "so3-gta", "t1xso3-absolute+gta", "se3-gta", "so3-absolute-gated"]


@pytest.mark.parametrize("case", BF16_CASES)
def test_a_model_held_in_bf16_runs_and_keeps_its_encodings_in_float32(case):
    torch.manual_seed(0)
    model = GeoTransformerForSequenceClassification(make_config(case, "free", initializer_range=0.1))
    batch = inputs(model.model, torch.float32)
    reference = model(**batch).logits
    model = model.to(torch.bfloat16)
    low = dict(batch, features=batch["features"].to(torch.bfloat16))  # positions stay float32
    out = model(**low, labels=torch.tensor([0, 1]))
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert relative_error(out.logits, reference) < 0.1


def test_the_policy_runs_ops_in_cudas_dtypes():
    """The harness itself, against PyTorch's published CUDA lists."""
    x, w = torch.randn(4, 8), torch.randn(8, 8)
    with cuda_autocast_policy(torch.bfloat16):
        y = x @ w
        assert y.dtype == torch.bfloat16
        assert y.pow(2).dtype == y.sum().dtype == y.softmax(-1).dtype == torch.float32
        assert torch.addcmul(y, x, x).dtype == torch.float32  # promotes to the widest input
        assert (y + 1).dtype == torch.bfloat16  # outside the lists: unchanged
        with torch.autocast("cpu", enabled=False):
            assert (x @ w).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"), cuda_autocast_policy(torch.float32):
        pass
