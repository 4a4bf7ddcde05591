"""The geo transformer: phase I symmetry for every group and mode, phase switches, HF loading, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import geo_pe
from geo_pe.reps.groups import ProductGroup
from geo_pe.testing import (
    action_of,
    assert_close_to_rounding,
    assert_equivariant,
    assert_same_weights,
    equivariance_error,
)
from models import (
    GeoTransformerConfig,
    GeoTransformerForSequenceClassification,
    GeoTransformerForSequenceRegression,
    GeoTransformerForTokenClassification,
    GeoTransformerModel,
)

B, T, FEATURES = 2, 6, 3

# Every group and mode of docs/design.md ("The model"). Head sizes align heads with the PE blocks.
CASES = {
    "t1-absolute": dict(pe_absolute="t1:4", pe_relative=None, hidden_size=24, num_attention_heads=3),
    "t1-rotary": dict(pe_relative="t1:4", hidden_size=16, num_attention_heads=2),
    "t1-gta": dict(pe_relative="t1:4", pe_relative_mode="gta", hidden_size=16, num_attention_heads=2),
    "t2-absolute+rotary": dict(pe_absolute="t2:4", pe_relative="t2:4", hidden_size=24, num_attention_heads=3),
    "so2-absolute": dict(pe_absolute="so2:4x1", pe_relative=None, hidden_size=24, num_attention_heads=3),
    "so2-rotary": dict(pe_relative="so2:1x0+2x1+1x3", hidden_size=14, num_attention_heads=2),
    "so2-gta": dict(
        pe_relative="so2:1x0+2x1+1x3", pe_relative_mode="gta", hidden_size=14, num_attention_heads=2
    ),
    "so3-absolute": dict(pe_absolute="so3:1x1", pe_relative=None, hidden_size=18, num_attention_heads=6),
    "so3-rotary": dict(pe_relative="so3:1x0+1x1+1x2", hidden_size=18, num_attention_heads=2),
    "so3-gta": dict(
        pe_relative="so3:1x0+1x1+1x2", pe_relative_mode="gta", hidden_size=18, num_attention_heads=2
    ),
    "t1xso3-absolute+gta": dict(
        pe_absolute="t1:1*so3:1x1",
        pe_relative="t1:1*so3:1x1",
        pe_relative_mode="gta",
        hidden_size=48,
        num_attention_heads=8,
    ),
    "t1+so3-rotary": dict(pe_relative="t1:2+so3:1x0+1x1", hidden_size=16, num_attention_heads=2),
    "s2-absolute+rotary": dict(
        pe_absolute="s2:1x1", pe_relative="s2:1x1", hidden_size=9, num_attention_heads=3
    ),
    "se3-rotary": dict(pe_relative="se3(scale=0.5):2xh+1x1", hidden_size=22, num_attention_heads=2),
    "se3-gta": dict(
        pe_relative="se3(scale=0.5):2xh+1x1", pe_relative_mode="gta", hidden_size=22, num_attention_heads=2
    ),
    "so3-absolute-gated": dict(
        pe_absolute="so3:1x1", pe_relative=None, hidden_size=18, num_attention_heads=6, pe_gate=True
    ),
    "s2-absolute+rotary-gated": dict(
        pe_absolute="s2:1x1", pe_relative="s2:1x1", hidden_size=9, num_attention_heads=3, pe_gate=True
    ),
    "t2-absolute+rotary-gated": dict(
        pe_absolute="t2:4", pe_relative="t2:4", hidden_size=24, num_attention_heads=3, pe_gate=True
    ),
    "se3-absolute+gta": dict(
        pe_absolute="se3:1x1",
        pe_relative="se3:1xh+1x2",
        pe_relative_mode="gta",
        hidden_size=27,
        num_attention_heads=3,
    ),
}
ABSOLUTE = [name for name in CASES if "absolute" in name]
RELATIVE_ONLY = [name for name in CASES if "absolute" not in name]


def make_config(case: str, phase: str = "equivariant", **overrides) -> GeoTransformerConfig:
    settings = dict(
        feature_size=FEATURES,
        vocab_size=11,
        num_hidden_layers=2,
        initializer_range=0.3,  # large weights: attention far from uniform, so symmetry errors show
        phase_history=[phase],
        num_labels=3,
    )
    return GeoTransformerConfig(**{**settings, **CASES[case], **overrides})


def inputs(model, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    space = ProductGroup(model.attribute_spaces)
    return {
        "input_ids": torch.randint(11, (B, T), generator=gen),
        "features": torch.randn(B, T, FEATURES, generator=gen, dtype=dtype),
        "positions": space.sample((B, T), generator=gen, dtype=dtype),
    }


def global_action(model):
    """The acting group h and ``(h, positions) -> h . positions`` for a model's attributes."""
    space = ProductGroup(model.attribute_spaces)
    return space.acting_group, space.act


def build(cls, config, dtype):
    torch.manual_seed(0)
    return cls(config).to(dtype).eval()


# --- phase I symmetry --------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", ["scalar_identity", "equivariant"])
@pytest.mark.parametrize("case", list(CASES))
def test_phase_one_is_equivariant_for_every_group_and_mode(case, phase, dtype):
    """Under g_i -> h g_i: token states move by rho_x(h), invariants and logits do not move."""
    model = build(GeoTransformerModel, make_config(case, phase), dtype)
    x = inputs(model, dtype)
    acting, act = global_action(model)

    def run(positions):
        out = model(input_ids=x["input_ids"], features=x["features"], positions=positions)
        return out.last_hidden_state, out.invariants

    def act_out(h, outputs):
        hidden, invariants = outputs
        return action_of(model.state_rep)(h, hidden), invariants

    assert_equivariant(run, x["positions"], acting, act_in=act, act_out=act_out, num_samples=4)
    # the test can fail: a non-equivariant action (the trivial one) on the hidden states is detected
    if "absolute" in case:
        wrong = equivariance_error(lambda p: run(p)[0], x["positions"], acting, act_in=act, num_samples=2)
        assert wrong > 1e-3


@pytest.mark.parametrize("case", ["so3-absolute", "t1xso3-absolute+gta", "so2-gta", "s2-absolute+rotary"])
def test_heads_are_invariant_with_padding(case, dtype):
    """Sequence logits (mean over valid tokens) and per-token logits of valid tokens are invariant."""
    config = make_config(case)
    seq = build(GeoTransformerForSequenceClassification, config, dtype)
    tok = build(GeoTransformerForTokenClassification, config, dtype)
    x = inputs(seq.model, dtype)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, -2:] = 0
    acting, act = global_action(seq.model)

    def run(positions):
        kwargs = dict(input_ids=x["input_ids"], positions=positions, attention_mask=mask)
        return seq(**kwargs).logits, tok(**kwargs).logits[mask.bool()]

    assert_equivariant(run, x["positions"], acting, act_in=act, num_samples=4)


def test_padding_does_not_change_valid_outputs(dtype):
    """Padded tokens (with garbage positions) do not influence the valid ones."""
    model = build(GeoTransformerModel, make_config("so3-gta"), dtype)
    x = inputs(model, dtype)
    short = {k: {a: v[:, :4] for a, v in x[k].items()} if k == "positions" else x[k][:, :4] for k in x}
    padded = {k: v for k, v in x.items()}
    padded["positions"] = {a: torch.full_like(v, float("nan")) for a, v in x["positions"].items()}
    padded["positions"] = {
        a: torch.cat((short["positions"][a], v[:, 4:]), 1) for a, v in padded["positions"].items()
    }
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]] * B)
    full = model(**padded, attention_mask=mask).last_hidden_state[:, :4]
    torch.testing.assert_close(full, model(**short).last_hidden_state)


def test_default_positions_are_token_indices():
    model = build(GeoTransformerModel, make_config("t1-rotary"), torch.float64)
    x = inputs(model, torch.float64)
    default = model(input_ids=x["input_ids"]).last_hidden_state
    explicit = model(input_ids=x["input_ids"], positions=torch.arange(T)).last_hidden_state
    assert_close_to_rounding(default, explicit)


def test_eager_and_sdpa_attention_agree():
    config = make_config("so3-gta")
    model = build(GeoTransformerModel, config, torch.float64)
    x = inputs(model, torch.float64)
    mask = torch.tensor([[1] * T, [1] * (T - 2) + [0, 0]])
    sdpa = model(**x, attention_mask=mask)
    model.config._attn_implementation = "eager"
    eager = model(**x, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    torch.testing.assert_close(eager.last_hidden_state, sdpa.last_hidden_state)
    assert len(eager.attentions) == config.num_hidden_layers and len(eager.hidden_states) == 3
    assert eager.attentions[0].shape == (B, config.num_attention_heads, T, T)
    torch.testing.assert_close(
        eager.attentions[0].sum(-1), torch.ones(B, config.num_attention_heads, T).double()
    )
    assert bool((eager.attentions[0][1, :, :, -2:] == 0).all())  # padded keys get no weight


def test_scalar_identity_projections_skip_matmuls():
    model = GeoTransformerModel(make_config("so3-absolute", "scalar_identity"))
    attn = model.layers[0].self_attn
    assert attn.q_proj.weight_param.scale.numel() == 1
    calls = []
    handle = torch.nn.functional.linear
    torch.nn.functional.linear = lambda *a, **k: calls.append(a[1].shape) or handle(*a, **k)
    try:
        model(
            features=torch.randn(1, 3, FEATURES),
            positions=ProductGroup(model.attribute_spaces).sample((1, 3)),
        )
    finally:
        torch.nn.functional.linear = handle
    hidden = model.config.hidden_size
    assert (hidden, hidden) not in calls  # no dense hidden x hidden projection ran


def test_head_losses_follow_hf_conventions():
    config = make_config("so2-rotary")
    x = inputs(GeoTransformerModel(config), torch.float64)
    seq = build(GeoTransformerForSequenceClassification, config, torch.float64)
    labels = torch.tensor([2, 0])
    out = seq(**x, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert seq.config.problem_type == "single_label_classification"
    tok = build(GeoTransformerForTokenClassification, config, torch.float64)
    token_labels = torch.randint(3, (B, T))
    token_labels[1, -2:] = -100
    out = tok(**x, labels=token_labels)
    keep = token_labels != -100
    torch.testing.assert_close(
        out.loss, torch.nn.functional.cross_entropy(out.logits[keep], token_labels[keep])
    )
    reg = build(GeoTransformerForSequenceRegression, make_config("so2-rotary", num_labels=1), torch.float64)
    targets = torch.tensor([0.5, -1.0], dtype=torch.float64)
    out = reg(**x, labels=targets)
    assert out.predictions.shape == (B,)
    torch.testing.assert_close(out.loss, ((out.predictions - targets) ** 2).mean())


# --- phase switches -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "first, second, extra",
    [
        ("scalar_identity", "free", {}),
        ("scalar_identity", "equivariant", {}),
        ("equivariant", "free", {}),
        ("equivariant", "subspace", {"subspace_dim": 40}),
        ("equivariant", "residual", {}),
        ("scalar_identity", "subspace", {"subspace_dim": 30, "subspace_projection": "sparse"}),
    ],
)
def test_switching_phase_keeps_the_function(first, second, extra):
    model = build(
        GeoTransformerForSequenceClassification, make_config("t1xso3-absolute+gta", first), torch.float64
    )
    x = inputs(model.model, torch.float64)
    before = model(**x).logits
    report = model.set_phase(second, **extra)
    assert report.max_weight_change < 1e-12
    torch.testing.assert_close(model(**x).logits, before, rtol=0, atol=1e-12)
    assert model.config.phase_history == [first, second] and model.config.phase == second


def _train_freely(model, x, steps=30):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    target = torch.tensor([0, 2])
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(**x).logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize(
    "case", ["so3-absolute", "so2-absolute", "t1xso3-absolute+gta", "so3-gta", "so2-rotary"]
)
def test_free_training_breaks_only_absolute_encodings(case):
    """Phase II free weights may break the symmetry of absolute encodings; relative ones stay invariant."""
    model = build(GeoTransformerForSequenceClassification, make_config(case), torch.float64).train()
    x = inputs(model.model, torch.float64)
    acting, act = global_action(model.model)

    def error():
        logits = lambda p: model(input_ids=x["input_ids"], features=x["features"], positions=p).logits  # noqa: E731
        with torch.no_grad():
            return equivariance_error(logits, x["positions"], acting, act_in=act, num_samples=4)

    assert error() < 1e-12
    model.set_phase("free")
    _train_freely(model, x)
    if "absolute" in case:
        assert error() > 1e-3
    else:
        assert error() < 1e-12


# --- serialisation ---------------------------------------------------------------------------------------
HISTORIES = {
    "scalar_identity": (["scalar_identity"], {}),
    "equivariant": (["equivariant"], {}),
    "free": (["equivariant", "free"], {}),
    "residual": (["equivariant", "residual"], {}),
    "subspace-fastfood": (["scalar_identity", "subspace"], {"subspace_dim": 50}),
    "subspace-sparse": (["equivariant", "subspace"], {"subspace_dim": 50, "subspace_projection": "sparse"}),
    "subspace-dense-per-layer": (
        ["equivariant", "subspace"],
        {"subspace_dim": 20, "subspace_projection": "dense", "shared_subspace": False},
    ),
}


def _trained(history, settings, cls=GeoTransformerForSequenceClassification, case="t1xso3-absolute+gta"):
    model = build(cls, make_config(case, history[0]), torch.float32)
    for phase in history[1:]:
        model.set_phase(phase, **settings)
    with torch.no_grad():  # move every parameter, so that nothing is at its initial value
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize("name", list(HISTORIES))
def test_save_and_load_round_trip_every_phase(name, tmp_path):
    history, settings = HISTORIES[name]
    model = _trained(history, settings)
    x = inputs(model.model, torch.float32)
    model.save_pretrained(tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is GeoTransformerForSequenceClassification
    assert loaded.config.phase_history == history
    # the weights bit for bit, and never-saved constants (structures, projections) rebuilt identically
    assert_same_weights(loaded, model)
    # the outputs to rounding: loaded tensors are views at the file's offsets, where BLAS may sum in
    # another order
    assert_close_to_rounding(loaded(**x).logits, model.eval()(**x).logits)


def test_loaded_model_trains_on_in_its_phase(tmp_path):
    """A subspace model reloads with theta trainable and the base weights frozen, as before saving."""
    model = _trained(*HISTORIES["subspace-fastfood"])
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    trainable = lambda m: sorted(n for n, p in m.named_parameters() if p.requires_grad)  # noqa: E731
    assert trainable(loaded) == trainable(model)
    assert any(n.endswith("theta") for n in trainable(loaded))


@pytest.mark.parametrize(
    "cls", [GeoTransformerModel, GeoTransformerForTokenClassification, GeoTransformerForSequenceRegression]
)
def test_round_trip_other_heads(cls, tmp_path):
    model = _trained(["equivariant", "free"], {}, cls=cls, case="so3-rotary")
    x = inputs(model if cls is GeoTransformerModel else model.model, torch.float32)
    model.eval().save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    assert_same_weights(loaded, model)
    assert_close_to_rounding(loaded(**x)[0], model(**x)[0])


def test_auto_classes_resolve():
    config = AutoConfig.for_model("geo_transformer", **CASES["so2-rotary"], feature_size=2)
    assert isinstance(config, GeoTransformerConfig)
    assert type(AutoModel.from_config(config)) is GeoTransformerModel
    assert (
        type(AutoModelForSequenceClassification.from_config(config))
        is GeoTransformerForSequenceClassification
    )
    assert type(AutoModelForTokenClassification.from_config(config)) is GeoTransformerForTokenClassification
    assert GeoTransformerConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def run_in_a_fresh_interpreter(script: str, tmp_path) -> None:
    """Run ``script`` in a new Python (offline, its own HF cache); it must end by printing ok."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_trust_remote_code_loads_from_a_saved_folder(tmp_path):
    """A fresh interpreter that never imports ``models`` loads the folder through its auto_map."""
    model = _trained(*HISTORIES["subspace-sparse"])
    x = inputs(model.model, torch.float32)
    folder = tmp_path / "saved"
    model.eval().save_pretrained(folder)
    torch.save({"x": x, "logits": model(**x).logits.detach()}, tmp_path / "reference.pt")
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSequenceClassification"].endswith("GeoTransformerForSequenceClassification")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert "models" not in sys.modules, "the test must not import the installed package"
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        ref = torch.load({str(tmp_path / "reference.pt")!r})
        torch.testing.assert_close(model.eval()(**ref["x"]).logits, ref["logits"], rtol=1e-5, atol=1e-6)
        print("ok")
        """
    )
    run_in_a_fresh_interpreter(script, tmp_path)


def test_meta_device_construction_rebuilds_constants():
    """Built on the meta device and materialised, the constants equal those of a model built on CPU."""
    config = make_config("so3-absolute", subspace_dim=30, subspace_projection="sparse")
    config.phase_history = ["equivariant", "subspace"]
    reference = GeoTransformerModel(config)
    with torch.device("meta"):
        model = GeoTransformerModel(config)
    model.to_empty(device="cpu")
    model.init_weights()
    mine, theirs = dict(reference.named_buffers()), dict(model.named_buffers())
    non_persistent = [k for k in mine if k not in reference.state_dict()]
    assert non_persistent  # structure bases and projection tensors
    for key in non_persistent:
        torch.testing.assert_close(theirs[key], mine[key], rtol=0, atol=0, msg=key)


def test_mismatched_subspace_checkpoint_is_refused(tmp_path):
    model = _trained(*HISTORIES["subspace-fastfood"])
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["subspace_seed"] = 7
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="checkpoint: it was saved with the random subspace"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_corrupt_weights_file_is_refused(tmp_path):
    model = _trained(["equivariant"], {})
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(
        ValueError, match=r"pretrained_model_name_or_path: the weights in .* truncated or corrupt"
    ):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


# --- bad input ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def so3_model():
    return GeoTransformerModel(make_config("t1+so3-rotary")).eval()


def _good(model):
    return inputs(model, torch.float32)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda x: x.update(positions=x["positions"]["orientation"]),
            r"positions: expected a dict with keys",
        ),
        (
            lambda x: x["positions"].pop("position"),
            r"positions: expected the keys \['orientation', 'position'\]",
        ),
        (lambda x: x["positions"].update(angle=torch.zeros(B, T)), r"positions: expected the keys"),
        (
            lambda x: x["positions"].update(orientation=torch.randn(B, T, 3)),
            r"positions\['orientation'\]: expected unit quaternions .* \(\.\.\., 4\)",
        ),
        (
            lambda x: x["positions"].update(orientation=torch.randn(B, T + 1, 4)),
            rf"positions\['orientation'\]: expected so3 elements with batch shape \({B}, {T}\)",
        ),
        (
            lambda x: x["positions"]["orientation"].__setitem__((0, 1), 0.0),
            r"positions\['orientation'\].*(zero|non-zero)",
        ),
        (
            lambda x: x["positions"]["orientation"].__setitem__((0, 1, 2), float("nan")),
            r"positions\['orientation'\].*(NaN|finite)",
        ),
        (
            lambda x: x.update(features=torch.randn(B, T, FEATURES + 1)),
            r"features: expected shape .*feature_size",
        ),
        (lambda x: x.update(attention_mask=torch.ones(B, T + 1)), r"attention_mask: expected shape \(2, 6\)"),
        (lambda x: x.update(input_ids=torch.zeros(B, T + 2, dtype=torch.long)), r"features: expected shape"),
        (lambda x: x.update(pixel_values=torch.zeros(1)), r"pixel_values.*unexpected inputs"),
    ],
)
def test_bad_inputs_are_named(so3_model, change, message):
    x = _good(so3_model)
    change(x)
    with pytest.raises(ValueError, match=message):
        so3_model(**x)


def test_missing_inputs_are_named():
    model = GeoTransformerModel(make_config("so2-rotary", vocab_size=0))
    with pytest.raises(ValueError, match="input_ids, features: give at least one"):
        model(positions=torch.zeros(B, T))
    with pytest.raises(ValueError, match="input_ids: this model has no token embedding"):
        model(input_ids=torch.zeros(B, T, dtype=torch.long), positions=torch.zeros(B, T))
    with pytest.raises(ValueError, match=r"positions: the model's encodings read \['angle'\]"):
        model(features=torch.zeros(B, T, FEATURES))
    plain = GeoTransformerModel(make_config("so2-rotary", pe_relative=None))
    with pytest.raises(ValueError, match="positions: this model has no positional encoding"):
        plain(features=torch.zeros(B, T, FEATURES), positions=torch.zeros(B, T))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(pe_relative="t1:3"), r"pe_relative: 't1:3' has dimension 6, which does not tile head_dim=8"),
        (
            dict(hidden_size=18, num_attention_heads=4),
            r"num_attention_heads, head_dim: 4 heads of 4 channels",
        ),
        (
            dict(pe_absolute="so3:1x1", pe_relative=None, hidden_size=24, num_attention_heads=3),
            r"head_dim: heads of 8 channels cut blocks of pe_absolute",
        ),
        (
            dict(pe_absolute="so3:1x1", hidden_size=9, num_attention_heads=3, pe_relative=None),
            r"hidden_size: 9 leaves no scalar",
        ),
        (dict(pe_relative_mode="sideways"), r"pe_relative_mode: expected one of \('rotary', 'gta'\)"),
        (dict(phase_history=["equivariant", "frozen"]), r"phase_history: unknown phases \['frozen'\]"),
        (dict(phase_history=["equivariant", "subspace"]), r"subspace_dim: a 'subspace' phase"),
        (dict(subspace_projection="fft"), r"subspace_projection: expected one of"),
        (dict(vocab_size=0, feature_size=0), r"vocab_size, feature_size"),
        (dict(pe_relative="so4:1x1"), r"spec: "),
    ],
)
def test_bad_configs_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config("t1-rotary", **overrides)


# --- hardening: values, padding, empty sequences, syncs, loading -------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_on_valid_tokens_are_refused(so3_model, bad):
    x = _good(so3_model)
    x["features"][1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"features: expected finite values on valid tokens, got 1 NaN"):
        so3_model(**x)


def test_padded_tokens_never_influence_valid_ones_whatever_they_hold(dtype):
    """NaN features, ids outside the vocabulary and invalid group elements on padding change nothing."""
    model = build(GeoTransformerForSequenceClassification, make_config("t1xso3-absolute+gta"), dtype)
    x = inputs(model.model, dtype)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 4:] = 0
    clean = model(**x, attention_mask=mask, output_hidden_states=True)
    x["features"][0, 4:] = float("nan")
    x["input_ids"][0, 4:] = 10_000
    x["positions"]["orientation"][0, 4:] = 0.0
    x["positions"]["position"][0, 4:] = float("inf")
    dirty = model(**x, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(dirty.logits, clean.logits, rtol=0, atol=0)
    valid = mask.bool()
    for a, b in zip(dirty.hidden_states, clean.hidden_states, strict=True):
        assert torch.isfinite(a[valid]).all()
        torch.testing.assert_close(a[valid], b[valid], rtol=0, atol=0)


def test_wrong_element_shapes_are_named_also_with_padding(so3_model):
    x = _good(so3_model)
    x["positions"]["orientation"] = torch.randn(B, T, 3)
    with pytest.raises(
        ValueError, match=r"positions\['orientation'\]: expected unit quaternions .*\(2, 6, 3\)"
    ):
        so3_model(**x, attention_mask=torch.ones(B, T))


def test_batch_mismatch_between_inputs_names_the_positions(so3_model):
    x = _good(so3_model)
    x["positions"]["orientation"] = x["positions"]["orientation"][:1]
    with pytest.raises(ValueError, match=r"positions\['orientation'\]: .*batch shape \(2, 6\).*of input_ids"):
        so3_model(**x, attention_mask=torch.ones(B, T))


def test_an_empty_sequence_has_a_defined_result():
    model = GeoTransformerForSequenceClassification(make_config("t1xso3-absolute+gta")).eval()
    x = inputs(model.model, torch.float32)
    empty = {"input_ids": x["input_ids"][:, :0], "features": x["features"][:, :0]}
    empty["positions"] = {k: v[:, :0] for k, v in x["positions"].items()}
    out = model(**empty, output_hidden_states=True)
    assert out.hidden_states[-1].shape == (B, 0, model.config.hidden_size)
    torch.testing.assert_close(out.logits, model.head.bias.expand(B, -1))  # pooled over no token: zeros
    masked = model(**empty, attention_mask=torch.ones(B, 0)).logits
    torch.testing.assert_close(masked, out.logits)


def test_without_validation_the_forward_never_syncs_with_the_host():
    """On the meta device every value read (``.item()``, ``bool(t)``) raises: the forward runs there."""
    config = make_config("t1xso3-absolute+gta", validate_inputs=False)
    model = GeoTransformerForSequenceClassification(config).eval().to("meta")
    x = inputs(GeoTransformerModel(make_config("t1xso3-absolute+gta")), torch.float32)
    meta = {
        "input_ids": x["input_ids"].to("meta"),
        "features": x["features"].to("meta"),
        "positions": {k: v.to("meta") for k, v in x["positions"].items()},
        "attention_mask": torch.ones(B, T, dtype=torch.long, device="meta"),
        "labels": torch.zeros(B, dtype=torch.long, device="meta"),
    }
    out = model(**meta)
    assert out.logits.is_meta and out.logits.shape == (B, 3) and out.loss.is_meta
    validating = GeoTransformerForSequenceClassification(make_config("t1xso3-absolute+gta")).to("meta")
    with pytest.raises((RuntimeError, NotImplementedError)):  # validation reads values
        validating(**meta)


def test_each_quaternion_is_checked_once_per_forward_and_the_flag_stays_where_it_was(monkeypatch):
    """The model validates its group elements at the door and hands the encodings `GroupElements`: one
    value check of the quaternions per forward, though both encodings and four layers read them; the
    context's validation switch is left as it was, and a switch turned off in another thread is not seen
    here."""
    import threading

    from geo_pe import quaternion as Q
    from geo_pe._checks import value_checks_enabled

    model = GeoTransformerForSequenceClassification(make_config("t1xso3-absolute+gta")).eval()
    x = inputs(model.model, torch.float32)
    reads = []
    check_norm = Q._check_norm
    monkeypatch.setattr(
        Q, "_check_norm", lambda norm, name: (reads.append(value_checks_enabled()), check_norm(norm, name))[1]
    )
    model(**x)
    assert reads.count(True) == 1, reads
    assert value_checks_enabled()
    off = threading.Thread(target=geo_pe.set_input_validation, args=(False,))
    off.start()
    off.join()
    assert value_checks_enabled()  # context-local: another thread's switch does not reach this one
    x["positions"]["orientation"][0, 1] = 0.0
    with pytest.raises(ValueError, match=r"positions\['orientation'\]: expected non-zero finite quaternions"):
        model(**x)


AUTO_CLASSES = {
    "AutoModel": "GeoTransformerModel",
    "AutoModelForSequenceClassification": "GeoTransformerForSequenceClassification",
    "AutoModelForTokenClassification": "GeoTransformerForTokenClassification",
}


@pytest.mark.parametrize("import_models", [False, True], ids=["remote-code", "imported"])
def test_every_auto_class_loads_a_saved_folder(tmp_path, import_models):
    """``auto_map`` names every Auto class the model supports, so each loads a saved folder under
    trust_remote_code, in an interpreter that imported ``models`` and in one that did not."""
    model = GeoTransformerForSequenceClassification(make_config("so2-rotary")).eval()
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert {k: v.split(".")[-1] for k, v in auto_map.items() if k != "AutoConfig"} == AUTO_CLASSES
    script = textwrap.dedent(
        f"""
        import sys, transformers
        {"import models" if import_models else ""}
        for auto, expected in {AUTO_CLASSES!r}.items():
            loaded = getattr(transformers, auto).from_pretrained({str(folder)!r}, trust_remote_code=True)
            assert type(loaded).__name__ == expected, (auto, type(loaded))
        assert ("models" in sys.modules) == {import_models}
        print("ok")
        """
    )
    run_in_a_fresh_interpreter(script, tmp_path)


def test_the_default_config_builds_a_working_model():
    """HF's convention: ``AutoModel.from_config(AutoConfig.for_model(model_type))`` works as it is."""
    config = AutoConfig.for_model("geo_transformer")
    model = AutoModel.from_config(config).eval()
    out = model(features=torch.randn(B, T, config.feature_size))
    assert out.last_hidden_state.shape == (B, T, config.hidden_size)
    assert "pe_width" not in config.to_dict()  # derived sizes are not stored: the config stays plain data


# --- causal attention ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["t1xso3-absolute+gta", "so2-rotary", "so3-gta"])
def test_causal_phase_one_is_equivariant_and_sees_only_the_past(case, dtype):
    model = build(GeoTransformerModel, make_config(case, causal=True), dtype)
    x = inputs(model, dtype)
    group, act = global_action(model)
    assert_equivariant(
        lambda positions: model(**{**x, "positions": positions}).invariants,
        (x["positions"],),
        group,
        act_in=act,
        generator=0,
    )
    changed = inputs(model, dtype, seed=1)  # other features, ids and elements from token 3 on

    def splice(old, new):
        if isinstance(old, dict):
            return {k: splice(old[k], new[k]) for k in old}
        return torch.cat((old[:, :3], new[:, 3:]), dim=1)

    later = {k: splice(x[k], changed[k]) for k in x}
    a, b = model(**x).last_hidden_state, model(**later).last_hidden_state
    torch.testing.assert_close(b[:, :3], a[:, :3], rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)
    assert (b[:, 3:] - a[:, 3:]).abs().max() > 1e-3


def test_causal_eager_and_sdpa_agree_with_padding():
    config = make_config("t1xso3-absolute+gta", causal=True)
    torch.manual_seed(0)
    sdpa = GeoTransformerModel(config).eval()
    eager_config = make_config("t1xso3-absolute+gta", causal=True, attn_implementation="eager")
    eager = GeoTransformerModel(eager_config).eval()
    eager.load_state_dict(sdpa.state_dict())
    x = inputs(sdpa, torch.float32)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, :2] = 0  # left padding: the first queries see no valid key, only themselves
    for m in (None, mask):
        a = sdpa(**x, attention_mask=m).last_hidden_state
        b = eager(**x, attention_mask=m).last_hidden_state
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gated", [False, True], ids=["linear", "gated"])
def test_the_gate_scales_pe_channels_by_functions_of_the_invariants(gated):
    """One token, SO(3) channels with no trivial part: without the gate the PE channels of the output
    cannot depend on the features (no equivariant map from scalars reaches them); with it they do."""
    config = make_config("so3-absolute", pe_gate=gated)
    model = build(GeoTransformerModel, config, torch.float64)
    q = torch.tensor([[[0.9, 0.1, -0.3, 0.2]]], dtype=torch.float64)
    f1, f2 = torch.randn(2, 1, 1, FEATURES, dtype=torch.float64)
    pe = slice(config.scalar_size, None)
    a = model(features=f1, positions=q).last_hidden_state[..., pe]
    b = model(features=f2, positions=q).last_hidden_state[..., pe]
    assert ((a - b).abs().max() > 1e-3) == gated
    if gated:
        assert type(model.layers[0].mlp.pe_proj.weight_param).__name__ == "EquivariantWeight"


@pytest.mark.parametrize("second", ["free", "subspace"])
def test_a_gated_model_switches_saves_and_loads_with_identical_outputs(second, tmp_path):
    config = make_config("so3-absolute-gated", subspace_dim=16)
    model = build(GeoTransformerForSequenceClassification, config, torch.float64)
    x = inputs(model.model, torch.float64)
    before = model(**x).logits
    report = model.set_phase(second)
    assert "layers.0.mlp.pe_proj" in report.layers
    torch.testing.assert_close(model(**x).logits, before, rtol=0, atol=1e-12)
    model.save_pretrained(tmp_path)
    loaded = GeoTransformerForSequenceClassification.from_pretrained(tmp_path).double().eval()
    assert_same_weights(loaded, model)
    assert_close_to_rounding(loaded(**x).logits, model(**x).logits)


# --- keys at other elements: cross-attention to a memory ---------------------------------------------------
@pytest.mark.parametrize("case", ["se3-gta", "so3-rotary", "t1xso3-absolute+gta"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_cross_attention_depends_on_relative_elements_across_the_two_sets(case, causal, dtype):
    """Queries at the decoder's elements, keys and values at the memory's and its own: one global h on
    all of them changes nothing; moving the memory alone does; padded memory tokens never count."""
    encoder = build(GeoTransformerModel, make_config(case, causal=causal), dtype)
    decoder = build(GeoTransformerModel, make_config(case, causal=causal), dtype)
    source, target = inputs(encoder, dtype, seed=1), inputs(decoder, dtype, seed=2)
    group, act = global_action(decoder)
    h = group.sample((B, 1), generator=torch.Generator().manual_seed(3), dtype=dtype)
    memory_mask = torch.ones(B, T, dtype=torch.long)
    memory_mask[1, 4:] = 0

    def run(at_source, at_target, memory_features=None):
        features = source["features"] if memory_features is None else memory_features
        at = {**source, "features": features, "positions": at_source}
        memory = encoder(**at, attention_mask=memory_mask).last_hidden_state
        return decoder(
            **{**target, "positions": at_target},
            memory=memory,
            memory_positions=at_source,
            memory_attention_mask=memory_mask,
        ).invariants

    out = run(source["positions"], target["positions"])
    atol = 1e-10 if dtype == torch.float64 else 1e-4
    moved = run(act(h, source["positions"]), act(h, target["positions"]))
    torch.testing.assert_close(moved, out, rtol=0, atol=atol)
    assert (run(act(h, source["positions"]), target["positions"]) - out).abs().max() > 1e-3
    alone = decoder(**target).invariants
    assert (alone - out).abs().max() > 1e-3  # the memory is read
    # changing what padded memory tokens hold changes their states, which the decoder must not read
    other = source["features"].clone()
    other[1, 4:] = 100.0
    changed = run(source["positions"], target["positions"], other)
    torch.testing.assert_close(changed[1], out[1], rtol=0, atol=atol)


def test_bad_memory_is_named():
    model = GeoTransformerModel(make_config("so3-rotary"))
    x = inputs(model, torch.float32)
    with pytest.raises(ValueError, match=r"memory: expected states of width hidden_size=18"):
        model(**x, memory=torch.randn(B, 4, 5), memory_positions=x["positions"])
    with pytest.raises(ValueError, match=r"memory_attention_mask: expected shape \(2, 4\)"):
        model(**x, memory=torch.randn(B, 4, 18), memory_positions=x["positions"],
              memory_attention_mask=torch.ones(B, 5))  # fmt: skip


def test_under_bf16_autocast_the_encodings_stay_float32():
    """Mixed precision: angles, cos/sin and Wigner matrices inside the forward equal the float32
    encodings exactly (computed outside autocast); the rest runs in bf16, close to the float32 forward."""
    from geo_pe import quaternion
    from models import GeoTransformerConfig, GeoTransformerForSequenceClassification

    config = GeoTransformerConfig(
        feature_size=2, hidden_size=36, num_attention_heads=3, pe_absolute="so3@o:1x1",
        pe_relative="so3@o:1x1+1x2+so2@a:2x1", phase_history=["equivariant"], num_labels=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GeoTransformerForSequenceClassification(config).eval()
    features = torch.randn(2, 5, 2)
    positions = {"o": quaternion.random(2, 5, generator=1), "a": torch.rand(2, 5) * 6}
    seen = []
    for pe in (model.model.absolute_pe, model.model.relative_pe):
        encode = pe.encode

        def recording(g, encode=encode, cache=None):
            seen.append((encode, encode(g, cache=cache)))
            return seen[-1][1]

        pe.encode = recording
    with torch.no_grad():
        reference = model(features=features, positions=positions).logits
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(features=features, positions=positions).logits
    assert len(seen) == 2
    for encode, inside in seen:
        expected = encode(positions)
        for got, want in zip(
            (inside.cos, inside.sin, *inside.matrices),
            (expected.cos, expected.sin, *expected.matrices),
            strict=True,
        ):
            if want is not None:
                assert got.dtype == torch.float32 and torch.equal(got, want)
    assert mixed.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.float(), reference, atol=0.05, rtol=0.05)
