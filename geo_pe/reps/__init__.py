"""Group representations for positional encodings and equivariant layers.

Lie groups (positional encodings): `TranslationRep`, `SO2Rep`, `SO3Rep`, and `SphereRep` for
directions on S^2, combined by `DirectSum` and `TensorProduct`, or built from an `IrrepsSpec` string
such as ``"t1:8+so3:2x1"``.
SO(3) functions: `wigner_D`, `wigner_D_all`, `wigner_D_from_matrix`, `spherical_harmonics`.
Finite groups (weight sharing): `cyclic`, `dihedral`, `symmetric`, `direct_product`, with
`PermutationRep`, `TensorPower`, `RegularRep`, `TrivialRep` and `outer_product`.
"""

from geo_pe.reps.base import TRIVIAL, DirectSum, Irrep, Representation, TensorPower, TensorProduct
from geo_pe.reps.finite import (
    CyclicGroup,
    DihedralGroup,
    DirectProductGroup,
    FactorRep,
    PermutationGroup,
    PermutationRep,
    RegularRep,
    SymmetricGroup,
    TrivialRep,
    cyclic,
    dihedral,
    direct_product,
    outer_product,
    symmetric,
)
from geo_pe.reps.groups import (
    SE3,
    SO2,
    SO3,
    Group,
    GroupElements,
    ProductGroup,
    Space,
    Sphere,
    Translations,
    validate_elements,
)
from geo_pe.reps.lie import (
    AttributeRep,
    SE3Rep,
    SO2Rep,
    SO3Rep,
    SphereRep,
    TranslationRep,
    Trivial,
    default_frequencies,
    share_rotation,
)
from geo_pe.reps.spec import IrrepsSpec, SO2Factor, SO3Factor, SphereFactor, TranslationFactor
from geo_pe.reps.wigner import (
    L1_PERMUTATION,
    spherical_harmonics,
    wigner_D,
    wigner_D_all,
    wigner_D_from_matrix,
)

__all__ = [
    "L1_PERMUTATION",
    "SE3",
    "SO2",
    "SO3",
    "TRIVIAL",
    "AttributeRep",
    "CyclicGroup",
    "DihedralGroup",
    "DirectProductGroup",
    "DirectSum",
    "FactorRep",
    "Group",
    "GroupElements",
    "Irrep",
    "IrrepsSpec",
    "PermutationGroup",
    "PermutationRep",
    "ProductGroup",
    "RegularRep",
    "Representation",
    "SE3Rep",
    "SO2Factor",
    "SO2Rep",
    "SO3Factor",
    "SO3Rep",
    "Space",
    "Sphere",
    "SphereFactor",
    "SphereRep",
    "SymmetricGroup",
    "TensorPower",
    "TensorProduct",
    "TranslationFactor",
    "TranslationRep",
    "Translations",
    "Trivial",
    "TrivialRep",
    "cyclic",
    "default_frequencies",
    "dihedral",
    "direct_product",
    "outer_product",
    "share_rotation",
    "spherical_harmonics",
    "symmetric",
    "validate_elements",
    "wigner_D",
    "wigner_D_all",
    "wigner_D_from_matrix",
]
