"""The symmetrizer is symmetric, fixing and idempotent, and its trace counts the equivariant maps."""

import pytest
import torch

from geo_pe.equivariance import Symmetrizer
from geo_pe.reps import (
    DirectSum,
    PermutationRep,
    Representation,
    TensorPower,
    TrivialRep,
    cyclic,
    dihedral,
    direct_product,
    outer_product,
    symmetric,
)


class Rotated(Representation):
    """Q rho(g) Q^T for a fixed orthogonal Q: an equivalent representation that is no permutation one."""

    def __init__(self, rep, seed=0):
        super().__init__()
        self.inner = rep
        gen = torch.Generator().manual_seed(seed)
        self.Q = torch.linalg.qr(torch.randn(rep.dim, rep.dim, generator=gen, dtype=torch.float64)).Q

    group = property(lambda self: self.inner.group)
    layout = property(lambda self: ((1, self.inner.dim),))
    irreps = property(lambda self: self.inner.irreps)

    def blocks(self, g):
        return [self.Q @ self.inner.matrices(g).double() @ self.Q.T]


CASES = {
    "C5 perm": lambda: (PermutationRep(cyclic(5)), PermutationRep(cyclic(5))),
    "D6 perm": lambda: (PermutationRep(dihedral(6)), PermutationRep(dihedral(6))),
    "S4 order 2 -> 1": lambda: (PermutationRep(symmetric(4)), TensorPower(PermutationRep(symmetric(4)), 2)),
    "S3 x S2 sets": lambda: (
        outer_product(PermutationRep(symmetric(3)), PermutationRep(symmetric(2))),
        outer_product(PermutationRep(symmetric(3)), PermutationRep(symmetric(2))),
    ),
    "S3 perm+trivial": lambda: (
        DirectSum([PermutationRep(symmetric(3)), TrivialRep(symmetric(3), 2)]),
        PermutationRep(symmetric(3)),
    ),
    "D5 rotated": lambda: (Rotated(PermutationRep(dihedral(5))), PermutationRep(dihedral(5))),
    "C4 x S3 rotated": lambda: (
        Rotated(PermutationRep(direct_product(cyclic(4), symmetric(3))), seed=1),
        Rotated(PermutationRep(direct_product(cyclic(4), symmetric(3))), seed=2),
    ),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def symmetrizer(request):
    rep_out, rep_in = CASES[request.param]()
    return Symmetrizer(rep_out, rep_in)


def test_symmetric_property(symmetrizer):
    """rho_out(g) S(W) = S(W) rho_in(g) for every element g."""
    S = symmetrizer
    W = S(torch.randn(5, *S.shape, dtype=torch.float64))
    elements = S.group.elements()
    left = S.rep_out.matrices(elements).double()[:, None] @ W
    right = W @ S.rep_in.matrices(elements).double()[:, None]
    torch.testing.assert_close(left, right, atol=1e-12, rtol=0)


def test_fixing_and_idempotence(symmetrizer):
    S = symmetrizer
    basis = S.basis()
    torch.testing.assert_close(S(basis), basis, atol=1e-12, rtol=0)  # fixing: S(W) = W on equivariant W
    W = torch.randn(3, *S.shape, dtype=torch.float64)
    torch.testing.assert_close(S(S(W)), S(W), atol=1e-12, rtol=0)  # idempotence
    gram = basis.flatten(1) @ basis.flatten(1).T
    torch.testing.assert_close(gram, torch.eye(basis.shape[0], dtype=torch.float64), atol=1e-12, rtol=0)


def test_trace_is_the_dimension(symmetrizer):
    """trace S = 1/|G| sum chi_out chi_in = dim of the fixed space (the number of orbits for permutations)."""
    S = symmetrizer
    m, n = S.shape
    projector = S(torch.eye(m * n, dtype=torch.float64).reshape(m * n, m, n)).reshape(m * n, m * n)
    assert round(float(projector.trace())) == S.dim == S.basis().shape[0] == round(S.trace())


def burnside_orbits(rep_out, rep_in):
    """Orbits on index pairs by Burnside's lemma: average number of fixed pairs."""
    elements = rep_out.group.elements()
    return round(float((rep_out.character(elements) * rep_in.character(elements)).mean()))


@pytest.mark.parametrize("case", ["C5 perm", "D6 perm", "S4 order 2 -> 1", "S3 x S2 sets", "S3 perm+trivial"])
def test_orbits_match_group_average_and_burnside(case):
    rep_out, rep_in = CASES[case]()
    by_orbits = Symmetrizer(rep_out, rep_in)
    assert by_orbits.by_orbits
    by_average = Symmetrizer(Rotated(rep_out, seed=3), Rotated(rep_in, seed=4))
    assert not by_average.by_orbits
    W = torch.randn(*by_orbits.shape, dtype=torch.float64)
    Qo, Qi = by_average.rep_out.Q, by_average.rep_in.Q
    torch.testing.assert_close(by_average(Qo @ W @ Qi.T), Qo @ by_orbits(W) @ Qi.T, atol=1e-12, rtol=0)
    assert by_orbits.dim == by_average.dim == burnside_orbits(rep_out, rep_in)


def test_dihedral_vertices_have_floor_n_over_2_plus_1_maps():
    for n in range(3, 10):
        assert Symmetrizer(PermutationRep(dihedral(n)), PermutationRep(dihedral(n))).dim == n // 2 + 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="reps: the symmetrizer averages over one finite group"):
        Symmetrizer(PermutationRep(symmetric(3)), PermutationRep(cyclic(3)))
    S = Symmetrizer(PermutationRep(symmetric(3)), PermutationRep(symmetric(3)))
    with pytest.raises(ValueError, match=r"W: expected shape \(\.\.\., 3, 3\), got \(3, 4\)"):
        S(torch.zeros(3, 4))
