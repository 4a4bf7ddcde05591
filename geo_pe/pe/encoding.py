"""From per-token group elements to an `Encoding`, and applying it block by block.

A representation's channels split into segments (`Segment`) by block type:

* ``identity``: trivial 1x1 blocks (SO(2) frequency 0), left unchanged;
* ``rotation``: 2x2 rotation blocks R(theta) of translations and SO(2); all their angles are computed at
  once and applied as one complex multiply per run of adjacent pairs;
* ``matrix``: blocks given as matrices (Wigner-D of SO(3), SE(3)'s homogeneous block, tensor products),
  applied with one einsum per segment over all copies of the block; a non-orthogonal block also carries
  its inverse, so that rho^-1 and rho^-T are applied without a solve in the hot path;
* ``zonal``: directions on S^2 (`SphereRep`), M(x) = Y(x) e_0^T applied without forming M.

`EncodingPlan.encode` turns group elements into an `Encoding` (cos/sin of all angles, the block matrices,
the harmonics), in float32 (float64 for float64 elements) with autocast disabled. It is computed once
per model forward and handed to every layer; `apply_encoding` is the per-layer hot path and never forms
a dim x dim matrix.

Tensor layouts of the encoded tensor ``x`` (``x_layout``): ``"bhtd"`` (batch, heads, tokens, dim; HF's
attention layout), ``"bthd"`` (batch, tokens, heads, dim) or ``"btd"`` (no head axis). The encoding has
shape ``(*batch, tokens, ...)`` and broadcasts over the head axis.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from geo_pe._checks import full_precision, input_validation, value_checks_enabled
from geo_pe.reps.base import DirectSum, Representation, TensorProduct
from geo_pe.reps.groups import GroupElements
from geo_pe.reps.lie import SE3Rep, SO2Rep, SO3Rep, SphereRep, TranslationRep, device_constant
from geo_pe.reps.wigner import wigner_D_all

__all__ = ["X_LAYOUTS", "Encoding", "EncodingPlan", "Segment", "apply_encoding"]

X_LAYOUTS = ("bhtd", "bthd", "btd")
PAIR_LAYOUTS = ("interleaved", "half")


class Segment(NamedTuple):
    """Channels ``start:stop`` of one block type (see the module docstring).

    ``block`` is the block size; ``source`` indexes the encoding data: the first angle for rotations,
    the entry of ``matrices`` or ``harmonics`` otherwise; ``entries`` are the representation's `layout`
    entries the segment covers.
    """

    kind: str
    start: int
    stop: int
    block: int
    source: int
    entries: tuple[int, ...] = ()

    @property
    def copies(self) -> int:
        return (self.stop - self.start) // self.block


class Encoding(NamedTuple):
    """Per-token data of rho(g), ``(*batch, tokens, ...)``, computed once per forward."""

    cos: torch.Tensor | None  # (*batch, T, P): cos of every rotation angle
    sin: torch.Tensor | None  # (*batch, T, P)
    cis: torch.Tensor | None  # (*batch, T, P) complex: cos + i sin
    matrices: tuple[torch.Tensor, ...]  # each (*batch, T, d, d)
    harmonics: tuple[torch.Tensor, ...]  # each (*batch, T, 2l+1), unit norm
    inverses: tuple[torch.Tensor | None, ...] = ()  # per matrix: its inverse, None when orthogonal


class EncodingPlan:
    """The segments of a representation and the recipe to compute its `Encoding`."""

    def __init__(self, rep: Representation):
        self.rep = rep
        self.segments: list[Segment] = []
        self.leaves: list[tuple[str, Representation, tuple[int, ...]]] = []
        self._pairs = self._matrices = self._harmonics = self._entries = 0
        end = self._walk(rep, 0)
        assert end == rep.dim, "segments must tile the representation"
        self.segments = _merge_runs(self.segments)

    @property
    def num_angles(self) -> int:
        return self._pairs

    @property
    def orthogonal(self) -> bool:
        """Whether every block is orthogonal, so rho^-1 = rho^T (false with SE(3)'s homogeneous block)."""
        return all(_orthogonal(rep) for _, rep, _ in self.leaves)

    def _walk(self, rep: Representation, offset: int) -> int:
        if isinstance(rep, DirectSum):
            for part in rep.parts:
                offset = self._walk(part, offset)
            return offset
        if isinstance(rep, TranslationRep):
            self.leaves.append(("translation", rep, ()))
            entries = tuple(range(self._entries, self._entries + rep.num_frequencies))
            self._entries += rep.num_frequencies
            return self._rotation(offset, rep.num_frequencies, entries)
        if isinstance(rep, SO2Rep):
            frequencies = []
            for mult, m in rep._irreps_spec:
                entry = (self._entries,)
                self._entries += 1
                if m == 0:
                    self.segments.append(Segment("identity", offset, offset + mult, 1, 0, entry))
                    offset += mult
                else:
                    frequencies += [m] * mult
                    offset = self._rotation(offset, mult, entry)
            self.leaves.append(("so2", rep, tuple(frequencies)))
            return offset
        if isinstance(rep, SphereRep):
            self.leaves.append(("sphere", rep, ()))
            for mult, l in rep._irreps_spec:
                d = 2 * l + 1
                entry = (self._entries,)
                self._entries += 1
                self.segments.append(Segment("zonal", offset, offset + mult * d, d, self._harmonics, entry))
                self._harmonics += 1
                offset += mult * d
            return offset
        # SO(3), SE(3), tensor products and any other representation: its blocks as matrices.
        kind = "so3" if isinstance(rep, SO3Rep) else "se3" if isinstance(rep, SE3Rep) else "blocks"
        self.leaves.append((kind, rep, ()))
        for mult, d in rep.layout:
            entry = (self._entries,)
            self._entries += 1
            self.segments.append(Segment("matrix", offset, offset + mult * d, d, self._matrices, entry))
            self._matrices += 1
            offset += mult * d
        return offset

    def _rotation(self, offset: int, pairs: int, entries: tuple[int, ...]) -> int:
        self.segments.append(Segment("rotation", offset, offset + 2 * pairs, 2, self._pairs, entries))
        self._pairs += pairs
        return offset + 2 * pairs

    def encode(self, positions, name: str = "positions", cache: dict | None = None) -> Encoding:
        """The `Encoding` of group elements (a tensor or a dict of attributes); errors name ``name``.

        ``cache``: a dict shared by several plans that encode the same ``positions`` in one forward (an
        absolute and a relative PE): the Wigner matrices and harmonics of an attribute are computed once
        per degree and reused (keys ``(kind, attribute, degree)``).

        `GroupElements` (from `geo_pe.reps.validate_elements`) were checked when they were made: their
        values are not read again on the way (no host sync); anything else is validated here."""
        if isinstance(positions, GroupElements) and value_checks_enabled():  # (never under torch.compile)
            with input_validation(False):
                return self._encode(positions, name, cache)
        return self._encode(positions, name, cache)

    def _encode(self, positions, name: str, cache: dict | None) -> Encoding:
        angles: list[torch.Tensor] = []
        matrices: list[torch.Tensor] = []
        inverses: list[torch.Tensor | None] = []
        harmonics: list[torch.Tensor] = []
        for kind, rep, frequencies in self.leaves:
            if kind == "translation":
                angles.append(rep.angles(positions, name))
            elif kind == "so2":
                if frequencies:
                    theta = rep.element(positions, name)
                    dtype = torch.float64 if theta.dtype == torch.float64 else torch.float32
                    m = device_constant(frequencies, dtype, theta.device)
                    angles.append(theta.to(dtype)[..., None] * m)
                else:
                    rep.element(positions, name)  # validate even when every frequency is 0
            elif kind == "so3":  # wigner_D_all gives every degree up to the highest: keep them all

                def every_degree(rep=rep):
                    return enumerate(wigner_D_all(rep.element(positions, name), max(rep.degrees)))

                matrices.extend(_cached(cache, "so3", rep, every_degree))
                inverses.extend(None for _ in rep.degrees)
            elif kind == "se3":
                blocks, inverse_blocks = rep.blocks_and_inverses(positions, name)
                matrices.extend(blocks)
                homogeneous = [label == "h" for _, label in rep._irreps_spec]
                inverses.extend(
                    inv if h else None for inv, h in zip(inverse_blocks, homogeneous, strict=True)
                )
            elif kind == "sphere":

                def each_degree(rep=rep):
                    return zip(rep.degrees, rep.harmonics(positions, name), strict=True)

                harmonics.extend(_cached(cache, "sphere", rep, each_degree))
            else:
                blocks = rep.blocks(positions)
                matrices.extend(blocks)
                exact = _orthogonal(rep)
                inverses.extend(None if exact else _inverse(b) for b in blocks)
        cos = sin = cis = None
        if angles:
            dtype = torch.float64 if any(a.dtype == torch.float64 for a in angles) else torch.float32
            batch = torch.broadcast_shapes(*(a.shape[:-1] for a in angles))
            theta = torch.cat([a.to(dtype).expand(*batch, a.shape[-1]) for a in angles], dim=-1)
            with full_precision(theta):
                cos, sin = torch.cos(theta), torch.sin(theta)
                cis = torch.complex(cos, sin)
        return Encoding(cos, sin, cis, tuple(matrices), tuple(harmonics), tuple(inverses))


def _cached(cache: dict | None, kind: str, rep, compute) -> list[torch.Tensor]:
    """The blocks of ``rep``'s degrees, from ``cache`` (keys ``(kind, attribute, degree)``) when all are
    there, else from ``compute()`` (pairs ``(degree, block)``), which then fills the cache."""
    keys = [(kind, rep.attribute, l) for l in rep.degrees]
    if cache is None or any(k not in cache for k in keys):
        found = {(kind, rep.attribute, l): block for l, block in compute()}
        if cache is not None:
            cache.update(found)
    else:
        found = cache
    return [found[k] for k in keys]


def _orthogonal(rep: Representation) -> bool:
    if isinstance(rep, SE3Rep):
        return rep.orthogonal
    if isinstance(rep, TensorProduct):
        return _orthogonal(rep.a) and _orthogonal(rep.b)
    if isinstance(rep, DirectSum):
        return all(_orthogonal(part) for part in rep.parts)
    return True


def _inverse(block: torch.Tensor) -> torch.Tensor:
    with full_precision(block):
        return torch.linalg.inv(block)


def _merge_runs(segments: list[Segment]) -> list[Segment]:
    """Merge adjacent identity segments, and adjacent rotation segments with consecutive angles."""
    out: list[Segment] = []
    for seg in segments:
        prev = out[-1] if out else None
        if (prev is not None and prev.kind == seg.kind == "identity" and prev.stop == seg.start) or (
            prev is not None
            and prev.kind == seg.kind == "rotation"
            and prev.stop == seg.start
            and prev.source + prev.copies == seg.source
        ):
            out[-1] = prev._replace(stop=seg.stop, entries=prev.entries + seg.entries)
        else:
            out.append(seg)
    return out


def _per_token(t: torch.Tensor, trailing: int, x_layout: str) -> torch.Tensor:
    """Insert the head axis into encoding data ``(*batch, T, *trailing)`` so it broadcasts against x."""
    if x_layout == "bhtd":
        return t.unsqueeze(-(trailing + 2))
    if x_layout == "bthd":
        return t.unsqueeze(-(trailing + 1))
    return t


def _complex_viewable(x: torch.Tensor) -> bool:
    """Eager float32/float64 tensors whose pairs can be viewed as complex numbers in place.

    Under torch.compile the real-arithmetic path is used instead: Inductor fuses it into one kernel.
    """
    if x.dtype not in (torch.float32, torch.float64) or x.stride(-1) != 1:
        return False
    return x.storage_offset() % 2 == 0 and all(s % 2 == 0 for s in x.stride()[:-1])


def _rotate(x, enc, seg, pair_layout, transpose, x_layout):
    n = seg.copies
    sl = slice(seg.source, seg.source + n)
    eager = not torch.compiler.is_compiling()
    if eager and pair_layout == "interleaved" and _complex_viewable(x):
        # One complex multiply on the pairs viewed in place as complex numbers.
        cis = _per_token(enc.cis[..., sl], 1, x_layout)
        cis = cis.conj() if transpose else cis
        z = torch.view_as_complex(x.unflatten(-1, (n, 2)))
        return torch.view_as_real(z * cis.to(z.dtype)).flatten(-2)
    cos = _per_token(enc.cos[..., sl], 1, x_layout).to(x.dtype)
    sin = _per_token(enc.sin[..., sl], 1, x_layout).to(x.dtype)
    if transpose:
        sin = -sin
    if pair_layout == "half":
        # x (cos, cos) + (second half, first half) (-sin, sin): the swap is two copies into x's own
        # memory layout, then one product and one fused multiply-add, each a single pass in that layout
        # (a complex view cannot pair channel k with k + n; building one and splitting it again costs
        # a strided pass that runs several times slower than these). Inductor fuses the same form.
        swapped = torch.empty_like(x)
        swapped[..., :n] = x[..., n:]
        swapped[..., n:] = x[..., :n]
        return (x * torch.cat((cos, cos), dim=-1)).addcmul_(swapped, torch.cat((-sin, sin), dim=-1))
    pairs = x.unflatten(-1, (n, 2))  # interleaved, under torch.compile or not viewable as complex
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def _matrix(x, enc, seg, transpose, inverse, x_layout):
    stored = enc.inverses[seg.source] if enc.inverses else None
    if inverse and stored is None:  # orthogonal: rho^-1 = rho^T
        transpose, inverse = not transpose, False
    M = _per_token(stored if inverse else enc.matrices[seg.source], 2, x_layout).to(x.dtype)
    copies = x.unflatten(-1, (seg.copies, seg.block))
    if torch.compiler.is_compiling():
        # Spelled out, Inductor fuses all d^2 multiply-adds into one pass; an einsum would lower to a
        # batched GEMM with inner dimension d <= 2l+1, which CPU BLAS runs far below memory speed.
        M = M[..., None, :, :]  # broadcast over copies
        d = seg.block
        rows = []
        for i in range(d):
            acc = copies[..., 0] * (M[..., 0, i] if transpose else M[..., i, 0])
            for j in range(1, d):
                acc = acc + copies[..., j] * (M[..., j, i] if transpose else M[..., i, j])
            rows.append(acc)
        return torch.stack(rows, dim=-1).flatten(-2)
    pattern = "...mj,...ji->...mi" if transpose else "...mj,...ij->...mi"
    return torch.einsum(pattern, copies, M).flatten(-2)


def _zonal(x, enc, seg, transpose, x_layout):
    Y = _per_token(enc.harmonics[seg.source], 1, x_layout).to(x.dtype)[..., None, :]  # (..., 1, d)
    copies = x.unflatten(-1, (seg.copies, seg.block))
    l = seg.block // 2
    if transpose:  # M^T v = e_0 <Y, v>: the inner product in the middle (m = 0) component, zeros around
        return torch.nn.functional.pad((copies * Y).sum(-1, keepdim=True), (l, l)).flatten(-2)
    return (copies[..., l : l + 1] * Y).flatten(-2)  # M v = Y v_0


def apply_encoding(
    x: torch.Tensor,
    enc: Encoding,
    segments: list[Segment],
    *,
    pair_layout: str = "interleaved",
    transpose: bool = False,
    inverse: bool = False,
    x_layout: str = "bhtd",
) -> torch.Tensor:
    """rho(g_t) x_t for every token t, block by block; with ``transpose`` rho(g_t)^T x_t, with
    ``inverse`` rho(g_t)^-1 x_t, with both rho(g_t)^-T x_t (for orthogonal blocks rho^-1 = rho^T).

    Args:
        x: ``(batch, heads, tokens, dim)`` for ``x_layout="bhtd"`` (see the module docstring).
        enc: from `EncodingPlan.encode`, batch shape broadcastable to x's batch.
        segments: `EncodingPlan.segments`; they tile ``dim``.
        pair_layout: ``"interleaved"`` (pairs (2k, 2k+1)) or ``"half"`` (pairs (k, k + n) within each run
            of n rotation pairs, HF's ``rotate_half`` convention).
    """
    pieces = []
    orthogonal_transpose = transpose != inverse  # what rho^-1, rho^-T are for orthogonal blocks
    # one split (its backward is one cat) instead of a slice per segment (each slice's backward fills a
    # zero tensor of the whole of x)
    parts = x.split([seg.stop - seg.start for seg in segments], dim=-1)
    for seg, part in zip(segments, parts, strict=True):
        if seg.kind == "identity":
            pieces.append(part)
        elif seg.kind == "rotation":
            pieces.append(_rotate(part, enc, seg, pair_layout, orthogonal_transpose, x_layout))
        elif seg.kind == "matrix":
            pieces.append(_matrix(part, enc, seg, transpose, inverse, x_layout))
        else:
            pieces.append(_zonal(part, enc, seg, orthogonal_transpose, x_layout))
    if len(pieces) == 1:
        return pieces[0] if segments[0].kind != "identity" else x.clone()
    leading = {p.shape[:-1] for p in pieces}
    if len(leading) > 1:  # an identity piece may lack the encoding's batch axes
        batch = torch.broadcast_shapes(*leading)
        pieces = [p.expand(*batch, p.shape[-1]) for p in pieces]
    return torch.cat(pieces, dim=-1)
