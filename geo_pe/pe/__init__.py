"""Plug-in positional encodings from group representations: `AbsolutePE`, `RotaryPE`, `GTAPE`.

See `geo_pe.pe.modules` for the modes and `geo_pe.pe.hf` for swapping the rotary embedding of a
HuggingFace Llama-family model.
"""

from geo_pe.pe.encoding import Encoding, EncodingPlan, Segment, apply_encoding
from geo_pe.pe.modules import GTAPE, AbsolutePE, EmbeddingRep, GroupPE, RotaryPE, absolute_block_sizes

__all__ = [
    "GTAPE",
    "AbsolutePE",
    "EmbeddingRep",
    "Encoding",
    "EncodingPlan",
    "GroupPE",
    "RotaryPE",
    "Segment",
    "absolute_block_sizes",
    "apply_encoding",
]
