"""The geo transformer's inputs: group elements validated once at the door (padding replaced), point
attributes centred on their valid centroid, the geometry of point pairs, the attention mask (padding,
causal order) and the memory of cross-attention. `GeoTransformerInputs` owns what it reads (the config,
the attribute spaces of the encodings, the relative encoding); `GeoTransformerModel` holds one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from geo_pe._checks import value_checks_enabled
from geo_pe.reps import GroupElements, Space, validate_elements
from geo_pe.reps.groups import Translations

from .configuration_geo_transformer import GeoTransformerConfig

__all__ = ["GeoTransformerInputs", "PairGeometry"]


@dataclass
class PairGeometry:
    """What attention reads about token pairs (self-attention only): ``basis`` (B, T, T, features), the
    radial functions of their distances, ``offsets`` {point attribute: (B, T, T, 3)}, x_j - x_i in
    D_1's (y, z, x) component order ((B, T, T, 2) in (x, y) for planar points), and ``neighbours``
    (B, 1, 1, 1), the other valid tokens of each set (at least 1), over which signed messages are
    averaged, ``valid`` (B, T, T), 1 on the pairs of two different valid tokens, ``invariants``
    (B, T, T, 3 x vectors), the pairs' r_ij . v_i, r_ij . v_j and v_i . v_j of each input vector
    (``pair_vector_invariants``), and ``vector_offsets`` {input vector: (B, T, T, 3)}, v_j - v_i in
    Cartesian order (``pair_vector_messages``)."""

    basis: torch.Tensor | None = None
    offsets: dict[str, torch.Tensor] | None = None
    neighbours: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    invariants: torch.Tensor | None = None
    vector_offsets: dict[str, torch.Tensor] | None = None


class GeoTransformerInputs:
    """The input step of `GeoTransformerModel`: checks every input once, names the argument of a bad one,
    and hands the layers validated group elements (`geo_pe.reps.GroupElements`), which the encodings read
    without checking again."""

    def __init__(
        self, config: GeoTransformerConfig, spaces: Mapping[str, Space], relative_pe: nn.Module | None
    ):
        self.config = config
        self.attribute_spaces = dict(spaces)
        self.relative_pe = relative_pe
        self._neutral_elements: dict = {}

    def validates_values(self) -> bool:
        """Whether value checks (finite, non-zero) run: the config allows them and the context does
        (eager, `geo_pe.set_input_validation`)."""
        return bool(self.config.validate_inputs) and value_checks_enabled()

    def keyed(self, positions):
        """A tensor given for the model's only attribute as ``{attribute: tensor}``; anything else as is."""
        if not isinstance(positions, torch.Tensor):
            return positions
        if len(self.attribute_spaces) != 1:
            raise ValueError(
                f"positions: expected a dict with keys {sorted(self.attribute_spaces)}, got a tensor"
            )
        return {next(iter(self.attribute_spaces)): positions}

    def positions(
        self, positions, B: int, T: int, mask: torch.Tensor | None, device, reference: str
    ) -> GroupElements | None:
        """The group elements per attribute, validated, padding replaced by a valid element."""
        attributes = self.attribute_spaces
        if not attributes:
            if positions is not None:
                raise ValueError(
                    "positions: this model has no positional encoding (pe_absolute and "
                    "pe_relative are None), so it cannot use them"
                )
            return None
        if positions is None:
            if all(g == Translations(1) for g in attributes.values()):
                index = torch.arange(T, device=device).expand(B, T)
                positions = {a: index for a in attributes}
            else:
                raise ValueError(
                    f"positions: the model's encodings read {sorted(attributes)}; pass a tensor per attribute"
                )
        positions = self.keyed(positions)
        if not isinstance(positions, dict):
            raise ValueError(
                f"positions: expected a tensor or a dict of tensors, got {type(positions).__name__}"
            )
        if set(positions) != set(attributes):
            raise ValueError(
                f"positions: expected the keys {sorted(attributes)} (the attributes of the model's "
                f"encodings), got {sorted(positions)}"
            )
        for attr, space in attributes.items():
            if not isinstance(positions[attr], torch.Tensor):
                raise ValueError(
                    f"positions[{attr!r}]: expected a tensor of {space.name} elements, got "
                    f"{type(positions[attr]).__name__}"
                )
        shaped = validate_elements(attributes, positions, values=False)  # shapes first, before any value
        out = {}
        for attr, space in attributes.items():
            name, g = f"positions[{attr!r}]", positions[attr]
            batch = tuple(space.batch_shape(shaped[attr])) if g.dim() >= 1 else tuple(g.shape)
            if batch not in ((B, T), (T,)):
                raise ValueError(
                    f"{name}: expected {space.name} elements with batch shape ({B}, {T}) or ({T},) (the "
                    f"batch and tokens of {reference}), got a tensor of shape {tuple(g.shape)} (see "
                    "GeoTransformerModel for the shapes per group)"
                )
            if mask is not None and batch == (B, T):  # padding may hold anything: use a valid element
                keep = mask.reshape(B, T, *([1] * (g.dim() - 2)))
                g = torch.where(keep, g, self._neutral_element(attr, space, g))
            out[attr] = g
        # the values once, here: the encodings read GroupElements without checking again
        return validate_elements(attributes, out, values=self.validates_values())

    def _neutral_element(self, attribute: str, space, like: torch.Tensor) -> torch.Tensor:
        """A fixed valid element of ``space`` for padded tokens, drawn once per attribute and dtype (not
        once per forward: a generator per call is a graph break under torch.compile)."""
        cache = self._neutral_elements
        key = (attribute, like.dtype, like.device)  # kept on the device: no copy from the host per forward
        if key not in cache:
            neutral = space.sample((), generator=0, dtype=like.dtype if like.is_floating_point() else None)
            cache[key] = neutral.to(device=like.device, dtype=like.dtype)
        return cache[key]

    def pair_geometry(
        self,
        positions: dict,
        mask: torch.Tensor | None,
        dtype: torch.dtype,
        vectors: dict[str, torch.Tensor] | None = None,
        previous: PairGeometry | None = None,
    ) -> PairGeometry:
        """The `PairGeometry` attention reads: radial functions (``distance_bias``, in ``dtype``) and
        offsets x_j - x_i (``relative_point_values``, ``coordinate_updates``; in D_1's (y, z, x) order,
        zero on padded pairs) of the centred points, and with ``pair_vector_invariants`` the pairs'
        products with ``vectors`` {name: (B, T, 3)}; once per forward, or once per layer where the
        layers move the points. ``previous``: the geometry of the layer before, whose ``vector_offsets``
        are kept (the input vectors do not move)."""
        c = self.config
        basis = self.pair_distance_basis(positions, mask).to(dtype) if c.distance_bias else None
        offsets = neighbours = valid = None
        if c.relative_point_values or c.coordinate_updates:
            x = positions[c.point_attributes[0]]
            B, T = x.shape[:2]
            count = torch.full((B,), T, device=x.device) if mask is None else mask.sum(-1)
            neighbours = (count - 1).clamp_min(1).to(dtype).view(B, 1, 1, 1)
            valid = ~torch.eye(T, dtype=torch.bool, device=x.device).expand(B, T, T)
            if mask is not None:
                valid = valid & mask[:, :, None] & mask[:, None, :]
            valid = valid.to(dtype)
            offsets = {}
            for attr in c.point_attributes:
                x = positions[attr]
                offset = x[:, None, :] - x[:, :, None]  # x_j - x_i: planar points in (x, y), as SO(2)'s
                if offset.shape[-1] == 3:  # frequency 1 turns them; in R^3 in D_1's (y, z, x)
                    offset = offset[..., [1, 2, 0]]
                if mask is not None:
                    offset = offset * (mask[:, :, None] & mask[:, None, :])[..., None].to(offset.dtype)
                offsets[attr] = offset
        invariants = None
        if c.pair_vector_invariants:
            attr = c.point_attributes[0]
            # x_j - x_i back in Cartesian order from D_1's (y, z, x), where the offsets are built anyway
            r = offsets[attr][..., [2, 0, 1]] if offsets else None
            invariants = self.pair_vector_invariants(positions[attr], vectors, mask, r).to(dtype)
        vector_offsets = None if previous is None else previous.vector_offsets
        if c.pair_vector_messages and vector_offsets is None:  # zero vectors on padding, zero pairs
            vector_offsets = {name: vectors[name][:, None, :] - vectors[name][:, :, None] for name in vectors}
            if mask is not None:
                pair_mask = (mask[:, :, None] & mask[:, None, :])[..., None]
                vector_offsets = {k: d * pair_mask.to(d.dtype) for k, d in vector_offsets.items()}
        return PairGeometry(basis, offsets, neighbours, valid, invariants, vector_offsets)

    def pair_vector_invariants(
        self,
        x: torch.Tensor,
        vectors: dict[str, torch.Tensor],
        mask: torch.Tensor | None,
        r: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, T, T, 3 x vectors)``: r_ij . v_i, r_ij . v_j and v_i . v_j for the points ``x`` (B, T, 3)
        (r_ij = x_j - x_i, or ``r`` (B, T, T, 3) where the caller has it) and each of ``vectors`` (zero on
        padding); zero on padded pairs."""
        if r is None:
            r = x[:, None, :] - x[:, :, None]  # (B, T, T, 3): [b, i, j] = x_j - x_i
        features = []
        for name in self.config.vector_inputs:
            v = vectors[name].to(r.dtype)
            features += [
                torch.einsum("bijc,bic->bij", r, v),
                torch.einsum("bijc,bjc->bij", r, v),
                v @ v.transpose(1, 2),
            ]
        invariants = torch.stack(features, dim=-1)
        if mask is not None:
            invariants = invariants * (mask[:, :, None] & mask[:, None, :])[..., None].to(invariants.dtype)
        return invariants

    def pair_distance_basis(self, positions: dict, mask: torch.Tensor | None) -> torch.Tensor:
        """``(B, T, T, points x distance_bias)``: Gaussian radial functions of |x_i - x_j| for each point
        attribute, centres evenly on [0, distance_bias_max], width their spacing; zero on padded pairs."""
        c = self.config
        features = []
        for attr in c.point_attributes:
            x = positions[attr]
            distance = torch.linalg.vector_norm(x[:, :, None] - x[:, None, :], dim=-1)
            centres = torch.linspace(0, c.distance_bias_max, c.distance_bias, dtype=x.dtype, device=x.device)
            width = c.distance_bias_max / (c.distance_bias - 1)
            # exponents below -80 (values under 2e-35) are held there: float32 exp runs its slow underflow
            # path on them (5x slower on a CPU), for a change no layer can see
            exponent = (((distance[..., None] - centres) / width) ** 2).clamp(max=80.0)
            features.append(torch.exp(-exponent))
        basis = torch.cat(features, dim=-1)
        if mask is not None:
            basis = basis * (mask[:, :, None] & mask[:, None, :])[..., None].to(basis.dtype)
        return basis

    def attention_mask(self, mask: torch.Tensor | None, T: int, device) -> tuple[torch.Tensor | None, bool]:
        """``(attn_mask (B, 1, 1 or T, T) or None, is_causal)``: padded keys are hidden; with ``causal``,
        later keys too, and every token always sees itself, so no row is empty (an empty row would give
        NaN on a padded token, which attention would then carry to valid ones as 0 * NaN)."""
        c = self.config
        key_mask = None
        # dropping an all-ones mask needs a look at its values: only where value checks may run (eager,
        # validating), never under torch.compile or in the trainer's steps
        if mask is not None and not (self.validates_values() and bool(mask.all())):
            key_mask = mask[:, None, None, :]
        if not c.causal:
            return key_mask, False
        if key_mask is None:
            return None, True
        allowed = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        return (key_mask & allowed) | torch.eye(T, dtype=torch.bool, device=device), False

    def memory(self, memory, memory_positions, memory_mask, positions, mask, B: int, T: int, dtype):
        """Validate the memory (B, S, hidden) that keys and values also read (cross-attention to an
        encoder's states, or cached tokens), its group elements and mask. Returns ``(memory, key encoding
        of [memory ; tokens], attention mask (B, 1, T, S + T))``: every token sees the valid memory and,
        without ``causal``, the valid tokens; with it, itself and the tokens before it."""
        c = self.config
        if not isinstance(memory, torch.Tensor) or memory.dim() != 3 or memory.shape[0] != B:
            shape = tuple(memory.shape) if isinstance(memory, torch.Tensor) else type(memory).__name__
            raise ValueError(f"memory: expected states of shape ({B}, S, {c.hidden_size}), got {shape}")
        if memory.shape[-1] != c.hidden_size:
            raise ValueError(
                f"memory: expected states of width hidden_size={c.hidden_size}, got {memory.shape[-1]}"
            )
        if c.point_attributes:
            raise ValueError("memory: models with point_attributes centre each set on its own; not supported")
        S = memory.shape[1]
        if memory_mask is not None and memory_mask.shape != (B, S):
            raise ValueError(
                f"memory_attention_mask: expected shape ({B}, {S}), got {tuple(memory_mask.shape)}"
            )
        memory_keep = None if memory_mask is None else memory_mask.bool()
        key_encoding = None
        if self.relative_pe is not None:
            at = self.positions(memory_positions, B, S, memory_keep, memory.device, "memory")
            joined = GroupElements(  # both parts were validated
                {a: torch.cat((self._batched(at[a], a, B), self._batched(positions[a], a, B)), 1) for a in at}
            )
            key_encoding = self.relative_pe.encode(joined)
        elif memory_positions is not None:
            raise ValueError("memory_positions: this model has no relative encoding to read them")
        own = torch.ones(B, T, dtype=torch.bool, device=memory.device) if mask is None else mask
        seen = (
            torch.ones(B, S, dtype=torch.bool, device=memory.device) if memory_keep is None else memory_keep
        )
        keys = torch.cat((seen, own), dim=1)[:, None, None, :]  # (B, 1, 1, S + T)
        if not c.causal:
            return memory.to(dtype), key_encoding, keys
        order = torch.ones(T, T, dtype=torch.bool, device=memory.device).tril()
        allowed = torch.cat((torch.ones(T, S, dtype=torch.bool, device=memory.device), order), dim=1)
        itself = torch.cat(
            (
                torch.zeros(T, S, dtype=torch.bool, device=memory.device),
                torch.eye(T, dtype=torch.bool, device=memory.device),
            ),
            dim=1,
        )
        return memory.to(dtype), key_encoding, (keys & allowed) | itself

    def _batched(self, g: torch.Tensor, attribute: str, B: int) -> torch.Tensor:
        """Elements of batch shape (T,) or (B, T) as (B, T, ...)."""
        batch = self.attribute_spaces[attribute].batch_shape(g)
        return g.expand(B, *g.shape) if len(batch) == 1 else g

    def vectors(self, positions, B: int, T: int, mask: torch.Tensor | None, dtype) -> dict[str, torch.Tensor]:
        """{name: (B, T, 3)}: the raw vectors of ``config.vector_inputs`` (their directions are also
        encoded), in ``dtype``, zero on padding."""
        names = self.config.vector_inputs or []
        if not names:
            return {}
        if not isinstance(positions, dict):
            raise ValueError(f"positions: expected a dict with the vector inputs {names}")
        vectors = {}
        for name in names:
            v = positions.get(name)
            if not isinstance(v, torch.Tensor) or v.shape != (B, T, 3) or not v.is_floating_point():
                shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"positions[{name!r}]: expected vectors of shape ({B}, {T}, 3), got {shape}")
            if mask is not None:  # padding may hold anything
                v = v.masked_fill(~mask[..., None], 0)
            vectors[name] = v.to(dtype)
        return vectors

    def center_points(
        self, positions, B: int, T: int, mask: torch.Tensor | None
    ) -> tuple[dict, dict[str, torch.Tensor], torch.Tensor]:
        """Read each point attribute from the centroid of its valid tokens (``point_origin``): ``(positions
        for the encodings, the centred points {attribute: (B, T, 3 or 2)}, distances (B, T, points))``.
        An s2 attribute is encoded by its centred point (its direction), an so2 attribute by the angle of
        its centred planar point. Padded points may hold anything."""
        c = self.config
        positions = self.keyed(positions)
        if not isinstance(positions, dict):
            raise ValueError(f"positions: expected a dict with the point attributes {c.point_attributes}")
        positions, points, distances = dict(positions), {}, []
        keep = torch.ones(B, T, 1, dtype=torch.bool) if mask is None else mask[..., None]
        for attr in c.point_attributes:
            name, x = f"positions[{attr!r}]", positions.get(attr)
            planar = self.attribute_spaces[attr].name == "so2"
            dim = 2 if planar else 3
            if not isinstance(x, torch.Tensor) or x.shape != (B, T, dim) or not x.is_floating_point():
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                kind = "planar points" if planar else "points"
                raise ValueError(f"{name}: expected {kind} of shape ({B}, {T}, {dim}), got {shape}")
            keep = keep.to(x.device)
            x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
            if c.point_origin == "centroid":
                count = keep.sum(1, keepdim=True).clamp_min(1).to(x.dtype)
                x = x - x.sum(1, keepdim=True) / count
            distance = torch.linalg.vector_norm(x, dim=-1) * keep[..., 0]
            if self.validates_values():
                if not bool(torch.isfinite(x).all()):
                    raise ValueError(f"{name}: expected finite points on valid tokens")
                if bool(((distance == 0) & keep[..., 0]).any()):  # also a set of one point
                    where = "the centroid of its set" if c.point_origin == "centroid" else "the origin"
                    raise ValueError(f"{name}: a point lies at {where}, where its direction is undefined")
            points[attr] = x
            # padded planar points are at 0, whose angle atan2 reads as 0; positions() replaces them anyway
            positions[attr] = torch.atan2(x[..., 1], x[..., 0]) if planar else x
            distances.append(distance)
        return positions, points, torch.stack(distances, dim=-1)
