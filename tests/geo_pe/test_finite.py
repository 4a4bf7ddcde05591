"""Finite groups: axioms, orders, character tables against independent formulas, decompositions."""

import math

import pytest
import torch

from geo_pe.reps import (
    PermutationRep,
    RegularRep,
    TensorPower,
    cyclic,
    dihedral,
    direct_product,
    outer_product,
    symmetric,
)

GROUPS = {
    "C1": (lambda: cyclic(1), 1),
    "C6": (lambda: cyclic(6), 6),
    "C7": (lambda: cyclic(7), 7),
    "D3": (lambda: dihedral(3), 6),
    "D5": (lambda: dihedral(5), 10),
    "D6": (lambda: dihedral(6), 12),
    "S1": (lambda: symmetric(1), 1),
    "S3": (lambda: symmetric(3), 6),
    "S5": (lambda: symmetric(5), 120),
    "C3xS3": (lambda: direct_product(cyclic(3), symmetric(3)), 18),
    "S2xS3xC4": (lambda: direct_product(symmetric(2), symmetric(3), cyclic(4)), 48),
}


@pytest.fixture(params=list(GROUPS), ids=list(GROUPS))
def group_and_order(request):
    make, order = GROUPS[request.param]
    return make(), order


def test_order_matches_enumeration_and_formula(group_and_order):
    G, order = group_and_order
    elements = G.elements()
    assert G.order == order == len(elements) == len({tuple(e) for e in elements.tolist()})


def test_group_axioms(group_and_order):
    G, _ = group_and_order
    a, b, c = (G.sample((30,), generator=s) for s in (0, 1, 2))
    e = G.identity((30,))
    assert torch.equal(G.compose(G.compose(a, b), c), G.compose(a, G.compose(b, c)))
    assert torch.equal(G.compose(a, e), a) and torch.equal(G.compose(e, a), a)
    assert torch.equal(G.compose(a, G.inverse(a)), e)
    members = {tuple(x) for x in G.elements().tolist()}
    assert all(tuple(x) in members for x in G.compose(a, b).tolist())  # closure


def test_permutation_action_moves_entries(group_and_order):
    G, _ = group_and_order
    rep = PermutationRep(G)
    g = G.sample((10,), generator=3)
    x = torch.randn(10, G.degree)
    moved = rep.act(g, x)
    for k in range(10):
        for i in range(G.degree):
            assert moved[k, g[k, i]] == x[k, i]  # (g . x)[g(i)] = x[i]
    torch.testing.assert_close(moved, (rep.matrices(g) @ x[..., None])[..., 0])


def test_character_table_orthogonality(group_and_order):
    """Rows: sum_c |c| chi_i(c) conj chi_j(c) = |G| delta_ij.

    Columns: sum_i chi_i(c) conj chi_i(c') = |centralizer of c| delta_cc'.
    """
    G, order = group_and_order
    table = G.character_table()
    _, sizes = G.conjugacy_classes()
    size = torch.tensor(sizes, dtype=torch.complex128)
    assert table.shape[0] == table.shape[1] == len(sizes)
    assert sum(sizes) == order
    rows = (table * size) @ table.conj().T
    torch.testing.assert_close(rows, order * torch.eye(len(sizes), dtype=torch.complex128), atol=1e-9, rtol=0)
    cols = table.T @ table.conj()
    torch.testing.assert_close(cols, torch.diag(order / size), atol=1e-9, rtol=0)


def test_class_index_agrees_with_representatives(group_and_order):
    G, _ = group_and_order
    reps, _ = G.conjugacy_classes()
    assert torch.equal(G.class_index(reps), torch.arange(len(reps)))
    g, h = G.sample((20,), generator=4), G.sample((20,), generator=5)
    conjugated = G.compose(G.compose(h, g), G.inverse(h))
    assert torch.equal(G.class_index(conjugated), G.class_index(g))


def test_regular_representation_contains_every_irrep_dim_times(group_and_order):
    G, order = group_and_order
    if order > 50:
        pytest.skip("regular representation too large for the quick suite")
    irreps = RegularRep(G).irreps
    assert sum(m * irrep.dim for m, irrep in irreps) == order
    assert len(irreps) == len(G.real_irreps)
    for m, irrep in irreps:
        complex_dim = irrep.dim if irrep.kind == "real" else irrep.dim // 2
        assert m == complex_dim


def hook_length_dim(partition):
    n = sum(partition)
    conj = [sum(1 for p in partition if p > j) for j in range(partition[0])]
    hooks = [partition[i] - j + conj[j] - i - 1 for i in range(len(partition)) for j in range(partition[i])]
    return math.factorial(n) // math.prod(hooks)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
def test_symmetric_group_dims_match_the_hook_length_formula(n):
    G = symmetric(n)
    dims = G.irreducible_characters(G.identity()).real.round().long().tolist()
    assert dims == [hook_length_dim(p) for p in G.irrep_labels]
    assert sum(d * d for d in dims) == math.factorial(n)


def test_known_character_tables():
    S3 = symmetric(3)  # classes by cycle type (3,), (2,1), (1,1,1)
    expected = torch.tensor([[1, 1, 1], [-1, 0, 2], [1, -1, 1]], dtype=torch.complex128)
    torch.testing.assert_close(S3.character_table(), expected)
    S4 = symmetric(4)  # (4,), (3,1), (2,2), (2,1,1), (1,1,1,1); irreps (4), (3,1), (2,2), (2,1,1), (1^4)
    expected = torch.tensor(
        [[1, 1, 1, 1, 1], [-1, 0, -1, 1, 3], [0, -1, 2, 0, 2], [1, 0, -1, -1, 3], [-1, 1, 1, -1, 1]],
        dtype=torch.complex128,
    )
    torch.testing.assert_close(S4.character_table(), expected)


def test_frobenius_schur_types():
    assert all(irrep.kind == "real" for irrep, _ in symmetric(5).real_irreps)
    assert all(irrep.kind == "real" for irrep, _ in dihedral(7).real_irreps)
    kinds = sorted(irrep.kind for irrep, _ in cyclic(6).real_irreps)  # trivial, sign, 2 rotation pairs
    assert kinds == ["complex", "complex", "real", "real"]
    assert len(cyclic(5).real_irreps) == 3  # trivial + pairs {1,4}, {2,3}


@pytest.mark.parametrize("n", [4, 5, 6])
def test_known_decompositions(n):
    S = symmetric(n)
    natural = {irrep.label: m for m, irrep in PermutationRep(S).irreps}
    assert natural == {(n,): 1, (n - 1, 1): 1}
    second = {irrep.label: m for m, irrep in TensorPower(PermutationRep(S), 2).irreps}
    assert second == {(n,): 2, (n - 1, 1): 3, (n - 2, 2): 1, (n - 2, 1, 1): 1}
    D = dihedral(n)  # vertices of the n-gon: A1 + E_1 + ... (+ B1 for even n)
    labels = {irrep.label: m for m, irrep in PermutationRep(D).irreps}
    expected = {"A1": 1, **{f"E{k}": 1 for k in range(1, (n + 1) // 2)}}
    if n % 2 == 0:
        expected["B1"] = 1
    assert labels == expected


def test_outer_product_of_sets_acts_on_both_axes():
    rep = outer_product(PermutationRep(symmetric(3)), PermutationRep(symmetric(4)))
    G = rep.group
    g = G.sample((5,), generator=6)
    sigma, tau = G.split(g)
    X = torch.randn(5, 3, 4)
    expected = torch.stack(
        [
            PermutationRep(symmetric(3)).matrices(sigma[k])
            @ X[k]
            @ PermutationRep(symmetric(4)).matrices(tau[k]).T
            for k in range(5)
        ]
    )
    torch.testing.assert_close(rep.act(g, X.flatten(-2)), expected.flatten(-2))
    labels = {irrep.label: m for m, irrep in rep.irreps}
    assert labels == {((3,), (4,)): 1, ((3,), (3, 1)): 1, ((2, 1), (4,)): 1, ((2, 1), (3, 1)): 1}


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n: expected an integer >= 3, got 2"):
        dihedral(2)
    with pytest.raises(ValueError, match="n: expected an integer >= 1, got 0"):
        symmetric(0)
    G = symmetric(4)
    with pytest.raises(ValueError, match=r"g: expected permutations of 0..3"):
        G.validate(torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"g: expected permutations of 4 points of shape \(\.\.\., 4\)"):
        G.validate(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="g: expected integer permutations"):
        G.validate(torch.tensor([0.0, 1, 2, 3]))
    with pytest.raises(ValueError, match="generators: every row must be a permutation"):
        from geo_pe.reps import PermutationGroup

        PermutationGroup([[0, 0, 1]], name="bad")
