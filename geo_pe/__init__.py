"""geo-pe: group-representation positional encodings and multi-phase symmetric learning.

Subpackages: `geo_pe.quaternion` (rotations as unit quaternions), `geo_pe.reps` (group
representations, Wigner-D, irreps specs), `geo_pe.testing` (equivariance checks).
"""

from geo_pe import quaternion, reps, testing
from geo_pe._checks import input_validation, set_input_validation
from geo_pe.reps import IrrepsSpec

__version__ = "0.1.0"

__all__ = ["IrrepsSpec", "input_validation", "quaternion", "reps", "set_input_validation", "testing"]
