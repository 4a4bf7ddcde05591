"""Intertwiner bases: dimension formulas of the literature, solvers agreeing with closed forms."""

import math
import warnings

import pytest
import torch

from geo_pe.equivariance import (
    EquivarianceWarning,
    intertwiner_basis,
    invariant_vectors,
    orbit_pattern,
    schur_basis,
    span_distance,
)
from geo_pe.reps import (
    IrrepsSpec,
    PermutationRep,
    SO2Rep,
    SO3Rep,
    TensorPower,
    TranslationRep,
    TrivialRep,
    cyclic,
    dihedral,
    outer_product,
    symmetric,
)


def stirling2(n, k):
    """Stirling numbers of the second kind, S(n, k), by their recurrence."""
    if n == k:
        return 1
    if k == 0 or k > n:
        return 0
    return k * stirling2(n - 1, k) + stirling2(n - 1, k - 1)


def set_tensor(n, order):
    base = PermutationRep(symmetric(n))
    return TrivialRep(symmetric(n)) if order == 0 else (base if order == 1 else TensorPower(base, order))


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("k,l", [(1, 1), (1, 2), (2, 1), (2, 2), (0, 2), (2, 0), (0, 1)])
def test_sn_tensor_maps_count_stirling_numbers(n, k, l):
    """Maron et al.: dim Hom(order k, order l) = sum_{j <= min(n, k+l)} S(k + l, j)."""
    expected = sum(stirling2(k + l, j) for j in range(min(n, k + l) + 1))
    rep_in, rep_out = set_tensor(n, k), set_tensor(n, l)
    methods = ["orbits", "kronecker"] + (["dense"] if rep_in.dim * rep_out.dim <= 700 else [])
    bases = {m: intertwiner_basis(rep_out, rep_in, method=m) for m in methods}
    for method, basis in bases.items():
        assert basis.shape[0] == expected, method
        assert span_distance(basis, bases["orbits"]) < 1e-8, method


def test_named_dimensions():
    assert [
        intertwiner_basis(set_tensor(5, l), set_tensor(5, k)).shape[0]
        for k, l in [(1, 1), (1, 2), (2, 1), (2, 2)]
    ] == [
        2,
        5,
        5,
        15,
    ]
    assert intertwiner_basis(set_tensor(3, 2), set_tensor(3, 2)).shape[0] == 14
    assert intertwiner_basis(set_tensor(2, 2), set_tensor(2, 2)).shape[0] == 8


@pytest.mark.parametrize("sizes", [(3,), (3, 4), (2, 3, 2)])
def test_products_of_sets_have_2_to_the_m_maps(sizes):
    reps = [PermutationRep(symmetric(s)) for s in sizes]
    rep = reps[0] if len(reps) == 1 else outer_product(*reps)
    for method in ("orbits", "kronecker"):
        assert intertwiner_basis(rep, rep, method=method).shape[0] == 2 ** len(sizes)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_circulant_and_dihedral_counts(n):
    C = PermutationRep(cyclic(n))
    D = PermutationRep(dihedral(n))
    for method in ("orbits", "kronecker", "dense"):
        assert intertwiner_basis(C, C, method=method).shape[0] == n
        assert intertwiner_basis(D, D, method=method).shape[0] == n // 2 + 1


@pytest.mark.parametrize("k,expected", [(1, 0), (2, 1), (3, 1), (4, 3), (5, 6), (6, 15)])
def test_so3_invariants_of_vector_tensor_powers(k, expected):
    """Invariants of V^(x k) for the SO(3) vector representation: 0, 1, 1, 3, 6, 15 (Riordan numbers)."""
    assert invariant_vectors(TensorPower(SO3Rep([(1, 1)]), k)).shape[0] == expected


LIE_CASES = {
    "so3": ("so3:1x0+2x1+1x2", "so3:2x1+1x2+1x3"),
    "so2": ("so2:2x0+1x1+2x3", "so2:1x0+2x1+1x3"),
    "t1": ("t1:4", "t1:4"),
    "t2 mixed": ("t2:3(layout=mixed)", "t2:3(layout=mixed)"),
    "t1+so3": ("t1:2+so3:1x1+1x0", "so3:2x1+1x2+t1:2"),
    "t1*so3": ("t1:2*so3:1x1", "t1:2*so3:2x1+1x0"),
    "so2*so3": ("so2:(1x0+1x2)*so3:1x1", "so2:1x2*so3:(1x1+1x2)"),
    "s2 (acting so3)": ("s2@dir:1x1+1x2", "so3@dir:1x1+1x2"),
}


@pytest.mark.parametrize("case", list(LIE_CASES))
def test_solvers_agree_with_schur_closed_forms(case):
    spec_in, spec_out = LIE_CASES[case]
    rep_in, rep_out = IrrepsSpec.parse(spec_in).build(), IrrepsSpec.parse(spec_out).build()
    closed = schur_basis(rep_out, rep_in)
    assert closed.shape[0] > 0
    for method in ("dense", "kronecker"):
        solved = intertwiner_basis(rep_out, rep_in, method=method)
        assert solved.shape[0] == closed.shape[0], method
        assert span_distance(solved, closed) < 1e-8, method


@pytest.mark.parametrize("case", list(LIE_CASES))
def test_every_basis_element_commutes_with_random_group_elements(case):
    """Independent of the generators: rho_out(g) W = W rho_in(g) at random finite g (float64)."""
    spec_in, spec_out = LIE_CASES[case]
    rep_in, rep_out = IrrepsSpec.parse(spec_in).build(), IrrepsSpec.parse(spec_out).build()
    basis = schur_basis(rep_out, rep_in)
    acting_out, acting_in = rep_out.acting_rep, rep_in.acting_rep
    group = (
        acting_out.group
        if len(acting_out.attribute_groups) >= len(acting_in.attribute_groups)
        else acting_in.group
    )
    g = group.sample((6,), generator=0, dtype=torch.float64)
    Mo, Mi = acting_out.matrices(g).double(), acting_in.matrices(g).double()
    torch.testing.assert_close(Mo[:, None] @ basis, basis @ Mi[:, None], atol=1e-10, rtol=0)


def test_closed_form_dimensions():
    """Schur over R: real irreps give m_out m_in maps, complex-type ones 2 m_out m_in."""
    so3 = schur_basis(SO3Rep([(2, 1), (3, 2)]), SO3Rep([(1, 1), (2, 2), (1, 0)]))
    assert so3.shape[0] == 2 * 1 + 3 * 2
    so2 = schur_basis(SO2Rep([(2, 0), (3, 4)]), SO2Rep([(1, 0), (2, 4), (1, 5)]))
    assert so2.shape[0] == 2 * 1 + 2 * 3 * 2
    t = TranslationRep(1, 5)
    assert schur_basis(t, t).shape[0] == 2 * 5


def test_distinct_irreps_give_zero_maps_and_a_warning():
    with pytest.warns(EquivarianceWarning, match="no equivariant linear maps"):
        basis = intertwiner_basis(SO3Rep([(1, 2)]), SO3Rep([(1, 1)]))
    assert basis.shape == (0, 5, 3)
    with pytest.warns(EquivarianceWarning):
        intertwiner_basis(
            TranslationRep(1, 2, frequencies=[0.5, 0.25]), TranslationRep(1, 2)
        )  # other frequencies
    with pytest.warns(EquivarianceWarning):  # the same irreps, but of two different token attributes
        intertwiner_basis(SO3Rep([(1, 1)], attribute="a"), SO3Rep([(1, 1)], attribute="b"))
    assert schur_basis(SO3Rep([(1, 1)], attribute="a"), SO3Rep([(1, 1)], attribute="b")).shape[0] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        intertwiner_basis(SO3Rep([(1, 2)]), SO3Rep([(1, 2)]))


def test_invariant_vectors():
    assert invariant_vectors(SO2Rep([(2, 0), (1, 3)])).shape[0] == 2
    assert invariant_vectors(SO3Rep([(1, 1), (3, 0)])).shape[0] == 3
    assert invariant_vectors(PermutationRep(symmetric(4))).shape[0] == 1
    v = invariant_vectors(TensorPower(PermutationRep(symmetric(3)), 2))  # identity and all-ones matrices
    assert v.shape[0] == 2


def test_orbit_pattern_scales_to_large_sets():
    """S_300 on 300 x 300 matrices (90,000 weights): 2 orbits, found from generators alone."""
    pattern = orbit_pattern(PermutationRep(symmetric(300)), PermutationRep(symmetric(300)))
    assert int(pattern.max()) + 1 == 2
    assert torch.equal(pattern.diagonal(), torch.zeros(300, dtype=torch.long))


def test_bad_inputs():
    with pytest.raises(ValueError, match="method: expected one of"):
        intertwiner_basis(SO3Rep([(1, 1)]), SO3Rep([(1, 1)]), method="svd")
    with pytest.raises(ValueError, match="reps: expected representations of one group"):
        intertwiner_basis(PermutationRep(symmetric(3)), PermutationRep(cyclic(3)), method="dense")
    with pytest.raises(ValueError, match="schur_basis needs blocks that are irreps"):
        schur_basis(PermutationRep(symmetric(3)), PermutationRep(symmetric(3)))
    assert math.isclose(span_distance(torch.zeros(1, 2, 2), torch.zeros(2, 2, 2)), 1.0)
