"""Swap the rotary embedding of a HuggingFace Llama-family model for any geo_pe `RotaryPE`.

Llama-family models (Llama, Mistral, Qwen2 and the others built from Llama's attention) compute
``position_embeddings = model.rotary_emb(hidden_states, position_ids)`` once per forward and every
attention layer calls its module's ``apply_rotary_pos_emb(q, k, cos, sin)``. `patch_rotary` replaces
``rotary_emb`` with a module that returns a geo_pe `Encoding`, and wraps ``apply_rotary_pos_emb`` so
that it rotates with the geo_pe module when it receives one (and behaves as before otherwise).

Group elements are passed at forward time::

    handle = patch_rotary(model, "so3:4x1+4x2+...", )            # any spec whose dim is head_dim
    logits = model(input_ids, group_elements={"orientation": q}).logits
    handle.remove()                                             # the original RoPE again

For a translation PE with one attribute, ``position_ids`` are used when no elements are given, so
`rotary_like` (the model's own RoPE as a geo_pe module) reproduces the unpatched logits, generation
included. Other groups need ``group_elements`` on every call (for generation with a cache: the
elements of the new tokens), which ``generate`` does not forward; use a manual decoding loop.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping

import torch
from torch import nn

from geo_pe.pe.encoding import Encoding
from geo_pe.pe.modules import RotaryPE
from geo_pe.reps.groups import Translations
from geo_pe.reps.lie import TranslationRep

__all__ = ["ELEMENTS_KWARG", "GeoRotaryEmbedding", "PatchHandle", "patch_rotary", "rotary_like"]

ELEMENTS_KWARG = "group_elements"


class GeoRotaryEmbedding(nn.Module):
    """Stands in for ``model.rotary_emb``: returns ``(Encoding, pe)`` where HF expects ``(cos, sin)``."""

    def __init__(self, pe: RotaryPE):
        super().__init__()
        self.pe = pe
        self._elements = None
        self._owner: int | None = None
        self.position_attributes = [
            attr for attr, group in pe.rep.attribute_groups.items() if group == Translations(1)
        ]

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[Encoding, RotaryPE]:
        elements = self._elements
        attributes = self.pe.rep.attribute_groups
        if elements is None:
            if set(self.position_attributes) != set(attributes):
                missing = sorted(set(attributes) - set(self.position_attributes))
                raise ValueError(
                    f"{ELEMENTS_KWARG}: this model's rotary PE reads {missing}; call the model with "
                    f"{ELEMENTS_KWARG}={{...}} holding a tensor per attribute"
                )
            elements = {attr: position_ids for attr in self.position_attributes}
        elif isinstance(elements, Mapping):
            elements = dict(elements)
            for attr in self.position_attributes:
                elements.setdefault(attr, position_ids)
        return self.pe.encode(elements), self.pe


class PatchHandle:
    """Returned by `patch_rotary`; ``remove()`` restores the original rotary embedding."""

    def __init__(self, parent: nn.Module, name: str, original: nn.Module, hooks: list):
        self._parent, self._name, self._original, self._hooks = parent, name, original, hooks

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        setattr(self._parent, self._name, self._original)


def _dispatching(original):
    """Wrap a module's ``apply_rotary_pos_emb`` so that it also understands a geo_pe `Encoding`."""

    @functools.wraps(original)
    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        if isinstance(cos, Encoding):
            return sin.rotate_qk(q, k, cos)
        return original(q, k, cos, sin, *args, **kwargs)

    apply_rotary_pos_emb._geo_pe_original = original
    return apply_rotary_pos_emb


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [
        m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "k_proj") and hasattr(m, "head_dim")
    ]


def patch_rotary(model: nn.Module, pe: RotaryPE | str) -> PatchHandle:
    """Use ``pe`` as the rotary embedding of a Llama-family ``model`` (in place); see the module docstring.

    Args:
        model: e.g. ``LlamaForCausalLM``, ``MistralModel``, ``Qwen2ForCausalLM``.
        pe: a `RotaryPE`, or a spec string (built with HF's ``"half"`` pair layout). Its dimension must
            equal the attention head dimension.

    Returns:
        A `PatchHandle`; call the model with ``group_elements=...`` (a tensor or a dict of attributes,
        each ``(batch, tokens, ...)``) for groups other than one translation attribute.
    """
    rotary = [(name, m) for name, m in model.named_modules() if name.split(".")[-1] == "rotary_emb"]
    attentions = _attention_modules(model)
    if len(rotary) != 1 or not attentions:
        raise ValueError(
            "model: expected a Llama-family model with one `rotary_emb` and attention layers with "
            f"q_proj/k_proj, found {len(rotary)} rotary embeddings and {len(attentions)} attention layers"
        )
    head_dims = {a.head_dim for a in attentions}
    if isinstance(pe, str):
        pe = RotaryPE(pe, pair_layout="half")
    if not isinstance(pe, RotaryPE):
        raise ValueError(f"pe: expected a RotaryPE or a spec string, got {type(pe).__name__}")
    if head_dims != {pe.dim}:
        raise ValueError(f"pe: its dimension {pe.dim} must equal the model's head_dim {sorted(head_dims)}")
    if pe.x_layout != "bhtd":
        raise ValueError(
            "pe: HF attention passes (batch, heads, tokens, head_dim); build it with x_layout='bhtd'"
        )
    for attention in attentions:
        module = sys.modules[type(attention).__module__]
        original = getattr(module, "apply_rotary_pos_emb", None)
        if original is None:
            raise ValueError(f"model: {type(attention).__name__} does not use apply_rotary_pos_emb")
        if not hasattr(original, "_geo_pe_original"):
            module.apply_rotary_pos_emb = _dispatching(original)

    name, old = rotary[0]
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    geo = GeoRotaryEmbedding(pe).to(next(old.buffers(), torch.empty(0)).device)
    setattr(parent, name.split(".")[-1], geo)

    def take_elements(module, args, kwargs):
        if ELEMENTS_KWARG in kwargs:
            geo._elements = kwargs.pop(ELEMENTS_KWARG)
            geo._owner = id(module)
        return args, kwargs

    def release(module, args, kwargs, output):
        if geo._owner == id(module):
            geo._elements, geo._owner = None, None

    hooks = []
    for target in {id(model): model, id(parent): parent}.values():
        hooks.append(target.register_forward_pre_hook(take_elements, with_kwargs=True))
        hooks.append(target.register_forward_hook(release, with_kwargs=True, always_call=True))
    return PatchHandle(parent, name.split(".")[-1], old, hooks)


def rotary_like(model: nn.Module) -> RotaryPE:
    """The model's own RoPE as a geo_pe `RotaryPE` (its exact frequencies, HF's "half" pair layout).

    Refuses RoPE variants that are not a fixed set of frequencies (dynamic scaling, attention scaling).
    """
    rotary = [m for name, m in model.named_modules() if name.split(".")[-1] == "rotary_emb"]
    if len(rotary) != 1 or not hasattr(rotary[0], "inv_freq"):
        raise ValueError("model: expected one rotary_emb with an inv_freq buffer")
    emb = rotary[0]
    rope_type = getattr(emb, "rope_type", "default")
    scaling = getattr(emb, "attention_scaling", 1.0)
    if rope_type == "dynamic" or scaling != 1.0:
        raise ValueError(
            f"model: its RoPE ({rope_type!r}, attention_scaling={scaling}) is not a fixed set of "
            "frequencies; only default, linear and llama3-style RoPE can be reproduced"
        )
    inv_freq = emb.inv_freq.detach().to("cpu", torch.float32)
    rep = TranslationRep(1, inv_freq.numel(), frequencies=inv_freq[:, None])
    return RotaryPE(rep, pair_layout="half")
