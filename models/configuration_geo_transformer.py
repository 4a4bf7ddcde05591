"""Configuration of the geo transformer: sizes, positional encodings (irreps specs) and the phase state."""

from __future__ import annotations

from transformers import PreTrainedConfig

# A saved folder carries this file and the modeling files, which build on the geo-pe library. Under
# trust_remote_code, transformers would suggest `pip install geo_pe`, a package that does not exist;
# imports inside ``try`` are not scanned, so a missing library gets this line instead.
try:
    from geo_pe.pe import absolute_block_sizes
    from geo_pe.phases import PHASES, PROJECTIONS
    from geo_pe.reps import IrrepsSpec
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        "this geo transformer needs the geo-pe library (import name geo_pe), which is not installed: "
        "pip install a clone of the geo-pe repository (pip install ./geo-pe), then load the folder again"
    ) from missing

__all__ = ["GeoTransformerConfig"]

RELATIVE_MODES = ("rotary", "gta")
EQUIVARIANT_TARGETS = ("vector", "symmetric_matrix", "matrix", "position")
EQUIVARIANT_LEVELS = ("token", "sequence")
POINT_MESSAGES = ("softmax", "signed")
POINT_ORIGINS = ("centroid", "origin")
PHASE_LAYERS = ("attention", "all")


class GeoTransformerConfig(PreTrainedConfig):
    r"""Configuration of a `GeoTransformerModel`.

    The token state has ``hidden_size`` channels: invariant scalars, then (with ``pe_absolute``) the
    channels of the absolute encoding gamma(g) = vec(rho(g)). Relative encodings (``pe_relative``, rotary or
    GTA) act inside attention on the heads made of scalar channels. The phase state is
    ``phase_history``, e.g. ``["scalar_identity", "subspace"]``: a model is rebuilt by replaying it, so
    ``from_pretrained`` restores every phase with its parameters. The config is plain data: derived sizes
    are arithmetic on its fields, and no module is built here.

    ``GeoTransformerConfig()`` builds a working model, as HF configs do: 8 float features per token and
    RoPE (``"t1:8"``) over token indices.

    Args:
        vocab_size: token vocabulary for ``input_ids`` (0: no token embedding).
        feature_size: float features per token for ``features`` (0: none).
        hidden_size: width of the token state (scalars + absolute-PE channels).
        num_hidden_layers, num_attention_heads: transformer depth and heads.
        head_dim: per-head width, default ``hidden_size // num_attention_heads``; heads must tile the state.
        intermediate_size: SwiGLU width (on the scalars), default the multiple of 8 nearest 8/3 of
            their width.
        hidden_act: MLP activation (``"silu"`` gives SwiGLU).
        rms_norm_eps, initializer_range, attention_dropout, attention_bias: as in Llama.
        pe_absolute: irreps spec of the absolute encoding concatenated to the scalars, or None.
        pe_relative: irreps spec of the relative encoding (its dimension must equal ``head_dim``), or None.
        pe_relative_mode: ``"rotary"`` (queries and keys) or ``"gta"`` (also values and outputs).
        pair_layout: ``"interleaved"`` or ``"half"`` (see `geo_pe.pe.RotaryPE`).
        phase_history: the phases the phase-controlled layers went through, last one current.
        phase_layers: ``"attention"`` (q, k, v, o projections) or ``"all"`` (every linear layer of the
            layers; the MLP is then part of a subspace too).
        subspace_dim, subspace_projection, subspace_seed, shared_subspace: the random subspace of a
            ``"subspace"`` phase.
        pooling: ``"mean"`` over valid tokens for sequence heads.
        classifier_dropout: dropout before the heads.
        pe_gate: a gated nonlinearity on the channels of ``pe_absolute`` in every MLP: each block is
            mapped by a phase-controlled linear layer (equivariant in phase I, freed with the attention
            projections in phase II) and scaled by a sigmoid of a linear function of the scalars, as in
            the gated nonlinearities of Weiler et al. (2018) and e3nn's ``Gate``. Without it the PE
            channels are updated only linearly (attention and the residual).
        shared_rotations: groups of attributes turned by one global rotation, e.g.
            ``[["position", "velocity"]]`` for a particle's position and velocity directions (``s2``) or
            ``[["orientation", "direction"]]``: their SO(3) irreps of equal degree are one irrep, so the
            phase I maps mix their channels (`geo_pe.reps.share_rotation`).
        point_attributes: ``s2`` attributes given as points in R^3 (atoms, particles), not directions, or
            ``so2`` attributes given as points in the plane ``(B, T, 2)`` (pixels, planar particles), not
            angles: the model centres each on the centroid of the valid tokens (``point_origin``), reads the
            direction (s2) or the angle (so2) from there, adds the distance to the invariant inputs, and
            moves "position" outputs with the raw points. The model is then invariant to translations as
            well, with no pre-processing by the user. Planar points serve ``distance_bias`` and
            ``relative_point_values`` (into SO(2) blocks of frequency 1); the moves below are defined
            for points in R^3.
        point_origin: where the points are read from: ``"centroid"``, the centroid of the set's valid
            points (invariance to translations; a point at the centroid has no direction and is refused),
            or ``"origin"``, the coordinates' own origin, for data whose rotations turn about a fixed
            centre (an image about its centre); the model is then equivariant to rotations about it only.
        distance_bias: Gaussian radial functions of the distances |x_i - x_j| between the tokens' points
            (each of ``point_attributes``), mapped by a linear layer per attention layer to an additive bias
            of every head's logits (0: none). Distances are invariant under rotations, translations and
            reflections, so the model keeps its equivariance in every phase; they give attention the
            pairwise geometry (who is near whom) that products of directions express only indirectly,
            as the radial filters of SchNet, EGNN and TorchMD-Net do.
        relative_point_values: attention also carries geometry into the values: each head averages the
            offsets x_j - x_i of the point attributes with its weights, and a linear map per layer mixes
            these per-head vectors into the degree-1 channels of ``pe_absolute`` that turn with the
            points. This is EGNN's coordinate message (Satorras et al. 2021) with attention weights;
            equivariant in every phase.
        distance_bias_max: the largest distance the radial functions resolve (their centres are spaced
            evenly on [0, distance_bias_max]), in the points' units.
        local_descriptor_shells: radii (in the points' units) of the shells of a local descriptor added
            to each token's scalar inputs (None: none), for planar (``so2``) point attributes: the power
            spectrum of the token's neighbourhood (`geo_pe.descriptors.planar_power_spectrum`), its
            neighbours binned by distance into Gaussian shells and by direction into circular harmonics
            up to ``local_descriptor_frequencies``, through a linear map. It tells each token the shape
            around it (a stroke's direction, a corner, an end) before any attention, as a CNN's first
            kernels do, and it is invariant under rotations and translations, so the model keeps its
            equivariance in every phase.
        local_descriptor_frequencies: the circular harmonics' highest frequency M (0: shell counts only).
        local_descriptor_width: the shells' Gaussian width, in the points' units.
        local_descriptor_weight: the index in ``features`` of each neighbour's weight (an intensity), or
            None for a weight of 1.
        point_messages: how pairs are weighed in the geometric messages (``relative_point_values`` and
            ``coordinate_updates``): ``"softmax"``, by each head's attention weights (they are positive
            and sum to 1 over the keys); ``"signed"``, by a pair MLP per layer on invariants, the
            pair's logit in every head and its radial functions (``distance_bias``), as EGNN's
            phi_x(m_ij): signed, unnormalised, averaged over the other tokens of the set. Logits are
            q_i . k_j, so they carry products of the two tokens' features (EGNN's q_i q_j).
        pair_scalar_messages: with ``point_messages="signed"``, the pair MLP also reads both tokens'
            scalars, and each token's scalars receive the mean of its hidden pair messages over the other
            tokens: EGNN's edge function phi_e(s_i, s_j, |x_i - x_j|, logits) and node update, beside
            attention's own messages. Invariant inputs only, so equivariant in every phase.
        pair_vector_invariants: with ``point_messages="signed"`` and ``vector_inputs``, the pair MLP
            also reads, for each input vector v, the pair's invariants r_ij . v_i, r_ij . v_j and
            v_i . v_j (r_ij = x_j - x_i of the first point attribute, recomputed from the moved points
            in every layer): whether and how fast two particles approach, which EGNN's messages can only
            rebuild over several layers. Invariants only, so equivariant in every phase.
        pair_vector_messages: with ``coordinate_updates`` and ``vector_inputs``, each layer's step also
            moves x_i by sum_j e_ij (v_j - v_i) for each input vector v, e_ij the heads' pair weights
            mixed by a linear map of its own: the separation a pair will have, not only the one it has,
            steers the step (the force on i turns as both particles move). Equivariant in every phase.
        coordinate_updates: every layer moves the point attributes, x_i <- x_i + sum_j c_ij (x_j - x_i)
            + sum_v phi_v(s_i) v_i, with c_ij the pair weights of ``point_messages`` mixed over heads,
            v the ``vector_inputs`` and phi_v an MLP on the token's scalars s_i; the next layer's pair
            geometry (distances, offsets) is recomputed from the moved points, and ``"position"``
            outputs add the total movement to the token's point: an unbounded displacement, as EGNN's
            coordinate updates. Equivariant in every phase: only offsets and input vectors move points.
        vector_inputs: ``s2`` attributes (velocities, forces) whose raw vectors, magnitude included,
            are carried linearly, not only as directions: each degree-1 block of ``pe_absolute`` that
            turns with the vector gets a learned multiple of it at the input, and with
            ``coordinate_updates`` every layer moves the points by phi_v(s_i) v_i (EGNN's velocity
            term). The vectors must turn with the point attributes (``shared_rotations``).
        moment_readout: ``vector_inputs`` whose moments `GeoTransformerForEquivariantRegression` adds to
            its outputs, magnitude included: for a vector target, the mean over tokens of a_i v_i; for
            a matrix target, of a_i |v_i|^2 I + b_i (v_i v_i^T - |v_i|^2 I / 3), with a_i, b_i linear in
            the token's invariants (zero at initialisation), then mapped by a layer that follows the
            phases (equivariant in phase I, free in phase II). A quadratic readout in the spirit of a
            tensor product v (x) v: an inertia tensor sum_i m_i (|r_i|^2 I - r_i r_i^T) is one such sum.
        equivariant_target, equivariant_level, output_attribute: what
            `GeoTransformerForEquivariantRegression` predicts (``"vector"``, ``"symmetric_matrix"``,
            ``"matrix"`` (any 3x3) or ``"position"``), per ``"token"`` or per ``"sequence"``, turning with
            which rotation attribute (default: the only one).
        causal: each token attends to itself and the tokens before it (a decoder over trajectories or
            policies); phase I stays exactly equivariant, since the mask depends on token order only.
        validate_inputs: check input values (finite features, valid group elements) in the forward; each
            check reads the data, a host sync on an accelerator. Shapes are always checked.
    """

    model_type = "geo_transformer"

    def __init__(
        self,
        vocab_size: int = 0,
        feature_size: int = 8,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        head_dim: int | None = None,
        intermediate_size: int | None = None,
        hidden_act: str = "silu",
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        attention_dropout: float = 0.0,
        attention_bias: bool = False,
        pe_absolute: str | dict | None = None,
        pe_relative: str | dict | None = "t1:8",
        pe_relative_mode: str = "rotary",
        pair_layout: str = "interleaved",
        phase_history: list[str] | None = None,
        phase_layers: str = "attention",
        subspace_dim: int | None = None,
        subspace_projection: str = "fastfood",
        subspace_seed: int = 0,
        shared_subspace: bool = True,
        pooling: str = "mean",
        classifier_dropout: float = 0.0,
        pe_gate: bool = False,
        shared_rotations: list[list[str]] | None = None,
        point_attributes: list[str] | None = None,
        point_origin: str = "centroid",
        distance_bias: int = 0,
        distance_bias_max: float = 5.0,
        local_descriptor_shells: list[float] | None = None,
        local_descriptor_frequencies: int = 3,
        local_descriptor_width: float = 0.2,
        local_descriptor_weight: int | None = None,
        relative_point_values: bool = False,
        point_messages: str = "softmax",
        pair_scalar_messages: bool = False,
        pair_vector_invariants: bool = False,
        pair_vector_messages: bool = False,
        coordinate_updates: bool = False,
        vector_inputs: list[str] | None = None,
        moment_readout: list[str] | None = None,
        equivariant_target: str = "vector",
        equivariant_level: str = "sequence",
        output_attribute: str | None = None,
        causal: bool = False,
        validate_inputs: bool = True,
        **kwargs,
    ):
        self.vocab_size, self.feature_size = vocab_size, feature_size
        self.hidden_size, self.num_hidden_layers = hidden_size, num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim if head_dim is not None else hidden_size // max(1, num_attention_heads)
        self.pe_absolute = None if pe_absolute is None else str(IrrepsSpec.parse(pe_absolute))
        self.pe_relative = None if pe_relative is None else str(IrrepsSpec.parse(pe_relative))
        self.pe_relative_mode, self.pair_layout = pe_relative_mode, pair_layout
        scalars = hidden_size - self.pe_width
        self.intermediate_size = (
            intermediate_size if intermediate_size is not None else _swiglu_width(scalars)
        )
        self.hidden_act, self.rms_norm_eps = hidden_act, rms_norm_eps
        self.initializer_range, self.attention_dropout = initializer_range, attention_dropout
        self.attention_bias = attention_bias
        self.phase_history = list(phase_history) if phase_history else ["free"]
        self.phase_layers = phase_layers
        self.subspace_dim, self.subspace_projection = subspace_dim, subspace_projection
        self.subspace_seed, self.shared_subspace = subspace_seed, shared_subspace
        self.pooling, self.classifier_dropout = pooling, classifier_dropout
        self.pe_gate, self.causal, self.validate_inputs = pe_gate, causal, validate_inputs
        self.equivariant_target, self.equivariant_level = equivariant_target, equivariant_level
        self.output_attribute = output_attribute
        self.distance_bias, self.distance_bias_max = distance_bias, distance_bias_max
        self.local_descriptor_shells = (
            [float(r) for r in local_descriptor_shells] if local_descriptor_shells else None
        )
        self.local_descriptor_frequencies = local_descriptor_frequencies
        self.local_descriptor_width, self.local_descriptor_weight = (
            local_descriptor_width,
            local_descriptor_weight,
        )
        self.relative_point_values = relative_point_values
        self.point_messages, self.coordinate_updates = point_messages, coordinate_updates
        self.pair_scalar_messages = pair_scalar_messages
        self.pair_vector_invariants = pair_vector_invariants
        self.pair_vector_messages = pair_vector_messages
        self.vector_inputs = list(vector_inputs) if vector_inputs else None
        self.moment_readout = list(moment_readout) if moment_readout else None
        self.shared_rotations = [list(group) for group in shared_rotations] if shared_rotations else None
        self.point_attributes = list(point_attributes) if point_attributes else None
        self.point_origin = point_origin
        super().__init__(**kwargs)
        self.validate_geometry()

    # --- derived sizes ---------------------------------------------------------------------------------
    @property
    def pe_block_sizes(self) -> tuple[int, ...]:
        """Channels of each irrep block of the absolute encoding, in order (empty without one)."""
        return absolute_block_sizes(self.pe_absolute) if self.pe_absolute is not None else ()

    @property
    def pe_width(self) -> int:
        """Channels of the absolute encoding in the token state (0 without one)."""
        return sum(self.pe_block_sizes)

    @property
    def scalar_size(self) -> int:
        return self.hidden_size - self.pe_width

    @property
    def phase(self) -> str:
        return self.phase_history[-1]

    # --- validation --------------------------------------------------------------------------------------
    def validate_geometry(self) -> None:
        """Check sizes, specs and phases; raise ``ValueError`` naming the field and what was expected."""
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "head_dim",
            "intermediate_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.vocab_size < 0 or self.feature_size < 0:
            raise ValueError(
                f"vocab_size, feature_size: expected non-negative sizes, got {self.vocab_size}, "
                f"{self.feature_size}"
            )
        if self.vocab_size + self.feature_size == 0 and not self.point_attributes:
            raise ValueError(
                "vocab_size, feature_size: the model needs input_ids (vocab_size > 0), features or "
                "point_attributes"
            )
        if self.num_attention_heads * self.head_dim != self.hidden_size:
            raise ValueError(
                f"num_attention_heads, head_dim: {self.num_attention_heads} heads of {self.head_dim} "
                f"channels must tile hidden_size={self.hidden_size}"
            )
        if self.scalar_size < 1:
            raise ValueError(
                f"hidden_size: {self.hidden_size} leaves no scalar channels next to the {self.pe_width} "
                f"channels of pe_absolute={self.pe_absolute!r}"
            )
        if self.pe_absolute is not None:
            boundaries = _block_boundaries(self.pe_absolute, self.scalar_size)
            cuts = [
                h * self.head_dim
                for h in range(1, self.num_attention_heads)
                if h * self.head_dim not in boundaries
            ]
            if cuts:
                raise ValueError(
                    f"head_dim: heads of {self.head_dim} channels cut blocks of "
                    f"pe_absolute={self.pe_absolute!r} (placed after {self.scalar_size} scalars) at channels "
                    f"{cuts}; attention within a head is only invariant over whole blocks, so choose "
                    "hidden_size, head_dim or the spec to align them"
                )
        if self.pe_relative is not None:
            relative = IrrepsSpec.parse(self.pe_relative).dim
            if relative != self.head_dim:
                raise ValueError(
                    f"pe_relative: {self.pe_relative!r} has dimension {relative}, which does not tile "
                    f"head_dim={self.head_dim}"
                )
            if self.relative_heads < 1:
                raise ValueError(
                    "pe_relative: no attention head consists of scalar channels only, so the relative "
                    "encoding has no head to act on; make the scalars at least head_dim wide"
                )
        if self.pe_relative_mode not in RELATIVE_MODES:
            raise ValueError(
                f"pe_relative_mode: expected one of {RELATIVE_MODES}, got {self.pe_relative_mode!r}"
            )
        if self.pair_layout not in ("interleaved", "half"):
            raise ValueError(f"pair_layout: expected 'interleaved' or 'half', got {self.pair_layout!r}")
        bad = [p for p in self.phase_history if p not in PHASES]
        if bad:
            raise ValueError(f"phase_history: unknown phases {bad} (expected some of {PHASES})")
        if self.phase_layers not in PHASE_LAYERS:
            raise ValueError(f"phase_layers: expected one of {PHASE_LAYERS}, got {self.phase_layers!r}")
        if "scalar_identity" in self.phase_history and self.phase_layers != "attention":
            raise ValueError(
                "phase_layers: scalar identity needs square layers, use phase_layers='attention'"
            )
        if "subspace" in self.phase_history and not self.subspace_dim:
            raise ValueError("subspace_dim: a 'subspace' phase in phase_history needs the subspace dimension")
        if self.subspace_projection not in PROJECTIONS:
            raise ValueError(
                f"subspace_projection: expected one of {PROJECTIONS}, got {self.subspace_projection!r}"
            )
        if self.pe_gate and self.pe_absolute is None:
            raise ValueError("pe_gate: gates act on the channels of pe_absolute, which is None")
        attributes = {}
        for spec in (self.pe_absolute, self.pe_relative):
            if spec is not None:
                attributes.update(IrrepsSpec.parse(spec).attributes)
        not_points = [a for a in self.point_attributes or [] if attributes.get(a) not in ("s2", "so2")]
        if not_points:
            raise ValueError(
                f"point_attributes: {not_points} are not s2 or so2 attributes of the encodings "
                f"({sorted(attributes)})"
            )
        if self.point_origin not in POINT_ORIGINS:
            raise ValueError(f"point_origin: expected one of {POINT_ORIGINS}, got {self.point_origin!r}")
        planar = [a for a in self.point_attributes or [] if attributes.get(a) == "so2"]
        moved = [k for k in ("coordinate_updates", "pair_vector_invariants") if getattr(self, k)]
        if planar and moved:
            raise ValueError(
                f"{moved[0]}: moves and input vectors are taken with points in R^3; {planar} are planar "
                "(so2) points, which serve distance_bias and relative_point_values"
            )
        if not isinstance(self.distance_bias, int) or self.distance_bias < 0 or self.distance_bias == 1:
            raise ValueError(
                f"distance_bias: expected 0 or at least 2 radial functions, got {self.distance_bias!r}"
            )
        if self.distance_bias and not self.point_attributes:
            raise ValueError("distance_bias: distances are taken between points; set point_attributes")
        if self.relative_point_values and not self.point_attributes:
            raise ValueError("relative_point_values: offsets are taken between points; set point_attributes")
        self._validate_point_dynamics(attributes)
        self._validate_local_descriptors(planar)
        if not self.distance_bias_max > 0:
            raise ValueError(
                f"distance_bias_max: expected a positive distance, got {self.distance_bias_max!r}"
            )
        for group in self.shared_rotations or []:
            if len(group) < 2 or not all(isinstance(a, str) for a in group):
                raise ValueError(
                    f"shared_rotations: each group lists two or more attribute names, got {group!r}"
                )
            unknown = [a for a in group if a not in attributes]
            if unknown:
                raise ValueError(
                    f"shared_rotations: {unknown} are not attributes of the encodings ({sorted(attributes)})"
                )
            wrong = [a for a in group if attributes[a] not in ("so3", "s2")]
            if wrong:
                raise ValueError(
                    f"shared_rotations: {wrong} are not so3 or s2 attributes; only those share a rotation"
                )
        if self.equivariant_target not in EQUIVARIANT_TARGETS:
            raise ValueError(
                f"equivariant_target: expected one of {EQUIVARIANT_TARGETS}, got {self.equivariant_target!r}"
            )
        if self.equivariant_level not in EQUIVARIANT_LEVELS:
            raise ValueError(
                f"equivariant_level: expected one of {EQUIVARIANT_LEVELS}, got {self.equivariant_level!r}"
            )
        if self.pooling != "mean":
            raise ValueError(f"pooling: expected 'mean', got {self.pooling!r}")

    def _validate_local_descriptors(self, planar: list[str]) -> None:
        """The local descriptors' keys: shells around planar points, a frequency, a width and a weight."""
        if self.local_descriptor_shells is None:
            return
        if not planar:
            raise ValueError(
                "local_descriptor_shells: descriptors are taken around planar points; set point_attributes "
                "to an so2 attribute"
            )
        if any(not r >= 0 for r in self.local_descriptor_shells):
            raise ValueError(
                f"local_descriptor_shells: expected non-negative radii, got {self.local_descriptor_shells!r}"
            )
        m = self.local_descriptor_frequencies
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ValueError(f"local_descriptor_frequencies: expected a non-negative int, got {m!r}")
        if not self.local_descriptor_width > 0:
            raise ValueError(
                f"local_descriptor_width: expected a positive width, got {self.local_descriptor_width!r}"
            )
        w = self.local_descriptor_weight
        if w is not None and (
            isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < self.feature_size
        ):
            raise ValueError(
                f"local_descriptor_weight: expected None or a feature index in [0, {self.feature_size}) "
                f"(feature_size), got {w!r}"
            )

    def _validate_point_dynamics(self, attributes: dict[str, str]) -> None:
        """``point_messages``, ``coordinate_updates`` and ``vector_inputs`` against the point attributes."""
        if self.point_messages not in POINT_MESSAGES:
            raise ValueError(f"point_messages: expected one of {POINT_MESSAGES}, got {self.point_messages!r}")
        moves = self.relative_point_values or self.coordinate_updates
        if self.point_messages == "signed" and not (moves and self.distance_bias):
            raise ValueError(
                "point_messages: 'signed' weighs the messages of relative_point_values or "
                "coordinate_updates from the pairs' radial functions; set one of them and distance_bias"
            )
        if self.pair_scalar_messages and self.point_messages != "signed":
            raise ValueError("pair_scalar_messages: they are the hidden messages of point_messages='signed'")
        if self.pair_vector_invariants and (self.point_messages != "signed" or not self.vector_inputs):
            raise ValueError(
                "pair_vector_invariants: the pair MLP of point_messages='signed' reads them from the "
                "vector_inputs; set both"
            )
        if self.pair_vector_messages and not (self.coordinate_updates and self.vector_inputs):
            raise ValueError(
                "pair_vector_messages: they move the points by the input vectors' differences; set "
                "coordinate_updates and vector_inputs"
            )
        if self.coordinate_updates and not self.point_attributes:
            raise ValueError("coordinate_updates: they move points; set point_attributes")
        points = self.point_attributes or []
        if self.vector_inputs and self.pe_absolute is None and not self.coordinate_updates:
            raise ValueError(
                "vector_inputs: they enter the degree-1 channels of pe_absolute or move the points "
                "(coordinate_updates); this model has neither"
            )
        for name in self.vector_inputs or []:
            if attributes.get(name) != "s2" or name in points:
                raise ValueError(
                    f"vector_inputs: {name!r} is not an s2 attribute of the encodings other than the "
                    f"point attributes (the encodings have {sorted(attributes)})"
                )
            if self.coordinate_updates:
                frames = [set(group) for group in self.shared_rotations or []]
                apart = [p for p in points if not any({name, p} <= group for group in frames)]
                if apart:
                    raise ValueError(
                        f"vector_inputs: {name!r} moves the points {apart} under coordinate_updates, so it "
                        f"must turn with them: list both in one group of shared_rotations"
                    )
        unread = [name for name in self.moment_readout or [] if name not in (self.vector_inputs or [])]
        if unread:
            raise ValueError(
                f"moment_readout: {unread} are not vector_inputs ({self.vector_inputs}); the moments are "
                "taken of the raw input vectors"
            )

    @property
    def relative_heads(self) -> int:
        """Heads made of scalar channels only: the ones the relative encoding acts on."""
        return self.scalar_size // self.head_dim if self.pe_absolute is not None else self.num_attention_heads


def _swiglu_width(scalars: int) -> int:
    return max(8, 8 * round(8 * scalars / 3 / 8))


def _block_boundaries(spec: str, offset: int) -> set[int]:
    """Channel offsets in the token state where the blocks of the absolute encoding begin and end."""
    bounds, position = set(range(offset + 1)), offset
    for d in absolute_block_sizes(spec):
        position += d
        bounds.add(position)
    return bounds
