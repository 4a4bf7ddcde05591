"""Multi-phase symmetric learning: parametrisations, random subspaces, `set_phase`.

Phase I trains weights inside a symmetric subspace (scalar identity or equivariant); phase II frees them,
in the full space or in a random affine subspace {w_t + A theta}. `set_phase` moves any model's linear
layers between phases without changing what the network computes.
"""

from geo_pe.phases.linear import PhasedLinear
from geo_pe.phases.parametrizations import (
    EquivariantWeight,
    FreeWeight,
    InvariantBias,
    ResidualPathwayWeight,
    ScalarIdentityWeight,
    SubspaceWeight,
    WeightParametrization,
)
from geo_pe.phases.phase import (
    PHASES,
    PhaseReport,
    phase_param_groups,
    rebuild_optimizer,
    select_layers,
    set_phase,
)
from geo_pe.phases.projections import PROJECTIONS, RandomSubspace, fwht, make_projection
from geo_pe.phases.sharded import carry_optimizer_state, switch_phase_sharded
from geo_pe.phases.soft import PenaltySchedule, equivariance_loss, symmetry_penalty

__all__ = [
    "PHASES",
    "PROJECTIONS",
    "EquivariantWeight",
    "FreeWeight",
    "InvariantBias",
    "PenaltySchedule",
    "PhaseReport",
    "PhasedLinear",
    "RandomSubspace",
    "ResidualPathwayWeight",
    "ScalarIdentityWeight",
    "SubspaceWeight",
    "WeightParametrization",
    "carry_optimizer_state",
    "equivariance_loss",
    "fwht",
    "make_projection",
    "phase_param_groups",
    "rebuild_optimizer",
    "select_layers",
    "set_phase",
    "switch_phase_sharded",
    "symmetry_penalty",
]
