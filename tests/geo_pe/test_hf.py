"""The HF plug-in: RoPE reproduced exactly, other groups invariant, the patch reversible."""

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from geo_pe import quaternion as Q
from geo_pe.pe import RotaryPE
from geo_pe.pe.hf import patch_rotary, rotary_like
from geo_pe.testing import tolerance

TINY = dict(
    vocab_size=40,
    hidden_size=48,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention
    max_position_embeddings=64,
)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}
HEAD_DIM = 12


def tiny(family, dtype=torch.float32, **overrides):
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(0)
    config = config_cls(**{**TINY, **overrides})
    config._attn_implementation = "sdpa"
    return model_cls(config).to(dtype).eval()


def logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, **kwargs).logits


def close(a, b, dtype, scale=1.0):
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(a, b, atol=atol * scale, rtol=rtol * scale)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("how", ["rotary_like", "default_spec"])
def test_translation_pe_reproduces_the_models_rope(family, how, dtype):
    model = tiny(family, dtype)
    ids = torch.randint(0, 40, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    reference = logits(model, ids, attention_mask=mask)
    pe = rotary_like(model) if how == "rotary_like" else f"t1:{HEAD_DIM // 2}"
    handle = patch_rotary(model, pe)
    # HF computes inv_freq in float32 even for float64 models; the spec's frequencies are float64, so they
    # agree to float32 precision, while rotary_like (HF's own frequencies) agrees at the model's precision.
    tol_dtype = dtype if how == "rotary_like" else torch.float32
    close(logits(model, ids, attention_mask=mask), reference, tol_dtype, 10)
    handle.remove()
    torch.testing.assert_close(logits(model, ids, attention_mask=mask), reference, atol=0, rtol=0)


def test_generation_is_unchanged():
    model = tiny("llama")
    ids = torch.randint(0, 40, (1, 6))
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        handle = patch_rotary(model, rotary_like(model))
        patched = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    handle.remove()
    assert torch.equal(patched, expected)


@pytest.mark.parametrize(
    "spec,attribute,sampler",
    [
        ("so2:3x1+2x2+2x0", "angle", lambda g: torch.rand(2, 11, generator=g, dtype=torch.float64) * 6),
        ("so3:1x1+1x2+4x0", "orientation", lambda g: Q.random(2, 11, generator=g, dtype=torch.float64)),
    ],
)
def test_other_groups_give_invariant_logits(spec, attribute, sampler, dtype):
    model = tiny("llama", dtype)
    ids = torch.randint(0, 40, (2, 11))
    patch_rotary(model, spec)
    gen = torch.Generator().manual_seed(1)
    g, h, other = (sampler(gen).to(dtype) for _ in range(3))
    group = model.model.rotary_emb.pe.rep.group
    h = h[:1, :1]  # one global element
    base = logits(model, ids, group_elements={attribute: g})
    moved = logits(model, ids, group_elements={attribute: group.compose(h.expand_as(g), g)})
    close(moved, base, dtype, 100)
    assert (logits(model, ids, group_elements={attribute: other}) - base).abs().max() > 1e-3


def test_translation_attribute_defaults_to_position_ids():
    model = tiny("mistral")
    ids = torch.randint(0, 40, (2, 7))
    patch_rotary(model, RotaryPE("t1:2+so3:1x1+1x0+1x1+1x0", pair_layout="half"))
    q = Q.random(2, 7, generator=2)
    explicit = logits(model, ids, group_elements={"orientation": q, "position": torch.arange(7).expand(2, 7)})
    torch.testing.assert_close(logits(model, ids, group_elements={"orientation": q}), explicit)


def test_bad_uses_raise():
    model = tiny("llama")
    with pytest.raises(ValueError, match=r"pe: its dimension 16 must equal the model's head_dim \[12\]"):
        patch_rotary(model, "t1:8")
    with pytest.raises(ValueError, match="spec: unknown group"):
        patch_rotary(model, "so4:1x1")
    patch_rotary(model, "so3:2x1+1x2+1x0")
    with pytest.raises(ValueError, match=r"group_elements: this model's rotary PE reads \['orientation'\]"):
        model(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="model: expected a Llama-family model"):
        patch_rotary(torch.nn.Linear(2, 2), "t1:1")
