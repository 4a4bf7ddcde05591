"""Equivariant outputs of the geo transformer: vectors, symmetric 3x3 matrices and positions, in Cartesian
form, per token or per sequence.

The head reads the channels of the absolute encoding in ``last_hidden_state`` (they turn with the
token's rotation attribute) and maps them by a `PhasedLinear` into the target's irreps: degree 1 for a
vector, degrees 0 and 2 for a symmetric matrix (the trace part from the invariants). The map follows the
encoder's phases (equivariant in phase I, freed in phase II), so a phase I model is exactly equivariant:

* vectors turn as R v (a displacement, a velocity, a force, a dipole);
* symmetric matrices as R M R^T (an inertia or a polarisability tensor), and general 3x3 matrices too
  (``"matrix"``: the trace, the antisymmetric part from degree 1, the symmetric traceless part from
  degree 2, i.e. 1 + 3 + 5 components);
* positions as R x + t: a predicted displacement added to the token's own translation, read from an
  SE(3) pose attribute (pooled: the mean over valid tokens of both).

Outputs are Cartesian, ``(..., 3)`` and ``(..., 3, 3)``, not in the harmonic basis: degree 1 components
are (y, z, x) in `geo_pe.reps.wigner_D`'s basis and are reordered; degree 2 components map to traceless
symmetric matrices through the fixed intertwiner `harmonic_to_traceless`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from geo_pe.phases import PhasedLinear, PhaseReport, set_phase
from geo_pe.reps import SE3Rep, SO3Rep, spherical_harmonics
from geo_pe.reps.groups import SE3, SO3, Sphere

from .configuration_geo_transformer import GeoTransformerConfig
from .modeling_geo_transformer import CARTESIAN_FROM_DEGREE_1, _pool, _WithHead

__all__ = [
    "EquivariantRegressionOutput",
    "GeoTransformerForEquivariantRegression",
    "harmonic_to_traceless",
    "traceless_to_harmonic",
]


@functools.lru_cache(maxsize=4)
def _harmonic_to_traceless(dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    Y = spherical_harmonics(x, 2, normalization="norm")  # (64, 5), linear in x x^T - I / 3
    T = (x[:, :, None] * x[:, None, :] - torch.eye(3, dtype=torch.float64) / 3).reshape(64, 9)
    # Y = T A^T for a 5 x 9 map A on traceless symmetric matrices; C = A's inverse there, (9, 5). The
    # minimum-norm solution keeps A's rows among the traceless symmetric matrices (pinv, not gelsy's).
    A = (torch.linalg.pinv(T) @ Y).T
    return torch.linalg.pinv(A).to(dtype)


def harmonic_to_traceless(y: torch.Tensor) -> torch.Tensor:
    """Degree-2 components ``(..., 5)`` -> traceless symmetric matrices ``(..., 3, 3)``, with
    ``M(D_2(R) y) = R M(y) R^T``; scaled so that Y_2(x) (unit norm) maps to x x^T - I / 3."""
    C = _harmonic_to_traceless(torch.float64).to(y.dtype)
    return (y @ C.T).unflatten(-1, (3, 3))


@functools.lru_cache(maxsize=1)
def _traceless_to_harmonic() -> torch.Tensor:
    return torch.linalg.pinv(_harmonic_to_traceless(torch.float64))  # (5, 9) in float64, A C = I_5


def traceless_to_harmonic(matrix: torch.Tensor) -> torch.Tensor:
    """Traceless symmetric matrices ``(..., 3, 3)`` -> their degree-2 components ``(..., 5)``: the inverse
    of `harmonic_to_traceless` on them."""
    A = _traceless_to_harmonic().to(device=matrix.device, dtype=matrix.dtype)
    return matrix.flatten(-2) @ A.T


def _antisymmetric(v: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` -> ``(..., 3, 3)``: the matrix [v]_x of the cross product, with [R v]_x = R [v]_x R^T."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    rows = (torch.stack((zero, -z, y), -1), torch.stack((z, zero, -x), -1), torch.stack((-y, x, zero), -1))
    return torch.stack(rows, dim=-2)


DEGREE_1_FROM_CARTESIAN = (1, 2, 0)  # (x, y, z) -> D_1's components (y, z, x)


class MomentWeights(nn.Linear):
    """The per-token coefficients of ``moment_readout`` from the token's invariants; zero at first."""


@dataclass
class EquivariantRegressionOutput(ModelOutput):
    """``predictions``: ``(B, 3)``/``(B, 3, 3)`` per sequence or ``(B, T, 3)``/``(B, T, 3, 3)`` per token."""

    loss: torch.FloatTensor | None = None
    predictions: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class GeoTransformerForEquivariantRegression(_WithHead):
    """Vectors, symmetric matrices or positions (``config.equivariant_target``) per token or per
    sequence (``config.equivariant_level``), turning with the rotation attribute
    ``config.output_attribute`` (default: the model's only SO(3), S^2 or SE(3) attribute). ``labels``
    have the shape of ``predictions``; the loss is their mean squared error (padded tokens skipped)."""

    def __init__(self, config: GeoTransformerConfig):
        super().__init__(config, None)
        if self.model.embedding_rep is None:
            raise ValueError("pe_absolute: equivariant outputs read the channels of an absolute encoding")
        self.attribute = self._rotation_attribute(config)
        degrees = {"symmetric_matrix": (2,), "matrix": (1, 2)}.get(config.equivariant_target, (1,))
        group = self.model.attribute_spaces[self.attribute]
        target = self._output_rep(group, degrees)
        self.target_rep = target
        embedding = self.model.embedding_rep
        shared = {i for _, i in embedding.irreps} & {i for _, i in target.irreps}
        if shared != {i for _, i in target.irreps}:
            missing = [d for d, (_, irrep) in zip(degrees, target.irreps, strict=True) if irrep not in shared]
            raise ValueError(
                f"pe_absolute: {config.pe_absolute!r} has no degree-{missing[0]} channels of attribute "
                f"{self.attribute!r}, which {config.equivariant_target} outputs are made of"
            )
        self.equivariant_proj = PhasedLinear.from_linear(
            nn.Linear(config.pe_width, target.dim, bias=False), reps=(embedding, target)
        )
        invariants = config.scalar_size + len(self.model.block_sizes)
        self.trace_head = (
            nn.Linear(invariants, 1) if config.equivariant_target in ("symmetric_matrix", "matrix") else None
        )
        self.moment_weights, self.moment_proj = None, None
        if config.moment_readout:
            self._check_moment_readout(config)
            vector = config.equivariant_target == "vector"
            moment_rep = self._output_rep(group, (1,) if vector else (0, 2))
            self.moment_rep = moment_rep
            self.moment_target_rep = self._output_rep(group, (0, *degrees) if not vector else degrees)
            per_vector = 1 if vector else 2  # a_i; or a_i and b_i
            self.moment_weights = MomentWeights(invariants, per_vector * len(config.moment_readout))
            self.moment_proj = PhasedLinear.from_linear(
                nn.Linear(moment_rep.dim, self.moment_target_rep.dim, bias=False),
                reps=(moment_rep, self.moment_target_rep),
            )
        self._replay_head_phases()
        self.post_init()

    def _output_rep(self, group, degrees: tuple[int, ...]) -> SO3Rep | SE3Rep:
        """The irreps of ``degrees`` turning with the output attribute (in its shared frame, if any)."""
        cls = SE3Rep if isinstance(group, SE3) else SO3Rep
        rep = cls([(1, l) for l in degrees], attribute=self.attribute)
        for shared in self.config.shared_rotations or []:
            if self.attribute in shared:  # the frame `share_rotation` gave the encodings
                rep.frame = "+".join(shared)
        return rep

    def _check_moment_readout(self, config: GeoTransformerConfig) -> None:
        if config.equivariant_target == "position":
            raise ValueError(
                "moment_readout: position outputs move with their points (coordinate_updates carry the input "
                "vectors there); moments are read into vector and matrix outputs"
            )
        frames = [set(group) for group in config.shared_rotations or []]
        apart = [
            name
            for name in config.moment_readout
            if name != self.attribute and not any({name, self.attribute} <= group for group in frames)
        ]
        if apart:
            raise ValueError(
                f"moment_readout: {apart} do not turn with the output attribute {self.attribute!r}; list "
                "them in one group of shared_rotations"
            )

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MomentWeights):  # the head starts as one without the moments
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def _rotation_attribute(self, config: GeoTransformerConfig) -> str:
        rotating = {a: g for a, g in self.model.attribute_spaces.items() if isinstance(g, (SO3, Sphere, SE3))}
        if config.output_attribute is not None:
            if config.output_attribute not in rotating:
                raise ValueError(
                    f"output_attribute: {config.output_attribute!r} is not a rotation attribute of the "
                    f"encodings (they have {sorted(rotating)})"
                )
            return config.output_attribute
        if config.equivariant_target == "position":
            points = config.point_attributes or []
            movable = [a for a, g in rotating.items() if isinstance(g, SE3) or a in points]
            if len(movable) != 1:
                raise ValueError(
                    "output_attribute: position outputs need one SE(3) pose attribute or one point attribute "
                    "to move with"
                )
            return movable[0]
        frames = {a for a in rotating if not any(a in group[1:] for group in config.shared_rotations or [])}
        if len(frames) == 1:  # one rotation, possibly shared by several attributes
            return next(iter(frames))
        if len(rotating) != 1:
            raise ValueError(
                f"output_attribute: the encodings have rotation attributes {sorted(rotating)}; name the one "
                "the outputs turn with"
            )
        return next(iter(rotating))

    # --- phases: the head's map follows the encoder's -----------------------------------------------------
    def _head_phase(self, phase: str) -> str:
        return "equivariant" if phase == "scalar_identity" else phase  # the head is not square

    def _head_maps(self) -> list[tuple[PhasedLinear, dict]]:
        """The head's phased maps, each with the arguments of its `set_phase` (a subspace of its own)."""
        c = self.config
        maps = [(self.equivariant_proj, (self.model.embedding_rep, self.target_rep), 7919)]
        if self.moment_proj is not None:
            maps.append((self.moment_proj, (self.moment_rep, self.moment_target_rep), 7927))
        out = []
        for layer, reps, offset in maps:
            dim = None if c.subspace_dim is None else min(c.subspace_dim, layer.weight.numel())
            arguments = {"layers": PhasedLinear, "reps": reps, "subspace_dim": dim,
                         "projection": c.subspace_projection, "seed": c.subspace_seed + offset}  # fmt: skip
            out.append((layer, arguments))
        return out

    def _replay_head_phases(self) -> None:
        for i, phase in enumerate(self.config.phase_history):
            if i == 0 and phase == "free":
                continue
            for layer, arguments in self._head_maps():
                set_phase(layer, self._head_phase(phase), rebuild=True, **arguments)

    def set_phase(self, phase: str, **overrides) -> PhaseReport:
        """Move the encoder (see `GeoTransformerModel.set_phase`) and the head's maps to ``phase``."""
        report = self.model.set_phase(phase, **overrides)
        for layer, arguments in self._head_maps():
            set_phase(layer, self._head_phase(phase), **arguments)
        return report

    # --- the head ---------------------------------------------------------------------------------------
    def _head(self, out, attention_mask, labels, positions) -> EquivariantRegressionOutput:
        c = self.config
        pe = out.last_hidden_state[..., self.model.scalar_size :]
        invariants = out.invariants
        if c.equivariant_level == "sequence":
            pe, invariants = _pool(pe, attention_mask), _pool(invariants, attention_mask)
        harmonic = self.equivariant_proj(pe)
        if c.equivariant_target in ("symmetric_matrix", "matrix"):
            eye = torch.eye(3, dtype=harmonic.dtype, device=harmonic.device)
            predictions = (
                harmonic_to_traceless(harmonic[..., -5:]) + self.trace_head(invariants)[..., None] * eye
            )
            if c.equivariant_target == "matrix":
                predictions = predictions + _antisymmetric(harmonic[..., list(CARTESIAN_FROM_DEGREE_1)])
        else:
            predictions = harmonic[..., list(CARTESIAN_FROM_DEGREE_1)]
        if self.moment_proj is not None:
            predictions = predictions + self._moments(
                out.invariants, attention_mask, positions, predictions.dtype
            )
        if c.equivariant_target == "position":  # the token's own position: a pose's translation, a point
            given = positions[self.attribute] if isinstance(positions, dict) else positions
            is_point = self.attribute in (c.point_attributes or [])
            origin = (given if is_point else given[..., 4:]).to(predictions.dtype)
            if attention_mask is not None:  # padding may hold anything
                origin = origin.masked_fill(~attention_mask.bool()[..., None], 0)
            if out.displacements is not None and self.attribute in out.displacements:  # coordinate_updates
                origin = origin + out.displacements[self.attribute].to(predictions.dtype)
            if c.equivariant_level == "sequence":
                origin = _pool(origin, attention_mask)
            predictions = predictions + origin
        loss = None if labels is None else self._loss(predictions, labels, attention_mask)
        return EquivariantRegressionOutput(loss, predictions, out.hidden_states, out.attentions)

    def _moments(self, invariants: torch.Tensor, attention_mask, positions, dtype) -> torch.Tensor:
        """The ``moment_readout`` term of the predictions, Cartesian ``(B[, T], 3)`` or ``(B[, T], 3, 3)``."""
        c = self.config
        B, T = invariants.shape[:2]
        mask = None if attention_mask is None else attention_mask.bool()
        vectors = self.model.inputs.vectors(positions, B, T, mask, dtype)
        weights = self.moment_weights(invariants).to(dtype)  # (B, T, per vector x vectors)
        parts = []
        for n, name in enumerate(c.moment_readout):
            v = vectors[name]
            if c.equivariant_target == "vector":  # a_i v_i, in D_1's order (y, z, x)
                parts.append(weights[..., n : n + 1] * v[..., list(DEGREE_1_FROM_CARTESIAN)])
                continue
            square = (v * v).sum(-1, keepdim=True)
            eye = torch.eye(3, dtype=dtype, device=v.device)
            traceless = v[..., :, None] * v[..., None, :] - square[..., None] * eye / 3
            a, b = weights[..., 2 * n : 2 * n + 1], weights[..., 2 * n + 1 : 2 * n + 2]
            parts.append(torch.cat((a * square, b * traceless_to_harmonic(traceless)), dim=-1))
        moments = sum(parts)
        if c.equivariant_level == "sequence":
            moments = _pool(moments, attention_mask)
        harmonic = self.moment_proj(moments)
        if c.equivariant_target == "vector":
            return harmonic[..., list(CARTESIAN_FROM_DEGREE_1)]
        eye = torch.eye(3, dtype=harmonic.dtype, device=harmonic.device)
        matrix = harmonic[..., :1, None] * eye + harmonic_to_traceless(harmonic[..., -5:])
        if c.equivariant_target == "matrix":  # degree 1 (after the trace): the antisymmetric part
            matrix = matrix + _antisymmetric(harmonic[..., [3, 1, 2]])
        return matrix

    def _loss(self, predictions: torch.Tensor, labels: torch.Tensor, attention_mask) -> torch.Tensor:
        if labels.shape != predictions.shape:
            raise ValueError(f"labels: expected shape {tuple(predictions.shape)}, got {tuple(labels.shape)}")
        errors = (predictions - labels.to(predictions.dtype)).pow(2)
        if self.config.equivariant_level == "token" and attention_mask is not None:
            keep = attention_mask.to(errors.dtype).reshape(*attention_mask.shape, *([1] * (errors.dim() - 2)))
            return (errors * keep).sum() / (keep.sum() * errors[0, 0].numel()).clamp_min(1.0)
        return F.mse_loss(predictions, labels.to(predictions.dtype))
