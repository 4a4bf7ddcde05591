"""The equivariance toolkit: symmetrizer, intertwiner bases, weight-sharing layers, metrics.

* `Symmetrizer`: S(W) = 1/|G| sum_g rho_out(g) W rho_in(g)^-1 for finite groups (weakly equivariant networks).
* `intertwiner_basis`, `schur_basis`, `orbit_pattern`, `invariant_vectors`: equivariant subspaces for
  any representation (dense, Kronecker-structured or orbit solvers; Schur closed forms).
* Layers (Weiler et al. 2023): `DeepSetsLinear`, `SnTensorLinear`, `ProductSetLinear`, `CirculantLinear`,
  `InvariantPooling`, `EquivariantLinear`, with `draw_weight_sharing` pictures.
* Metrics (Shahverdi et al. 2026): `equivariance_error`, `layerwise_equivariance`, `compare_layerwise`,
  `unit_equivariance` (on activations at hand, e.g. tokens aligned), and per attention head
  `compare_attention_heads` (with `record_attention` for any model).
"""

from geo_pe.equivariance.examples import fit_parity_polynomial, parity_features
from geo_pe.equivariance.heads import HeadMatching, compare_attention_heads, record_attention
from geo_pe.equivariance.intertwiners import (
    EquivarianceWarning,
    SchurBlock,
    constraint_pairs,
    intertwiner_basis,
    invariant_vectors,
    orbit_pattern,
    permutation_action,
    schur_basis,
    schur_blocks,
    span_distance,
)
from geo_pe.equivariance.layers import (
    CirculantLinear,
    DeepSetsLinear,
    EquivariantLinear,
    InvariantPooling,
    ProductSetLinear,
    SnTensorLinear,
    set_partitions,
)
from geo_pe.equivariance.metrics import (
    LayerReport,
    compare_layerwise,
    equivariance_error,
    layer_activations,
    layerwise_equivariance,
    unit_equivariance,
)
from geo_pe.equivariance.pictures import draw_weight_sharing, weight_sharing_pattern
from geo_pe.equivariance.structure import EquivariantStructure
from geo_pe.equivariance.symmetrizer import Symmetrizer

__all__ = [
    "CirculantLinear",
    "DeepSetsLinear",
    "EquivarianceWarning",
    "EquivariantLinear",
    "EquivariantStructure",
    "HeadMatching",
    "InvariantPooling",
    "LayerReport",
    "ProductSetLinear",
    "SchurBlock",
    "SnTensorLinear",
    "Symmetrizer",
    "compare_attention_heads",
    "compare_layerwise",
    "constraint_pairs",
    "draw_weight_sharing",
    "equivariance_error",
    "fit_parity_polynomial",
    "intertwiner_basis",
    "invariant_vectors",
    "layer_activations",
    "layerwise_equivariance",
    "orbit_pattern",
    "parity_features",
    "permutation_action",
    "record_attention",
    "schur_basis",
    "schur_blocks",
    "set_partitions",
    "span_distance",
    "unit_equivariance",
    "weight_sharing_pattern",
]
