"""The geo transformer: an encoder whose token state is invariant scalars plus absolute-PE channels.

Leaves first, as in HF's Llama: norm, MLP, attention, layer, pretrained base, model, heads.

Equivariance (docs/design.md, "The model"). Each token i carries group elements g_i (``positions``). The state
is ``[s_i ; p_i]``: s_i invariant scalars, p_i (with ``pe_absolute``) the channels of gamma(g_i), which
transform by R(h) under g_i -> h g_i, so the state representation is rho_x = trivial (+) R. Relative
encodings (rotary, GTA) act inside attention on heads made of scalars and keep invariance for any
weights. The attention projections are `PhasedLinear` layers on rho_x: in phase I (scalar identity or
equivariant) every layer commutes with rho_x(h), the norms act on invariant quantities (RMS of the
scalars, RMS of the PE channels with one gain per block), the SwiGLU MLP reads scalars only, and the
readout uses scalars and per-block norms of the PE channels. So in phase I the model is exactly
invariant (sequence outputs, ``invariants``) and equivariant (``last_hidden_state``); in phase II the
freed projections can break the symmetry where the data do.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput
from transformers.utils import ModelOutput

from geo_pe._checks import compute_dtype
from geo_pe.descriptors import planar_power_spectrum, planar_power_spectrum_size
from geo_pe.pe import GTAPE, AbsolutePE, Encoding, RotaryPE
from geo_pe.phases import (
    EquivariantWeight,
    FreeWeight,
    InvariantBias,
    PhasedLinear,
    PhaseReport,
    RandomSubspace,
    ResidualPathwayWeight,
    ScalarIdentityWeight,
    SubspaceWeight,
    WeightParametrization,
    set_phase,
)
from geo_pe.reps import DirectSum, Representation, Trivial, share_rotation
from geo_pe.reps.groups import Translations

from .configuration_geo_transformer import GeoTransformerConfig
from .inputs_geo_transformer import GeoTransformerInputs, PairGeometry

__all__ = [
    "GeoTransformerForSequenceClassification",
    "GeoTransformerForSequenceRegression",
    "GeoTransformerForTokenClassification",
    "GeoTransformerModel",
    "GeoTransformerOutput",
    "GeoTransformerPreTrainedModel",
    "SequenceRegressionOutput",
]

# Every Auto class a saved folder loads with under trust_remote_code (HF records only the saved class).
AUTO_MAP = {
    "AutoConfig": "configuration_geo_transformer.GeoTransformerConfig",
    "AutoModel": "modeling_geo_transformer.GeoTransformerModel",
    "AutoModelForSequenceClassification": "modeling_geo_transformer.GeoTransformerForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_geo_transformer.GeoTransformerForTokenClassification",
}

# The layers that act on PE channels (phase-controlled whatever phase_layers says), and all of them.
CARTESIAN_FROM_DEGREE_1 = (2, 0, 1)  # D_1's components (y, z, x) -> (x, y, z)
ATTENTION_LAYERS = r"(.*\.)?layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.pe_proj)"
ALL_LAYERS = r"(.*\.)?layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down|pe)_proj)"


@dataclass
class GeoTransformerOutput(ModelOutput):
    """``last_hidden_state`` (batch, tokens, hidden): equivariant token states; ``invariants`` (batch, tokens,
    scalars + PE blocks): the scalars and the norms of the PE blocks, invariant; optional per-layer tuples;
    ``displacements`` {point attribute: (batch, tokens, 3)}: how far ``coordinate_updates`` moved each
    point through the layers (zero on padding; None without them)."""

    last_hidden_state: torch.FloatTensor | None = None
    invariants: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    displacements: dict[str, torch.FloatTensor] | None = None


@dataclass
class SequenceRegressionOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    predictions: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def degree_one_channels(
    config: GeoTransformerConfig, embedding_rep, attributes: list[str] | None
) -> dict[str, list[int]]:
    """{attribute: first channel (in the token state) of each degree-1 block that turns with it}: an SO(3)
    block of 3 channels in D_1's (y, z, x) order, or an SO(2) block of frequency 1, (x, y)."""
    out: dict[str, list[int]] = {}
    offset = config.scalar_size
    for mult, irrep in embedding_rep.irreps:
        for _ in range(mult):
            group, _, frame = str(irrep.group).partition("@")
            for attribute in attributes or []:
                if group in ("so3", "so2") and irrep.label == 1 and attribute in frame.split("+"):
                    out.setdefault(attribute, []).append(offset)
            offset += irrep.dim
    return out


def point_value_channels(config: GeoTransformerConfig, embedding_rep) -> dict[str, list[int]]:
    """{point attribute: first channel (in the token state) of each degree-1 block that turns with it}."""
    return degree_one_channels(config, embedding_rep, config.point_attributes)


class CoordinateStep(nn.Linear):
    """The linear map of the heads' pair weights to a coordinate step; initialised near zero (std 1e-3),
    so the points move little at first, as EGNN initialises its phi_x."""


class VectorInputEmbedding(nn.Module):
    """Input vectors v (``config.vector_inputs``), magnitude included, into the token state: a learned
    multiple of v added to every degree-1 block of the absolute encoding that turns with it, so the
    state carries v linearly (the map commutes with rotations: one scalar per block)."""

    def __init__(self, config: GeoTransformerConfig, embedding_rep):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.channels = degree_one_channels(config, embedding_rep, config.vector_inputs)
        missing = [name for name in config.vector_inputs or [] if name not in self.channels]
        if missing:
            raise ValueError(
                f"vector_inputs: pe_absolute={config.pe_absolute!r} has no degree-1 channels that turn with "
                f"{missing}"
            )
        self.scales = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(len(starts))) for name, starts in self.channels.items()}
        )
        for name, starts in self.channels.items():
            self.register_buffer(f"placement_{name}", self._placement(starts), persistent=False)

    def _placement(self, starts: list[int], device=None) -> torch.Tensor:
        """``(blocks, 3, hidden)``: block k's one-hot map of Cartesian (x, y, z) to its (y, z, x) channels."""
        placement = torch.zeros(len(starts), 3, self.hidden_size, device=device)
        for k, start in enumerate(starts):
            for cartesian, channel in enumerate(CARTESIAN_FROM_DEGREE_1):
                placement[k, cartesian, start + channel] = 1.0
        return placement

    def reset_buffers(self) -> None:
        """Rebuild the constant placements (after meta-device initialisation or HF loading)."""
        for name, starts in self.channels.items():
            device = self.scales[name].device
            placement = self._placement(starts, None if device.type == "meta" else device)
            setattr(self, f"placement_{name}", placement)

    def forward(self, vectors: dict[str, torch.Tensor]) -> torch.Tensor:
        """``vectors`` {name: (B, T, 3)} Cartesian -> the update ``(B, T, hidden)`` of the token state."""
        update = 0
        for name, v in vectors.items():
            placement = getattr(self, f"placement_{name}").to(v.dtype)
            update = update + v @ torch.einsum("k,kch->ch", self.scales[name].to(v.dtype), placement)
        return update


def block_index(block_sizes: tuple[int, ...], device=None) -> torch.Tensor:
    """``(sum(block_sizes),)``: the block of every PE channel, so per-block values spread by one gather."""
    device = torch.device("cpu") if device is None or torch.device(device).type == "meta" else device
    blocks = torch.arange(len(block_sizes), device=device)
    return torch.repeat_interleave(blocks, torch.tensor(block_sizes, dtype=torch.long, device=device))


def softmax_over_keys(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis (keys), in float32 (float64 stays). With few keys on a CPU it runs as a
    softmax over the second-to-last axis of the transposed scores: the same function, through the kernel
    that PyTorch's CPU backend runs 3x faster below 16 keys (N-body systems have 5 particles)."""
    dtype = compute_dtype(scores)
    if scores.device.type == "cpu" and scores.shape[-1] < 16:
        return scores.transpose(-1, -2).softmax(-2, dtype=dtype).transpose(-1, -2)
    return scores.softmax(-1, dtype=dtype)


def _without_autocast(device_type: str):
    """Autocast switched off on this device, where autocast exists (not on ``meta``)."""
    if device_type in ("cpu", "cuda", "xpu", "mps", "hpu"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class GeoRMSNorm(nn.Module):
    """RMS norm of the scalars (one gain per channel) and of the PE channels (one gain per block)."""

    def __init__(self, scalar_size: int, block_sizes: tuple[int, ...], eps: float):
        super().__init__()
        self.scalar_size, self.block_sizes, self.eps = scalar_size, block_sizes, eps
        self.pe_width = sum(block_sizes)  # known here, so the forward never asks the device for it
        self.weight = nn.Parameter(torch.ones(scalar_size))
        self.block_weight = nn.Parameter(torch.ones(len(block_sizes))) if block_sizes else None
        self.register_buffer("block_index", block_index(block_sizes), persistent=False)

    def reset_buffers(self) -> None:
        """Rebuild the constant index (after meta-device initialisation or HF loading)."""
        self.block_index = block_index(self.block_sizes, self.weight.device)

    def _rms(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.to(compute_dtype(x))  # half precision is normalised in float32, float64 stays
        return (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.block_weight is None:
            return self._rms(x) * self.weight.to(x.dtype)
        # split, not two slices: its backward is one cat, where each slice's allocates and fills a zero
        # tensor of the whole state
        s, p = x.split((self.scalar_size, self.pe_width), dim=-1)
        gains = self.block_weight.to(x.dtype)[self.block_index]
        return torch.cat((self._rms(s) * self.weight.to(x.dtype), self._rms(p) * gains), dim=-1)


class GeoMLP(nn.Module):
    """SwiGLU on the scalars. The PE channels get zero (updated only by attention and the residual), or,
    with ``config.pe_gate``, a gated update: ``pe_proj(p)``, a phase-controlled map on them, times
    sigmoid(``pe_gate(s)``), one invariant scale per block read from the scalars s."""

    def __init__(
        self,
        config: GeoTransformerConfig,
        embedding_rep: Representation | None = None,
        block_sizes: tuple[int, ...] = (),
    ):
        super().__init__()
        self.scalar_size, self.pe_width = config.scalar_size, config.pe_width
        self.gate_proj = nn.Linear(config.scalar_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.scalar_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.scalar_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]
        self.pe_proj = self.pe_gate = None
        if config.pe_gate and self.pe_width:
            linear = nn.Linear(self.pe_width, self.pe_width, bias=False)
            self.pe_proj = PhasedLinear.from_linear(linear, reps=(embedding_rep, embedding_rep))
            self.pe_gate = nn.Linear(config.scalar_size, len(block_sizes))
            self.block_sizes = block_sizes
            self.register_buffer("block_index", block_index(block_sizes), persistent=False)

    def reset_buffers(self) -> None:
        """Rebuild the constant index (after meta-device initialisation or HF loading)."""
        if self.pe_gate is not None:
            self.block_index = block_index(self.block_sizes, self.pe_gate.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, p = x.split((self.scalar_size, self.pe_width), dim=-1) if self.pe_width else (x, None)
        y = self.down_proj(self.act_fn(self.gate_proj(s)) * self.up_proj(s))
        if not self.pe_width:
            return y
        if self.pe_proj is None:
            return torch.cat((y, y.new_zeros(*y.shape[:-1], self.pe_width)), dim=-1)
        gates = torch.sigmoid(self.pe_gate(s))[..., self.block_index]
        return torch.cat((y, self.pe_proj(p) * gates), dim=-1)


class GeoAttention(nn.Module):
    """Multi-head attention over the token state; the relative PE acts on the first ``relative_heads``
    heads (the ones made of scalar channels)."""

    def __init__(
        self, config: GeoTransformerConfig, layer_idx: int, state_rep: Representation, embedding_rep=None
    ):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.relative_heads = config.relative_heads
        self.scaling = self.head_dim**-0.5
        hidden = config.hidden_size
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            linear = nn.Linear(hidden, hidden, bias=config.attention_bias)
            setattr(self, name, PhasedLinear.from_linear(linear, reps=(state_rep, state_rep)))
        pair_features = config.distance_bias * len(config.point_attributes or [])
        self.distance_bias = nn.Linear(pair_features, self.num_heads) if pair_features else None
        self.point_value_channels = (
            point_value_channels(config, embedding_rep) if config.relative_point_values else {}
        )
        self.point_value_proj = nn.ModuleDict(
            {a: nn.Linear(self.num_heads, len(c), bias=False) for a, c in self.point_value_channels.items()}
        )
        # signed pair weights (EGNN's phi_x): an MLP per layer on every head's logit and the radial functions
        self.pair_mlp = None
        if config.point_messages == "signed":
            width = config.scalar_size
            invariants = 3 * len(config.vector_inputs or []) if config.pair_vector_invariants else 0
            self.pair_mlp = nn.Sequential(
                nn.Linear(self.num_heads + pair_features + invariants, width),
                nn.SiLU(),
                nn.Linear(width, self.num_heads),
            )
        # EGNN's edge and node messages: the pair MLP also reads both tokens' scalars, and the scalars
        # receive the mean of its hidden pair messages m_ij over the other tokens
        self.scalar_size = config.scalar_size
        self.pair_nodes = self.pair_to_scalars = None
        if config.pair_scalar_messages:
            self.pair_nodes = nn.Linear(config.scalar_size, 2 * width, bias=False)
            self.pair_to_scalars = nn.Linear(width, config.scalar_size, bias=False)
        self.coordinate_proj = nn.ModuleDict(
            {a: CoordinateStep(self.num_heads, 1, bias=False) for a in config.point_attributes or []}
            if config.coordinate_updates
            else {}
        )
        self.vector_message_proj = nn.ModuleDict(
            {v: CoordinateStep(self.num_heads, 1, bias=False) for v in config.vector_inputs or []}
            if config.pair_vector_messages
            else {}
        )

    def _on_relative_heads(self, apply, x: torch.Tensor, enc) -> torch.Tensor:
        """``apply(x, enc)`` on the heads made of scalars; the other heads pass unchanged."""
        r = self.relative_heads
        if r == self.num_heads:
            return apply(x, enc)
        relative, rest = x.split((r, self.num_heads - r), dim=1)
        return torch.cat((apply(relative, enc), rest), dim=1)

    def _scalar_identity_scales(self) -> list[torch.Tensor] | None:
        """The four scalars b of q, k, v, o when all are ``b I`` without bias (phase I), else None."""
        projections = (self.q_proj, self.k_proj, self.v_proj, self.o_proj)
        scales = [p.weight_param.identity_multiple() for p in projections]
        if all(b is not None for b in scales) and all(p.bias_param is None for p in projections):
            return scales
        return None

    def forward(
        self,
        x: torch.Tensor,
        relative_pe: RotaryPE | None,
        relative_encoding: Encoding | None,
        attn_mask: torch.Tensor | None,
        output_attentions: bool = False,
        is_causal: bool = False,
        memory: torch.Tensor | None = None,
        key_encoding: Encoding | None = None,
        pairs: PairGeometry | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """``x`` (B, T, hidden) -> (B, T, hidden), the attention weights (B, heads, T, S + T) or None, and
        the steps {point attribute: (B, T, 3)} of ``coordinate_updates`` (Cartesian; empty without).
        With ``memory`` (B, S, hidden), keys and values come from [memory ; x], at ``key_encoding``
        (the elements of the memory tokens, then of x), and queries from x at ``relative_encoding``.
        ``attn_mask`` (B, 1, 1 or T, T) is True where a query may attend; ``is_causal`` without a mask
        is SDPA's causal kernel. The relative PE is called through its contract: ``pe.query`` on q
        (rho^-T for SE(3)'s homogeneous block, else rho), ``pe(x, enc)`` on k, ``transport_values`` and
        ``transport_output`` around attention (GTA moves values and outputs, rotary leaves them).
        ``pairs``: the radial functions of the pairs' distances, mapped to an additive bias of each head's
        logits, and the offsets x_j - x_i of point attributes, weighed per head (`point_messages`) and
        added to the degree-1 channels that turn with them (`relative_point_values`) or to the points
        (`coordinate_updates`)."""
        B, T, _ = x.shape
        if pairs is not None and pairs.basis is not None:
            bias = self.distance_bias(pairs.basis).permute(0, 3, 1, 2)  # (B, heads, T, T)
            if is_causal:
                attn_mask, is_causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), False
            if attn_mask is not None:
                bias = bias.masked_fill(~attn_mask, torch.finfo(bias.dtype).min)
            attn_mask = bias.to(x.dtype)

        def heads(t):
            return t.view(B, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        pe, enc = relative_pe, relative_encoding
        context = x if memory is None else torch.cat((memory, x), dim=1)
        key_enc = enc if memory is None else key_encoding
        moves_values = pe is not None and pe.rotates_values
        scales = self._scalar_identity_scales()
        if scales is not None:
            # Phase I: q, k, v, o are multiples of x. Attention is linear in v and the relative PE is
            # linear, so the four scalars fold into one on q and one on the output: the PE runs once.
            q_scale, k_scale, v_scale, o_scale = scales
            h = heads(x)
            hc = h if memory is None else heads(context)
            keys = self._on_relative_heads(pe, hc, key_enc) if pe is not None else hc
            if pe is None:
                queries = h
            elif memory is None and pe.orthogonal:
                queries = keys
            else:
                queries = self._on_relative_heads(pe.query, h, enc)
            q, k, v = (q_scale * k_scale).to(x.dtype) * queries, keys, (keys if moves_values else hc)
        else:
            q, k, v = heads(self.q_proj(x)), heads(self.k_proj(context)), heads(self.v_proj(context))
            if pe is not None:
                q, k = self._on_relative_heads(pe.query, q, enc), self._on_relative_heads(pe, k, key_enc)
            if moves_values:
                v = self._on_relative_heads(pe.transport_values, v, key_enc)
        dropout = self.config.attention_dropout if self.training else 0.0
        weights = None
        moves = bool(self.point_value_channels or self.coordinate_proj)
        needs_weights = moves and pairs is not None and pairs.offsets is not None
        messages = None
        if self.config._attn_implementation == "eager" or output_attentions or needs_weights:
            scores = (q @ k.transpose(-1, -2)) * self.scaling
            if needs_weights and self.pair_mlp is not None:
                messages, pair_hidden = self._signed_messages(scores, pairs, x[..., : self.scalar_size])
            if is_causal:
                attn_mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            if attn_mask is not None and attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
            elif attn_mask is not None:
                scores = scores + attn_mask
            weights = softmax_over_keys(scores).to(q.dtype)
            weights = F.dropout(weights, dropout, self.training)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout, scale=self.scaling, is_causal=is_causal
            )
        if moves_values:
            out = self._on_relative_heads(pe.transport_output, out, enc)
        out = out.transpose(1, 2).reshape(B, T, -1)
        out = (v_scale * o_scale).to(out.dtype) * out if scales is not None else self.o_proj(out)
        steps: dict[str, torch.Tensor] = {}
        if needs_weights:
            messages = weights if messages is None else messages
            if self.point_value_channels:
                out = out + self._point_values(messages, pairs.offsets)
            if self.pair_to_scalars is not None:
                pooled = (pair_hidden * pairs.valid[..., None]).sum(2) / pairs.neighbours[:, 0]
                to_scalars = self.pair_to_scalars(pooled)
                out = out + F.pad(to_scalars, (0, out.shape[-1] - to_scalars.shape[-1]))
            steps = self._coordinate_steps(messages, pairs.offsets, pairs.vector_offsets)
        return out, weights, steps

    def _signed_messages(
        self, scores: torch.Tensor, pairs: PairGeometry, scalars: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, heads, T, T)``: EGNN's pair weights phi_x(m_ij), an MLP on the pair's logits (every head)
        and radial functions (with ``pair_scalar_messages`` also on both tokens' ``scalars`` (B, T, s),
        with ``pair_vector_invariants`` on the pairs' products with the input vectors), divided by the
        set's other tokens; and the MLP's hidden pair messages m_ij (B, T, T, width)."""
        features = [scores.permute(0, 2, 3, 1), pairs.basis.to(scores.dtype)]
        if pairs.invariants is not None:
            features.append(pairs.invariants.to(scores.dtype))
        features = torch.cat(features, dim=-1)
        first, activation, last = self.pair_mlp
        pre = first(features)
        if self.pair_nodes is not None:  # W [s_i; s_j] as two products per token, not one per pair
            own, other = self.pair_nodes(scalars.to(pre.dtype)).chunk(2, dim=-1)
            pre = pre + own[:, :, None] + other[:, None]
        hidden = activation(pre)
        coefficients = last(hidden).permute(0, 3, 1, 2)  # (B, heads, T, T)
        return coefficients / pairs.neighbours.to(coefficients.dtype), hidden

    def _coordinate_steps(
        self,
        messages: torch.Tensor,
        offsets: dict[str, torch.Tensor],
        vector_offsets: dict[str, torch.Tensor] | None = None,
    ) -> dict:
        """{point attribute: (B, T, 3)}: sum_j c_ij (x_j - x_i), c_ij the heads' pair weights mixed by a
        linear map per layer, plus sum_j e_ij (v_j - v_i) for each of ``vector_offsets`` (Cartesian,
        ``pair_vector_messages``); Cartesian (x, y, z). Offsets are zero on padded pairs."""
        steps = {}
        pair_weights = messages.permute(0, 2, 3, 1)  # (B, T, T, heads)
        moved = 0
        for name, proj in self.vector_message_proj.items():
            moved = moved + (proj(pair_weights) * vector_offsets[name].to(messages.dtype)).sum(2)
        for attribute, proj in self.coordinate_proj.items():
            offset = offsets[attribute].to(messages.dtype)  # (B, T, T, 3), (y, z, x)
            coefficients = proj(pair_weights)  # (B, T, T, 1)
            steps[attribute] = (coefficients * offset).sum(2)[..., list(CARTESIAN_FROM_DEGREE_1)] + moved
        return steps

    def _point_values(self, weights: torch.Tensor, offsets: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, T, hidden)``: sum_j a_ij^h (x_j - x_i) per head h, mixed across heads into each
        degree-1 block that turns with the point attribute (components in D_1's (y, z, x) order, or
        (x, y) for planar points)."""
        B, _, T, _ = weights.shape
        update = weights.new_zeros(B, T, self.config.hidden_size)
        for attribute, starts in self.point_value_channels.items():
            offset = offsets[attribute].to(weights.dtype)  # (B, T, T, 3 or 2), in the block's order
            means = torch.einsum("bhij,bijc->bich", weights, offset)  # (B, T, 3 or 2, heads)
            blocks = self.point_value_proj[attribute](means)  # (B, T, 3 or 2, blocks)
            width = offset.shape[-1]
            for k, start in enumerate(starts):
                update[..., start : start + width] += blocks[..., k]
        return update


class GeoTransformerLayer(nn.Module):
    def __init__(
        self,
        config: GeoTransformerConfig,
        layer_idx: int,
        state_rep: Representation,
        block_sizes: tuple[int, ...],
        embedding_rep: Representation | None = None,
    ):
        super().__init__()
        self.input_layernorm = GeoRMSNorm(config.scalar_size, block_sizes, config.rms_norm_eps)
        self.self_attn = GeoAttention(config, layer_idx, state_rep, embedding_rep)
        self.post_attention_layernorm = GeoRMSNorm(config.scalar_size, block_sizes, config.rms_norm_eps)
        self.mlp = GeoMLP(config, embedding_rep, block_sizes)
        # EGNN's velocity term phi_v(s_i) v_i: one invariant scale per token and input vector
        self.scalar_size = config.scalar_size
        self.vector_steps = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.Linear(config.scalar_size, config.scalar_size),
                    nn.SiLU(),
                    nn.Linear(config.scalar_size, 1),
                )
                for name in (config.vector_inputs or [])
            }
            if config.coordinate_updates
            else {}
        )

    def forward(
        self,
        x: torch.Tensor,
        relative_pe: RotaryPE | None,
        relative_encoding: Encoding | None,
        attn_mask: torch.Tensor | None,
        output_attentions: bool = False,
        is_causal: bool = False,
        memory: torch.Tensor | None = None,
        key_encoding: Encoding | None = None,
        pairs: PairGeometry | None = None,
        vectors: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """The state ``x`` (B, T, hidden) after attention and the MLP, the attention weights, and the steps
        {point attribute: (B, T, 3)} that ``coordinate_updates`` move the points by (empty without):
        attention's pair messages plus phi_v(s_i) v_i for each of ``vectors`` {name: (B, T, 3)}."""
        normed_memory = None if memory is None else self.input_layernorm(memory)
        attn, weights, steps = self.self_attn(
            self.input_layernorm(x),
            relative_pe,
            relative_encoding,
            attn_mask,
            output_attentions,
            is_causal,
            normed_memory,
            key_encoding,
            pairs,
        )
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        if steps and self.vector_steps:
            s = F.rms_norm(x[..., : self.scalar_size], (self.scalar_size,), eps=1e-6)
            moved = sum(self.vector_steps[name](s).to(v.dtype) * v for name, v in (vectors or {}).items())
            steps = {attribute: step + moved for attribute, step in steps.items()}
        return x, weights, steps


class GeoTransformerPreTrainedModel(PreTrainedModel):
    config: GeoTransformerConfig
    config_class = GeoTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ("GeoTransformerLayer",)
    _supports_sdpa = True

    def save_pretrained(self, *args, **kwargs) -> None:
        """As `transformers.PreTrainedModel.save_pretrained`, with the source files of every class.

        ``config.json``'s ``auto_map`` names every Auto class, so the folder loads with any of them under
        ``trust_remote_code=True``. Heads that HF has no Auto class for (sequence and equivariant
        regression) are named under ``AutoModel``: their folders load with it, as the head.
        """
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> GeoTransformerPreTrainedModel:
        """As `transformers.PreTrainedModel.from_pretrained`; a truncated weights file, or random-subspace
        weights saved with another subspace than the config describes, raise ``ValueError``."""
        _refuse_another_heads_folder(cls, args, kwargs)
        try:
            loaded = super().from_pretrained(*args, **kwargs)
        except SafetensorError as err:
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            raise ValueError(
                f"pretrained_model_name_or_path: the weights in {source!s} cannot be read ({err}); the "
                "checkpoint is truncated or corrupt, save or copy it again"
            ) from err
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for module in model.modules():
            if isinstance(module, RandomSubspace):
                module.verify_signature()
        return loaded

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise what the checkpoint did not provide (HF flags loaded tensors, and the
        ``transformers.initialization`` functions skip them); rebuild the never-saved constants."""
        std = self.config.initializer_range
        if isinstance(module, FreeWeight):
            _weight_or_bias_init(module.value, std)
        elif isinstance(module, ScalarIdentityWeight):
            init.ones_(module.scale)
        elif isinstance(module, EquivariantWeight):
            init.normal_(module.coefficients, mean=0.0, std=std)
        elif isinstance(module, InvariantBias):
            init.zeros_(module.coefficients)
        elif isinstance(module, ResidualPathwayWeight):
            init.zeros_(module.free)
        elif isinstance(module, SubspaceWeight):  # a fresh model whose history ends in a subspace
            _weight_or_bias_init(module.w_t, std)
        elif isinstance(module, RandomSubspace):
            init.zeros_(module.theta)
            init.copy_(module.signature, module.expected_signature())
        elif isinstance(module, CoordinateStep):
            init.normal_(module.weight, mean=0.0, std=1e-3)
        elif isinstance(module, LocalDescriptorMap):  # many inputs: scaled by their count
            init.normal_(module.weight, mean=0.0, std=std / module.in_features**0.5)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, VectorInputEmbedding):
            for scale in module.scales.values():
                init.zeros_(scale)  # the model starts as one without the raw vectors, and learns to read them
        elif isinstance(module, GeoRMSNorm):
            init.ones_(module.weight)
            if module.block_weight is not None:
                init.ones_(module.block_weight)
        if hasattr(module, "reset_buffers"):  # constants that are never saved: rebuild them
            module.reset_buffers()
        if isinstance(module, WeightParametrization) and module.anchor is not None:
            init.copy_(module.anchor, module.weight())  # a fresh model is anchored where it starts


def _weight_or_bias_init(tensor: torch.Tensor, std: float) -> None:
    """Llama's initialisation: matrices normal(0, std), vectors (biases) zero."""
    if tensor.dim() == 2:
        init.normal_(tensor, mean=0.0, std=std)
    else:
        init.zeros_(tensor)


class LocalDescriptorMap(nn.Linear):
    """The linear map of the local descriptors (``local_descriptor_shells``) into the scalar inputs. Its
    weights start at ``initializer_range / sqrt(in_features)``: the descriptors' many numbers then add
    about as much to a token's scalars as one input feature does."""


class GeoTransformerModel(GeoTransformerPreTrainedModel):
    """The encoder. Inputs (batch B, tokens T):

    * ``input_ids`` ``(B, T)`` and/or ``features`` ``(B, T, feature_size)``: invariant token inputs;
    * ``positions``: the group elements, a tensor for a single attribute or a dict ``{attribute: tensor}``;
      per attribute ``(B, T)`` for R^1 positions (integers welcome; default ``arange(T)``), ``(B, T, n)``
      for R^n, ``(B, T)`` angles for SO(2), ``(B, T, 4)`` quaternions for SO(3), ``(B, T, 3)`` directions
      for S^2 (see the table of group elements in docs/model.md). Padded tokens may hold anything;
    * ``attention_mask`` ``(B, T)``: 1 for tokens, 0 for padding;
    * ``memory`` ``(B, S, hidden)``, ``memory_positions``, ``memory_attention_mask`` ``(B, S)``: states
      that keys and values also read in every layer (cross-attention to an encoder's output, e.g.
      decoder queries at target poses against encoder keys at source poses); the relative encoding puts
      keys at the memory's elements, so logits depend on g_i^-1 g'_j. Not a per-layer KV cache.
    """

    def __init__(self, config: GeoTransformerConfig):
        super().__init__(config)
        self.absolute_pe = AbsolutePE(config.pe_absolute, combine="concat") if config.pe_absolute else None
        relative_cls = GTAPE if config.pe_relative_mode == "gta" else RotaryPE
        self.relative_pe = (
            relative_cls(config.pe_relative, head_dim=config.head_dim, pair_layout=config.pair_layout)
            if config.pe_relative
            else None
        )
        encodings = nn.ModuleList(pe for pe in (self.absolute_pe, self.relative_pe) if pe is not None)
        for shared in config.shared_rotations or []:  # before any irreps are read: they name the frame
            share_rotation(encodings, shared)
        groups = {}
        for pe in (self.absolute_pe, self.relative_pe):
            if pe is not None:
                groups.update(pe.rep.acting_rep.attribute_groups)
        self.attribute_groups = groups
        self.attribute_spaces = {}
        for pe in (self.absolute_pe, self.relative_pe):
            if pe is not None:
                self.attribute_spaces.update(pe.rep.attribute_groups)
        self.inputs = GeoTransformerInputs(config, self.attribute_spaces, self.relative_pe)
        trivial_groups = groups or {"position": Translations(1)}
        if self.absolute_pe is not None:
            embedding = self.embedding_rep = self.absolute_pe.embedding_rep
            self.state_rep = DirectSum([Trivial(config.scalar_size, trivial_groups), embedding])
            self.block_sizes = tuple(d for mult, d in embedding.layout for _ in range(mult))
        else:
            self.state_rep = Trivial(config.hidden_size, trivial_groups)
            self.embedding_rep, self.block_sizes = None, ()
        self.scalar_reps = (
            Trivial(config.scalar_size, trivial_groups),
            Trivial(config.intermediate_size, trivial_groups),
        )
        self.scalar_size = config.scalar_size  # an int: the forward never re-derives it from the spec
        self.embed_tokens = nn.Embedding(config.vocab_size, config.scalar_size) if config.vocab_size else None
        self.embed_features = (
            nn.Linear(config.feature_size, config.scalar_size, bias=True) if config.feature_size else None
        )
        points = config.point_attributes or []
        self.embed_distances = (
            nn.Linear(len(points), config.scalar_size, bias=not config.feature_size) if points else None
        )
        # local descriptors around planar points: invariant shape features added to the scalar inputs
        self.descriptor_points = [a for a in points if self.attribute_spaces[a].name == "so2"]
        shells = config.local_descriptor_shells
        size = planar_power_spectrum_size(len(shells), config.local_descriptor_frequencies) if shells else 0
        self.embed_descriptors = (
            LocalDescriptorMap(size * len(self.descriptor_points), config.scalar_size, bias=False)
            if size
            else None
        )
        self.layers = nn.ModuleList(
            GeoTransformerLayer(config, i, self.state_rep, self.block_sizes, self.embedding_rep)
            for i in range(config.num_hidden_layers)
        )
        if config.relative_point_values and self.layers and not self.layers[0].self_attn.point_value_channels:
            raise ValueError(
                f"relative_point_values: pe_absolute={config.pe_absolute!r} has no degree-1 channels that "
                f"turn with the point attributes {config.point_attributes}"
            )
        self.vector_embedding = (
            VectorInputEmbedding(config, self.embedding_rep)
            if config.vector_inputs and self.embedding_rep is not None
            else None
        )
        self.norm = GeoRMSNorm(config.scalar_size, self.block_sizes, config.rms_norm_eps)
        self._replay_phases()
        self.post_init()

    def _local_descriptors(
        self, centred: dict[str, torch.Tensor], features: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``(B, T, descriptors)`` of the planar point attributes (``local_descriptor_shells``), in the
        descriptor map's dtype; computed outside autocast, in the points' precision."""
        c = self.config
        weights = None
        if c.local_descriptor_weight is not None:
            if features is None:
                raise ValueError(
                    f"features: local_descriptor_weight={c.local_descriptor_weight} reads each neighbour's "
                    "weight from the features; pass them"
                )
            weights = features[..., c.local_descriptor_weight]
        points = {a: centred[a] for a in self.descriptor_points}
        # half-precision points would bin distances to a few hundredths: at least float32 here
        points = {
            a: x.float() if x.dtype in (torch.float16, torch.bfloat16) else x for a, x in points.items()
        }
        shells, width = c.local_descriptor_shells, c.local_descriptor_width
        with _without_autocast(next(iter(points.values())).device.type):
            parts = [
                planar_power_spectrum(x, shells, width, c.local_descriptor_frequencies, weights, mask)
                for x in points.values()
            ]
        return torch.cat(parts, dim=-1).to(self.embed_descriptors.weight.dtype)

    # --- phases ------------------------------------------------------------------------------------------
    def _phase_arguments(self) -> dict:
        s, i = self.scalar_reps
        reps = {
            r"(.*\.)?self_attn\.(q|k|v|o)_proj": (self.state_rep, self.state_rep),
            r"(.*\.)?mlp\.pe_proj": (self.embedding_rep, self.embedding_rep),
            r"(.*\.)?mlp\.(gate|up)_proj": (s, i),
            r"(.*\.)?mlp\.down_proj": (i, s),
        }
        c = self.config
        return {
            "layers": ATTENTION_LAYERS if c.phase_layers == "attention" else ALL_LAYERS,
            "reps": reps,
            "subspace_dim": c.subspace_dim,
            "projection": c.subspace_projection,
            "seed": c.subspace_seed,
            "shared_subspace": c.shared_subspace,
        }

    def _replay_phases(self) -> None:
        """Build the parametrisations that ``config.phase_history`` went through (values come from the
        checkpoint or from ``_init_weights``)."""
        for i, phase in enumerate(self.config.phase_history):
            if i == 0 and phase == "free":
                continue
            set_phase(self, phase, rebuild=True, **self._phase_arguments())

    def set_phase(self, phase: str, **overrides) -> PhaseReport:
        """Move the phase-controlled layers to ``phase`` without changing the function (see
        `geo_pe.phases.set_phase`) and record it in the config, so ``save_pretrained`` keeps it.

        ``overrides`` may set ``subspace_dim``, ``subspace_projection``, ``subspace_seed``,
        ``shared_subspace`` (stored in the config) and ``project``.
        """
        project = overrides.pop("project", False)
        for key, value in overrides.items():
            if key not in ("subspace_dim", "subspace_projection", "subspace_seed", "shared_subspace"):
                raise ValueError(f"{key}: not a phase setting of the config")
            setattr(self.config, key, value)
        report = set_phase(self, phase, project=project, **self._phase_arguments())
        self.config.phase_history = [*self.config.phase_history, phase]
        self.config.validate_geometry()
        return report

    # --- inputs ------------------------------------------------------------------------------------------
    def token_invariants(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., scalars + PE blocks)``: the scalars and the norm of every PE block (invariant)."""
        if not self.block_sizes:
            return x
        s, p = x.split((self.scalar_size, x.shape[-1] - self.scalar_size), dim=-1)
        index = self.norm.block_index  # the block of every PE channel
        wide = p.to(compute_dtype(p))  # under CUDA autocast pow runs in float32 whatever p is: say so here
        squares = torch.zeros(*p.shape[:-1], len(self.block_sizes), dtype=wide.dtype, device=p.device)
        squares = squares.index_add(-1, index, wide * wide)
        return torch.cat((s, squares.clamp_min(1e-12).sqrt().to(s.dtype)), dim=-1)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        features: torch.Tensor | None = None,
        positions: torch.Tensor | dict | None = None,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        memory: torch.Tensor | None = None,
        memory_positions: torch.Tensor | dict | None = None,
        memory_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> GeoTransformerOutput | tuple:
        c = self.config
        if kwargs:
            raise ValueError(f"{sorted(kwargs)}: unexpected inputs for GeoTransformerModel")
        points = c.point_attributes or []
        if input_ids is None and features is None and not (points and isinstance(positions, dict)):
            raise ValueError("input_ids, features: give at least one of them")
        reference = "input_ids" if input_ids is not None else "features"
        ref = input_ids if input_ids is not None else features
        if ref is None:  # points only
            reference, ref = f"positions[{points[0]!r}]", positions.get(points[0])
            if not isinstance(ref, torch.Tensor):
                raise ValueError(f"{reference}: expected a (batch, tokens, 3) tensor of points")
        if ref.dim() < 2:
            raise ValueError(f"{reference}: expected shape (batch, tokens, ...), got {tuple(ref.shape)}")
        B, T = ref.shape[0], ref.shape[1]
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != (B, T):
                raise ValueError(
                    f"attention_mask: expected shape ({B}, {T}) (the batch and tokens of {reference}), got "
                    f"{tuple(attention_mask.shape)}"
                )
            mask = attention_mask.bool()
        scalars = 0
        if input_ids is not None:
            if self.embed_tokens is None:
                raise ValueError(
                    "input_ids: this model has no token embedding (vocab_size is 0); pass features"
                )
            if input_ids.shape != (B, T):
                raise ValueError(f"input_ids: expected shape (batch, tokens), got {tuple(input_ids.shape)}")
            if mask is not None:  # padding may hold any id
                input_ids = input_ids.masked_fill(~mask, 0)
            scalars = self.embed_tokens(input_ids)
        if features is not None:
            if self.embed_features is None:
                raise ValueError("features: this model has no feature projection (feature_size is 0)")
            if features.dim() != 3 or features.shape[:2] != (B, T) or features.shape[-1] != c.feature_size:
                raise ValueError(
                    f"features: expected shape ({B}, {T}, {c.feature_size}) (batch and tokens of "
                    f"{reference}, feature_size), got {tuple(features.shape)}"
                )
            if mask is not None:  # padding may hold anything, NaN included: it never reaches a valid token
                features = features.masked_fill(~mask[..., None], 0)
            if self.inputs.validates_values():
                bad = ~torch.isfinite(features)
                if bool(bad.any()):
                    raise ValueError(
                        f"features: expected finite values on valid tokens, got {int(bad.sum())} NaN or "
                        "infinite entries"
                    )
            scalars = scalars + self.embed_features(features.to(self.embed_features.weight.dtype))
        pairs = None
        vectors = self.inputs.vectors(positions, B, T, mask, self.dtype)
        if points:
            positions, centred, distances = self.inputs.center_points(positions, B, T, mask)
            if c.distance_bias or c.relative_point_values or c.coordinate_updates:
                if memory is not None:
                    raise ValueError(
                        "memory: distance_bias and relative_point_values are defined between the model's own "
                        "tokens only"
                    )
                pairs = self.inputs.pair_geometry(centred, mask, self.dtype, vectors)
            start = {a: centred[a].to(self.dtype) for a in points}
            moving = start
            distances = self.embed_distances(distances.to(self.embed_distances.weight.dtype))
            scalars = scalars + distances
            if self.embed_descriptors is not None:
                scalars = scalars + self.embed_descriptors(self._local_descriptors(centred, features, mask))
        positions = self.inputs.positions(positions, B, T, mask, scalars.device, reference)
        # The residual stream keeps the parameters' dtype (float32 under autocast, as in HF's Llama): a
        # feature projection's bf16 output under autocast would otherwise carry the whole stream in bf16
        x = scalars.to(self.norm.weight.dtype)
        # positions are GroupElements, validated once above, which the encodings read without checking.
        # Under mixed precision they are computed outside autocast: angles, cos/sin and Wigner matrices
        # stay in the elements' float32
        with _without_autocast(x.device.type):
            # once per forward, shared by both PEs: one Wigner matrix / harmonic per attribute and degree
            # (the relative PE first: it usually reads the higher degrees, which come with the lower)
            shared: dict = {}
            relative = None
            if self.relative_pe is not None:
                relative = self.relative_pe.encode(positions, cache=shared)
            if self.absolute_pe is not None:
                gamma = self.absolute_pe.embed(self.absolute_pe.encode(positions, cache=shared)).to(x.dtype)
                x = torch.cat((x, gamma.expand(B, T, -1)), dim=-1)
        if self.vector_embedding is not None:
            x = x + self.vector_embedding(vectors)
        attn_mask, is_causal = self.inputs.attention_mask(mask, T, x.device)
        key_encoding = None
        if memory is not None:
            memory, key_encoding, attn_mask = self.inputs.memory(
                memory, memory_positions, memory_attention_mask, positions, mask, B, T, self.dtype
            )
            is_causal = False
        hidden_states, attentions = (
            ((x,) if output_hidden_states else None),
            (() if output_attentions else None),
        )
        for layer in self.layers:
            if T == 0:  # an empty sequence: nothing to attend to, the state stays empty
                break
            x, weights, steps = layer(
                x,
                self.relative_pe,
                relative,
                attn_mask,
                bool(output_attentions),
                is_causal,
                memory,
                key_encoding,
                pairs,
                vectors,
            )
            if steps:  # coordinate_updates: move the points, and the next layer reads their new geometry
                moving = {a: moving[a] + steps[a] for a in points}
                if layer is not self.layers[-1]:
                    pairs = self.inputs.pair_geometry(moving, mask, self.dtype, vectors, pairs)
            if output_hidden_states:
                hidden_states += (x,)
            if output_attentions:
                attentions += (weights,)
        x = self.norm(x)
        displacements = None
        if c.coordinate_updates:
            keep = 1.0 if mask is None else mask[..., None].to(self.dtype)
            displacements = {a: (moving[a] - start[a]) * keep for a in points}
        out = GeoTransformerOutput(x, self.token_invariants(x), hidden_states, attentions, displacements)
        return out if return_dict is not False else out.to_tuple()


def _pool(invariants: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over valid tokens ``(B, T, C) -> (B, C)``; zero for a sequence without any (T = 0 too)."""
    if attention_mask is None:
        return invariants.sum(1) / max(invariants.shape[1], 1)
    weights = attention_mask.to(invariants.dtype)[..., None]
    return (invariants * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def _refuse_another_heads_folder(cls: type, args: tuple, kwargs: dict) -> None:
    """Under ``trust_remote_code``, transformers maps an Auto class to the first remote class a process
    loads for this config's code and hands every later folder to it. A remote class that the folder's
    ``auto_map`` does not name is such a leftover: name the mismatch instead of loading an equivariant
    head into the encoder or into another head. (The installed classes load any folder.)"""
    config = kwargs.get("config")
    if not cls.__module__.startswith("transformers_modules") or config is None:
        return
    named = {str(target).rsplit(".", 1)[-1] for target in (getattr(config, "auto_map", None) or {}).values()}
    if named and cls.__name__ not in named:
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        saved = (getattr(config, "architectures", None) or ["another class"])[0]
        raise ValueError(
            f"pretrained_model_name_or_path: {source!s} holds a {saved}, but this process already mapped the "
            f"Auto class to {cls.__name__} when it loaded another folder by remote code; load it with "
            f"{saved}.from_pretrained from the installed geo-pe, or in a fresh process"
        )


class _WithHead(GeoTransformerPreTrainedModel):
    def __init__(self, config: GeoTransformerConfig, out_features: int | None):
        """``out_features``: width of a linear head on the invariants (None: the subclass builds its own
        and calls ``post_init``)."""
        super().__init__(config)
        self.model = GeoTransformerModel(config)
        width = config.scalar_size + len(self.model.block_sizes)
        self.dropout = nn.Dropout(config.classifier_dropout)
        if out_features is not None:
            self.head = nn.Linear(width, out_features)
            self.post_init()

    def set_phase(self, phase: str, **overrides) -> PhaseReport:
        """See `GeoTransformerModel.set_phase` (acts on the encoder; the head stays free)."""
        return self.model.set_phase(phase, **overrides)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        features: torch.Tensor | None = None,
        positions: torch.Tensor | dict | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        memory: torch.Tensor | None = None,
        memory_positions: torch.Tensor | dict | None = None,
        memory_attention_mask: torch.Tensor | None = None,
    ):
        """Inputs as in `GeoTransformerModel`; ``labels`` as the head describes."""
        out = self.model(
            input_ids=input_ids,
            features=features,
            positions=positions,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            memory=memory,
            memory_positions=memory_positions,
            memory_attention_mask=memory_attention_mask,
        )
        result = self._head(out, attention_mask, labels, positions)
        return result if return_dict is not False else result.to_tuple()

    def _head(self, out: GeoTransformerOutput, attention_mask, labels, positions) -> ModelOutput:
        raise NotImplementedError


class GeoTransformerForSequenceClassification(_WithHead):
    """Invariant sequence labels from mean-pooled invariants; ``problem_type`` as in HF (regression when
    ``num_labels == 1``, single- or multi-label classification otherwise)."""

    def __init__(self, config: GeoTransformerConfig):
        super().__init__(config, config.num_labels)

    def _head(self, out, attention_mask, labels, positions):
        logits = self.head(self.dropout(_pool(out.invariants, attention_mask)))
        loss = None if labels is None else _sequence_loss(self.config, logits, labels)
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class GeoTransformerForSequenceRegression(_WithHead):
    """``num_labels`` real targets per sequence from mean-pooled invariants, mean squared error;
    ``predictions`` is ``(B,)`` for one target, else ``(B, num_labels)``."""

    def __init__(self, config: GeoTransformerConfig):
        super().__init__(config, config.num_labels)

    def _head(self, out, attention_mask, labels, positions):
        predictions = self.head(self.dropout(_pool(out.invariants, attention_mask)))
        if self.config.num_labels == 1:
            predictions = predictions[..., 0]
        loss = None
        if labels is not None:
            loss = F.mse_loss(predictions, labels.to(predictions.dtype).view_as(predictions))
        return SequenceRegressionOutput(loss, predictions, out.hidden_states, out.attentions)


class GeoTransformerForTokenClassification(_WithHead):
    """Per-token labels from per-token invariants (cross entropy, -100 ignored)."""

    def __init__(self, config: GeoTransformerConfig):
        super().__init__(config, config.num_labels)

    def _head(self, out, attention_mask, labels, positions):
        logits = self.head(self.dropout(out.invariants))
        loss = None
        if labels is not None:
            flat = logits.reshape(-1, logits.shape[-1])
            loss = F.cross_entropy(flat, labels.reshape(-1), ignore_index=-100)
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)


def _sequence_loss(config, logits, labels):
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return (
            F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
            if config.num_labels == 1
            else (F.mse_loss(logits, labels.to(logits.dtype)))
        )
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
