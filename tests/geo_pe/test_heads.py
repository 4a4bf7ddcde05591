"""Per-head attention analysis: the head permutation of a transformation, on maps built to follow one
exactly, on maps that follow none, on the geo transformer and through hooks on HF attention modules."""

from __future__ import annotations

import pytest
import torch

from geo_pe.equivariance import compare_attention_heads, record_attention

B, H, T = 3, 5, 6


def random_maps(generator: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(generator)
    return torch.randn(B, H, T, T, generator=gen, dtype=torch.float64).softmax(-1)


def test_a_model_built_to_permute_its_heads_is_recovered_exactly():
    """Maps on g . x are the original maps with the tokens mirrored and heads (1 2) and (3 4) exchanged."""
    maps = random_maps(0)
    mirror = torch.arange(T).flip(0)
    heads = [0, 2, 1, 4, 3]  # head a on g . x acts as head heads[a] on x
    transformed = maps[:, heads][..., mirror, :][..., :, mirror]
    result = compare_attention_heads(maps, transformed, mirror)
    assert result.permutation == heads
    assert result.error < 1e-12 and result.matched_share == 1.0
    assert result.self_mapped == [0] and result.exchanged == [(1, 2), (2, 1), (3, 4), (4, 3)]
    # without the token action the same maps do not match: the mirror is part of the symmetry
    assert compare_attention_heads(maps, transformed).error > 0.1


def test_maps_that_follow_no_symmetry_match_poorly():
    result = compare_attention_heads(random_maps(1), random_maps(2), torch.arange(T).flip(0), threshold=0.99)
    assert result.matched_share < 0.5 and result.error > 0.1


def test_near_uniform_heads_are_compared_by_what_they_attend_to():
    """Diffuse maps share the uniform part 1/T: uncentred, unrelated heads look alike; centred, they do not,
    and exactly permuted diffuse heads are still recovered."""
    gen = torch.Generator().manual_seed(5)
    diffuse = (0.05 * torch.randn(2, B, H, T, T, generator=gen, dtype=torch.float64)).softmax(-1)
    mirror = torch.arange(T).flip(0)
    unrelated = compare_attention_heads(diffuse[0], diffuse[1], mirror, centre=False)
    assert unrelated.error < 0.1 and unrelated.matched_share == 1.0  # the trap
    centred = compare_attention_heads(diffuse[0], diffuse[1], mirror)
    assert centred.error > 0.8 and centred.matched_share == 0.0
    heads = [1, 0, 2, 4, 3]
    exact = compare_attention_heads(diffuse[0], diffuse[0][:, heads][..., mirror, :][..., :, mirror], mirror)
    assert exact.permutation == heads and exact.error < 1e-12


def test_a_phase_one_geo_transformer_keeps_every_head_under_a_global_rotation():
    """Its maps are invariant under g_i -> h g_i (no token moves): every head maps to itself; after free
    training with an absolute encoding they need not."""
    from geo_pe import quaternion
    from models import GeoTransformerConfig, GeoTransformerModel

    config = GeoTransformerConfig(
        feature_size=2, hidden_size=36, num_attention_heads=4, pe_absolute="so3:1x1",
        pe_relative="so3:1x0+1x1+1x2", phase_history=["equivariant"], initializer_range=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GeoTransformerModel(config).double().eval()
    features = torch.randn(B, T, 2, dtype=torch.float64)
    q = quaternion.random(B, T, generator=3, dtype=torch.float64)
    turned = quaternion.multiply(quaternion.random(B, 1, generator=4, dtype=torch.float64), q)

    def maps(m, positions):
        return m(features=features, positions=positions, output_attentions=True).attentions[0]

    result = compare_attention_heads(maps(model, q), maps(model, turned))
    assert result.permutation == [0, 1, 2, 3] and result.error < 1e-10 and result.self_mapped == [0, 1, 2, 3]
    model.set_phase("free")
    for p in model.parameters():
        p.data += 0.3 * torch.randn_like(p)
    assert compare_attention_heads(maps(model, q), maps(model, turned)).error > 1e-3


def test_hooks_record_hf_attention_maps():
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, attn_implementation="eager",
    )  # fmt: skip
    model = LlamaModel(config).eval()
    ids = torch.randint(50, (2, 7))
    with record_attention(model, r"layers\.\d+\.self_attn") as maps:
        model(ids)
    assert sorted(maps) == ["layers.0.self_attn", "layers.1.self_attn"]
    weights = maps["layers.0.self_attn"]
    assert weights.shape == (2, 4, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7))
    same = compare_attention_heads(weights, weights)
    assert same.permutation == [0, 1, 2, 3] and same.error == 0
    with (
        pytest.raises(ValueError, match=r"modules: no submodule name matches"),
        record_attention(model, "none"),
    ):
        pass


def test_bad_maps_are_named():
    with pytest.raises(ValueError, match=r"maps: expected attention maps \(batch, heads, tokens, tokens\)"):
        compare_attention_heads(torch.ones(2, 3, 4), torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match=r"token_permutation: expected a permutation of range\(6\)"):
        compare_attention_heads(random_maps(0), random_maps(0), torch.zeros(T, dtype=torch.long))
