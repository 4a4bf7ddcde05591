"""Parametrisations of a linear layer's weight (and bias): what each training phase trains.

==========================  ===========================================  ====================================
parametrisation             weight                                       forward ``x -> x W^T``
==========================  ===========================================  ====================================
`ScalarIdentityWeight`      b I (the original design's phase I for attention)  ``b * x``: no matmul
`EquivariantWeight`         sum of coefficients x intertwiners           `EquivariantStructure.linear`
`FreeWeight`                any W                                         ``F.linear``
`SubspaceWeight`            w_t + slice of A theta (`RandomSubspace`)     ``F.linear``
`ResidualPathwayWeight`     equivariant + free part (with its own decay)  both
==========================  ===========================================  ====================================

A parametrisation also knows its subspace: ``project(W)`` is the closest weight it can represent
(exact for W already inside), which `set_phase` uses to move between phases without changing the
function, and which the phase II pull toward symmetry uses as P(W). Parametrisations created at a
phase switch keep the previous phase's space (``symmetry``) and weight (``anchor``) for that pull.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from geo_pe.equivariance.intertwiners import invariant_vectors
from geo_pe.equivariance.structure import EquivariantStructure
from geo_pe.phases.projections import RandomSubspace
from geo_pe.reps.base import Representation

__all__ = [
    "EquivariantWeight",
    "FreeWeight",
    "InvariantBias",
    "ResidualPathwayWeight",
    "ScalarIdentityWeight",
    "SubspaceWeight",
    "WeightParametrization",
]


class ScalarIdentitySpace(nn.Module):
    """The space {b I}, as a projector (no parameters)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def project(self, W: torch.Tensor) -> torch.Tensor:
        return torch.diagonal(W).mean() * torch.eye(self.n, dtype=W.dtype, device=W.device)


class InvariantSpace(nn.Module):
    """The invariant vectors of a representation, as a projector (no parameters)."""

    def __init__(self, rep_out: Representation):
        super().__init__()
        self.rep_out = rep_out
        self.reset_buffers()

    def reset_buffers(self) -> None:
        device = self.basis.device if hasattr(self, "basis") and self.basis.device.type != "meta" else "cpu"
        with torch.device("cpu"):
            basis = invariant_vectors(self.rep_out).to(torch.get_default_dtype())
        self.register_buffer("basis", basis.to(device), persistent=False)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        basis = self.basis.to(v.dtype)
        return (basis @ v) @ basis


class WeightParametrization(nn.Module):
    """Base: a tensor of fixed ``shape`` computed from the parametrisation's own parameters."""

    phase = "free"

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.symmetry: nn.Module | None = None  # the symmetric space of an earlier phase, for the pull
        self.register_buffer("anchor", None)  # the weight at the last switch, for the pull

    def constraint(self) -> nn.Module | None:
        """A parameter-free module whose ``project`` maps onto this space, if the space is constrained."""
        return None

    def weight(self) -> torch.Tensor:
        raise NotImplementedError

    def identity_multiple(self) -> torch.Tensor | None:
        """The scalar ``b`` ``(1,)`` when the weight is ``b I`` by construction, else None: layers that
        compose several such weights may fold them into one multiplication."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T`` (matrices) for ``x`` ``(..., in)``."""
        return F.linear(x, self.weight().to(x.dtype))

    def project(self, W: torch.Tensor) -> torch.Tensor:
        """The closest tensor to ``W`` in this parametrisation's space (Frobenius)."""
        return W

    def load(self, W: torch.Tensor) -> None:
        """Set the parameters so that ``weight()`` is ``project(W)``."""
        raise NotImplementedError

    def remember(self, previous: WeightParametrization, W: torch.Tensor) -> None:
        """Keep the symmetric space of the previous phase (or of the one before) and the weight at the switch,
        for the phase II pull toward symmetry (`symmetry_penalty`)."""
        self.symmetry = previous.constraint() or previous.symmetry
        self.anchor = W.detach().clone(memory_format=torch.contiguous_format)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class FreeWeight(WeightParametrization):
    phase = "free"

    def __init__(self, W: torch.Tensor):
        super().__init__(W.shape)
        self.value = nn.Parameter(W.detach().clone(memory_format=torch.contiguous_format))

    def weight(self) -> torch.Tensor:
        return self.value

    def load(self, W: torch.Tensor) -> None:
        with torch.no_grad():
            self.value.copy_(W)


class ScalarIdentityWeight(WeightParametrization):
    """W = b I (square). One parameter; the forward pass is ``b x``."""

    phase = "scalar_identity"

    def __init__(self, n: int, value: float = 1.0):
        super().__init__((n, n))
        self.scale = nn.Parameter(torch.full((1,), float(value)))

    def weight(self) -> torch.Tensor:
        return self.scale * torch.eye(self.shape[0], dtype=self.scale.dtype, device=self.scale.device)

    def identity_multiple(self) -> torch.Tensor:
        return self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale.to(x.dtype) * x

    def constraint(self) -> nn.Module | None:
        return ScalarIdentitySpace(self.shape[0])

    def project(self, W: torch.Tensor) -> torch.Tensor:
        return self.constraint().project(W)

    def load(self, W: torch.Tensor) -> None:
        with torch.no_grad():
            self.scale.fill_(float(torch.diagonal(W).mean()))


class EquivariantWeight(WeightParametrization):
    """Coefficients on the intertwiners rho_in -> rho_out (`EquivariantStructure`)."""

    phase = "equivariant"

    def __init__(self, rep_in: Representation, rep_out: Representation, structure: str = "auto"):
        space = EquivariantStructure(rep_in, rep_out, structure)
        super().__init__(space.shape)
        self.space = space
        self.coefficients = nn.Parameter(torch.randn(space.num_maps) / math.sqrt(max(1, rep_in.dim)))

    def weight(self) -> torch.Tensor:
        return self.space.expand(self.coefficients)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.space.linear(x, self.coefficients)

    def constraint(self) -> nn.Module | None:
        return self.space  # parameter-free, non-persistent buffers: safe to share with the next phase

    def project(self, W: torch.Tensor) -> torch.Tensor:
        return self.space.project(W.to(self.coefficients.dtype)).to(W.dtype)

    def load(self, W: torch.Tensor) -> None:
        with torch.no_grad():
            self.coefficients.copy_(self.space.coefficients_of(W.to(self.coefficients.dtype)))


class InvariantBias(WeightParametrization):
    """A bias in the invariant vectors of rho_out (the only equivariant biases)."""

    phase = "equivariant"

    def __init__(self, rep_out: Representation):
        super().__init__((rep_out.dim,))
        self.space = InvariantSpace(rep_out)
        self.coefficients = nn.Parameter(torch.zeros(self.space.basis.shape[0]))

    @property
    def basis(self) -> torch.Tensor:
        return self.space.basis

    def weight(self) -> torch.Tensor:
        return self.coefficients @ self.basis.to(self.coefficients.dtype)

    def constraint(self) -> nn.Module | None:
        return self.space

    def project(self, W: torch.Tensor) -> torch.Tensor:
        return self.space.project(W)

    def load(self, W: torch.Tensor) -> None:
        with torch.no_grad():
            self.coefficients.copy_(self.basis.to(W.dtype) @ W)


class SubspaceWeight(WeightParametrization):
    """``w_t + (A theta)[start:stop]``: the weight at the switch plus a slice of a random subspace.

    ``subspace`` is owned (per-layer theta) or shared with other layers (one global theta), in which case
    it is registered on the model once and referenced here.
    """

    phase = "subspace"

    def __init__(self, W: torch.Tensor, subspace: RandomSubspace, start: int, *, owned: bool):
        super().__init__(W.shape)
        self.register_buffer("w_t", W.detach().clone(memory_format=torch.contiguous_format))
        self.start, self.stop = start, start + W.numel()
        if owned:
            self.subspace = subspace
        else:
            object.__setattr__(self, "subspace", subspace)

    def weight(self) -> torch.Tensor:
        return self.w_t + self.subspace.offset()[self.start : self.stop].view(self.shape).to(self.w_t.dtype)

    def load(self, W: torch.Tensor) -> None:
        with torch.no_grad():
            self.w_t.copy_(W - self.subspace.offset()[self.start : self.stop].view(self.shape).to(W.dtype))

    def extra_repr(self) -> str:
        return f"shape={self.shape}, slice=({self.start}, {self.stop})"


class ResidualPathwayWeight(WeightParametrization):
    """Residual pathway prior (Finzi et al., NeurIPS 2021): ``W = W_eq + W_free``.

    The free part is marked with ``weight_decay_multiplier`` so that `phase_param_groups` gives it a much
    larger weight decay than the equivariant part: the data must pay to leave the symmetric solution.
    """

    phase = "residual"

    def __init__(
        self,
        rep_in: Representation,
        rep_out: Representation,
        structure: str = "auto",
        free_weight_decay: float = 100.0,
    ):
        super().__init__((rep_out.dim, rep_in.dim))
        self.equivariant = EquivariantWeight(rep_in, rep_out, structure)
        self.free = nn.Parameter(torch.zeros(self.shape))
        self.free.weight_decay_multiplier = float(free_weight_decay)

    def weight(self) -> torch.Tensor:
        return self.equivariant.weight() + self.free

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.equivariant(x) + F.linear(x, self.free.to(x.dtype))

    def constraint(self) -> nn.Module | None:
        return self.equivariant.constraint()

    def load(self, W: torch.Tensor) -> None:
        self.equivariant.load(W)
        with torch.no_grad():
            self.free.copy_(W - self.equivariant.weight())
