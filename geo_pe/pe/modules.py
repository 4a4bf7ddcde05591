"""Positional-encoding modules built from a group representation: absolute, rotary and GTA.

Every module is built from an irreps spec (or a `Representation`), computes an `Encoding` once per
model forward with ``encode(positions)``, and applies it in every layer:

=============  =========================================================  ==================================
module         what it does                                               equivariance
=============  =========================================================  ==================================
`AbsolutePE`   token features get gamma(g_i) (concatenated or added)      exact only while the weights are
                                                                          in the equivariant subspace;
                                                                          <gamma(g_i), gamma(g_j)> =
                                                                          chi(g_i^-1 g_j)
`RotaryPE`     q_i -> rho(g_i) q_i, k_j -> rho(g_j) k_j                   logits depend on g_i^-1 g_j,
                                                                          for any weights
`GTAPE`        rotary on q, k and v; rho(g_i)^T on each output            as rotary, values too
=============  =========================================================  ==================================

Attention code takes a PE module (or nothing) and calls ``pe.attend(q, k, v, encoding, ...)``: the
same signature for every mode and group, so swapping encodings never touches the attention code.

Example (plain PyTorch attention, RoPE on 64-dim heads)::

    >>> import torch
    >>> from geo_pe.pe import RotaryPE
    >>> pe = RotaryPE("t1:32", head_dim=64)
    >>> q = k = v = torch.randn(2, 4, 10, 64)                 # (batch, heads, tokens, head_dim)
    >>> enc = pe.encode(torch.arange(10))                      # once per forward, shared by layers
    >>> pe.attend(q, k, v, enc, is_causal=True).shape
    torch.Size([2, 4, 10, 64])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from geo_pe.pe.encoding import PAIR_LAYOUTS, X_LAYOUTS, Encoding, EncodingPlan, apply_encoding
from geo_pe.reps.base import TRIVIAL, Representation
from geo_pe.reps.spec import IrrepsSpec

__all__ = ["GTAPE", "AbsolutePE", "EmbeddingRep", "GroupPE", "RotaryPE", "absolute_block_sizes"]


class GroupPE(nn.Module):
    """Shared base: the representation (from a spec), its `EncodingPlan`, and `encode`.

    Args:
        spec: an irreps spec (string, dict or `IrrepsSpec`) or a `Representation`.
    """

    def __init__(self, spec: str | Mapping | IrrepsSpec | Representation):
        super().__init__()
        if isinstance(spec, Representation):
            self.spec: IrrepsSpec | None = None
            self.rep = spec
        else:
            self.spec = IrrepsSpec.parse(spec)
            self.rep = self.spec.build()
        self.plan = EncodingPlan(self.rep)
        self.dim = self.rep.dim  # static; computed once so forward never walks the representation

    def encode(self, positions, cache: dict | None = None) -> Encoding:
        """The per-token `Encoding` of group elements ``positions`` (tensor or dict of attributes).

        Call it once per model forward and pass the result to every layer. PEs that read the same
        ``positions`` share their Wigner matrices and harmonics through one ``cache`` dict.
        """
        return self.plan.encode(positions, cache=cache)

    def reset_parameters(self) -> None:
        """Rebuild the non-persistent frequency buffers (after ``to_empty`` or HF meta-device loading)."""
        for module in self.rep.modules():
            if module is not self.rep and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if hasattr(self.rep, "reset_parameters"):
            self.rep.reset_parameters()

    def _check_width(self, width: int | None, name: str) -> None:
        if width is not None and width != self.dim:
            spec = f"{self.spec}" if self.spec is not None else type(self.rep).__name__
            raise ValueError(
                f"spec: {spec!r} has dimension {self.dim}, which does not tile {name}={width}; "
                f"choose irreps whose dimensions add up to {width}"
            )

    def extra_repr(self) -> str:
        return f"spec={str(self.spec)!r}, dim={self.dim}" if self.spec is not None else f"dim={self.dim}"


class RotaryPE(GroupPE):
    """Rotary encoding: ``x_i -> rho(g_i) x_i`` on queries and keys (RoPE generalised to any group).

    Args:
        spec: irreps spec or representation; its dimension must equal ``head_dim``.
        head_dim: checked against the spec when given.
        pair_layout: ``"interleaved"`` (channel pairs (2k, 2k+1), fastest: one complex multiply) or
            ``"half"`` (pairs (k, k + n), the layout of HF's ``rotate_half``).
        x_layout: ``"bhtd"`` (default, HF's attention layout), ``"bthd"`` or ``"btd"``.

    With ``spec="t1:<head_dim/2>"`` this is standard RoPE (base 10000).

    The contract attention code calls, whatever the mode: `query` on queries, ``pe(x, encoding)`` on
    keys, `transport_values` on values and `transport_output` on each head's output (both the identity
    here; `GTAPE` moves values and outputs too). ``rotates_values`` says whether the last two do
    anything, so callers may skip them. For orthogonal rho (translations, SO(2), SO(3), S^2) `query` is
    ``pe(x, encoding)``; for SE(3)'s homogeneous block it is rho^-T, so that the logit
    ``(rho(g_i)^-T q)^T rho(g_j) k = q^T rho(g_i^-1 g_j) k`` depends on g_i^-1 g_j only (``orthogonal``
    tells which). Keys may sit at other elements than queries (cross-attention, a cache): pass their
    encoding as ``key_encoding``.
    """

    rotates_values: bool = False

    def __init__(
        self,
        spec,
        *,
        head_dim: int | None = None,
        pair_layout: str = "interleaved",
        x_layout: str = "bhtd",
    ):
        super().__init__(spec)
        if pair_layout not in PAIR_LAYOUTS:
            raise ValueError(f"pair_layout: expected one of {PAIR_LAYOUTS}, got {pair_layout!r}")
        if x_layout not in X_LAYOUTS:
            raise ValueError(f"x_layout: expected one of {X_LAYOUTS}, got {x_layout!r}")
        self._check_width(head_dim, "head_dim")
        self.pair_layout, self.x_layout = pair_layout, x_layout
        self.orthogonal = self.plan.orthogonal

    def _encode_tensor(
        self, x: torch.Tensor, enc: Encoding, transpose: bool, name: str, inverse: bool = False
    ) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < (2 if self.x_layout == "btd" else 3):
            raise ValueError(f"{name}: expected a tensor in {self.x_layout!r} layout, got {type(x).__name__}")
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{name}: expected head_dim {self.dim} (the spec's dimension), got shape {tuple(x.shape)}"
            )
        if not isinstance(enc, Encoding):
            raise ValueError(
                f"encoding: expected the Encoding returned by encode(), got {type(enc).__name__}"
            )
        return apply_encoding(
            x,
            enc,
            self.plan.segments,
            pair_layout=self.pair_layout,
            transpose=transpose,
            inverse=inverse,
            x_layout=self.x_layout,
        )

    def forward(self, x: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """rho(g_i) x_i for every token i (keys)."""
        return self._encode_tensor(x, encoding, False, "x")

    def query(self, x: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """rho(g_i)^-T x_i for every token i (queries); rho(g_i) x_i when rho is orthogonal."""
        if self.orthogonal:
            return self._encode_tensor(x, encoding, False, "q")
        return self._encode_tensor(x, encoding, True, "q", inverse=True)

    def transpose(self, x: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """rho(g_i)^T x_i for every token i (the inverse rotation when rho is orthogonal)."""
        return self._encode_tensor(x, encoding, True, "x")

    def inverse(self, x: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """rho(g_i)^-1 x_i for every token i (rho^T when rho is orthogonal)."""
        return self._encode_tensor(x, encoding, False, "x", inverse=True)

    def transport_values(self, v: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """What values become before attention (``encoding`` of the keys): unchanged for rotary."""
        return v

    def transport_output(self, out: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """What each head's output becomes after attention (``encoding`` of the queries): unchanged for
        rotary."""
        return out

    def rotate_qk(
        self, q: torch.Tensor, k: torch.Tensor, encoding: Encoding, key_encoding: Encoding | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`query` on q at ``encoding``, rho on k at ``key_encoding`` (default: the same elements)."""
        keys = encoding if key_encoding is None else key_encoding
        return self.query(q, encoding), self._encode_tensor(k, keys, False, "k")

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        encoding: Encoding,
        *,
        key_encoding: Encoding | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        dropout_p: float = 0.0,
    ) -> torch.Tensor:
        """Scaled dot-product attention on rotated queries and keys (``x_layout`` must be ``"bhtd"``);
        keys and values at ``key_encoding`` when it is given (queries at ``encoding``)."""
        keys = encoding if key_encoding is None else key_encoding
        q, k = self.rotate_qk(q, k, encoding, keys)
        v = self.transport_values(v, keys)
        out = _sdpa(q, k, v, attn_mask, is_causal, scale, dropout_p, self.x_layout)
        return self.transport_output(out, encoding)


class GTAPE(RotaryPE):
    """Geometric transform attention (Miyato et al., ICLR 2024): rotary on q, k and v, and rho(g_i)^-1 on
    each output (rho^T for orthogonal rho), so that ``o_i = sum_j a_ij rho(g_i^-1 g_j) v_j`` is
    invariant under g -> h g.
    """

    rotates_values = True

    def transport_values(self, v: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """rho(g_j) v_j: values carried into the common frame."""
        return self._encode_tensor(v, encoding, False, "v")

    def transport_output(self, out: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """rho(g_i)^-1 o_i: each output carried back to its token's frame."""
        return self._encode_tensor(out, encoding, False, "attention output", inverse=True)


def _sdpa(q, k, v, attn_mask, is_causal, scale, dropout_p, x_layout):
    if x_layout != "bhtd":
        raise ValueError(f"x_layout: attend() needs 'bhtd' tensors, this module was built with {x_layout!r}")
    enable_gqa = k.shape[-3] != q.shape[-3]
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=attn_mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=enable_gqa,
    )


class AbsolutePE(GroupPE):
    """Absolute encoding gamma(g) = vec(rho(g)), block by block, added to or concatenated with features.

    A matrix block of multiplicity m contributes ``sqrt(m) vec(B(g))`` with column-major vec (each
    column transforms by the block under g -> h g); each 2x2 rotation block contributes its first
    column scaled by sqrt(2), ``sqrt(2) (cos, sin)``, which has the inner products of its vec; a trivial
    block of multiplicity m contributes the constant sqrt(m); a direction on S^2 contributes
    ``sqrt(m) Y_l(x)``. Hence ``<gamma(g_i), gamma(g_j)> = trace rho(g_i)^T rho(g_j) = chi(g_i^-1 g_j)``
    (a Legendre kernel of x_i . x_j for directions).

    Args:
        spec: irreps spec or representation.
        combine: ``"add"`` (the encoding width must equal ``width``) or ``"concat"``.
        width: the feature width, checked against the encoding width for ``"add"``.
    """

    def __init__(self, spec, *, combine: str = "add", width: int | None = None):
        super().__init__(spec)
        if combine not in ("add", "concat"):
            raise ValueError(f"combine: expected 'add' or 'concat', got {combine!r}")
        self.combine = combine
        if not self.plan.orthogonal:
            raise ValueError(
                f"spec: {str(self.spec)!r} has non-orthogonal blocks (SE(3)'s homogeneous 'h'), whose "
                "encodings' inner products trace(rho(g_i)^T rho(g_j)) are not functions of g_i^-1 g_j; an "
                "absolute encoding of poses takes the Wigner degrees of their rotation (e.g. 'se3:1x1+1x2'), "
                "and 'h' blocks go to rotary or GTA encodings"
            )
        self.width = sum(_embedding_width(seg) for seg in self.plan.segments)
        if combine == "add" and width is not None and width != self.width:
            raise ValueError(
                f"spec: {str(self.spec)!r} gives an absolute encoding of width {self.width}, which does not "
                f"match the feature width {width} to add it to; change the irreps or use combine='concat'"
            )

    @property
    def embedding_rep(self) -> EmbeddingRep:
        """The representation of the acting group on gamma: gamma(h g) = R(h) gamma(g)."""
        return EmbeddingRep(self)

    def embed(self, encoding: Encoding) -> torch.Tensor:
        """gamma(g) ``(*batch, tokens, width)`` in float32/float64."""
        pieces = []
        for seg in self.plan.segments:
            copies = seg.copies
            if seg.kind == "identity":
                ref = _reference(encoding)
                pieces.append(ref.new_full((*ref.shape[:-1], 1), math.sqrt(copies)))
            elif seg.kind == "rotation":
                sl = slice(seg.source, seg.source + copies)
                col = torch.stack((encoding.cos[..., sl], encoding.sin[..., sl]), dim=-1)  # (..., n, 2)
                pieces.append((math.sqrt(2.0) * col).flatten(-2))
            elif seg.kind == "matrix":
                M = encoding.matrices[seg.source]
                pieces.append(math.sqrt(copies) * M.transpose(-1, -2).flatten(-2))
            else:
                pieces.append(math.sqrt(copies) * encoding.harmonics[seg.source])
        batch = torch.broadcast_shapes(*(p.shape[:-1] for p in pieces))
        return torch.cat([p.expand(*batch, p.shape[-1]) for p in pieces], dim=-1)

    def forward(self, features: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """Features ``(*batch, tokens, width)`` with gamma(g) added, or concatenated on the last dim."""
        gamma = self.embed(encoding).to(features.dtype)
        if self.combine == "add":
            if features.shape[-1] != self.width:
                shape = tuple(features.shape)
                raise ValueError(
                    f"features: expected width {self.width} to add the encoding to, got shape {shape}"
                )
            return features + gamma
        batch = torch.broadcast_shapes(features.shape[:-1], gamma.shape[:-1])
        return torch.cat((features.expand(*batch, -1), gamma.expand(*batch, -1)), dim=-1)


class EmbeddingRep(Representation):
    """How the channels of `AbsolutePE.embed` transform under g -> h g: gamma(h g) = R(h) gamma(g).

    Column by column, vec(B(h g)) = (I (x) B(h)) vec(B(g)): a matrix block of dimension d gives d copies of
    its irrep, a 2x2 rotation block (stored as one column) one copy, a trivial block one trivial channel,
    a direction one copy of its SO(3) irrep. Blocks are those of the PE's ``acting_rep`` at h.
    """

    def __init__(self, pe: AbsolutePE):
        super().__init__()
        acting = pe.rep.acting_rep
        irreps = acting.irreps
        self._acting = [acting]  # a reference: the PE module owns it
        self._entries: list[tuple[int | None, int, int]] = []  # (acting entry or None for trivial, mult, dim)
        for seg in pe.plan.segments:
            if seg.kind == "identity":
                self._entries.append((None, 1, 1))
                continue
            for e in seg.entries:
                mult, irrep = irreps[e]
                copies = {"rotation": mult, "matrix": seg.block, "zonal": 1}[seg.kind]
                self._entries.append((e, copies, irrep.dim))

    @property
    def group(self):
        return self._acting[0].group

    @property
    def attribute_groups(self):
        return self._acting[0].attribute_groups

    @property
    def layout(self):
        return tuple((mult, d) for _, mult, d in self._entries)

    @property
    def irreps(self):
        # read from the acting representation each time: `share_rotation` may rename its irreps
        irreps = self._acting[0].irreps
        return tuple((copies, TRIVIAL if e is None else irreps[e][1]) for e, copies, _ in self._entries)

    def complex_structures(self):
        structures = self._acting[0].complex_structures()
        return [None if e is None else structures[e] for e, _, _ in self._entries]

    def blocks(self, g):
        acting = self._acting[0].blocks(g)
        out = []
        for e, _, _ in self._entries:
            out.append(torch.ones_like(acting[0][..., :1, :1]) if e is None else acting[e])
        return out


def _embedding_width(seg) -> int:
    if seg.kind == "identity":
        return 1
    if seg.kind == "rotation":
        return seg.stop - seg.start  # (cos, sin) per pair
    if seg.kind == "matrix":
        return seg.block * seg.block
    return seg.block


def _reference(enc: Encoding) -> torch.Tensor:
    """Any per-token tensor of the encoding, for shape, dtype and device."""
    for t in (enc.cos, *enc.matrices, *enc.harmonics):
        if t is not None:
            return t
    raise ValueError(
        "encoding: an encoding with only trivial blocks carries no shape; add a non-trivial irrep"
    )


@functools.lru_cache(maxsize=128)
def absolute_block_sizes(spec: str) -> tuple[int, ...]:
    """The channel count of every irrep block of ``AbsolutePE(spec, combine="concat")``'s encoding, in
    order (their sum is its width): a pure function of the spec string, computed once per spec."""
    rep = AbsolutePE(spec, combine="concat").embedding_rep
    return tuple(d for mult, d in rep.layout for _ in range(mult))
