"""The equivariance helper must pass equivariant functions and catch non-equivariant ones."""

import pytest
import torch

from geo_pe.reps import SO2Rep, SO3Rep, TranslationRep
from geo_pe.testing import action_of, assert_equivariant, equivariance_error, invariant, tolerance


def test_equivariant_function_passes(dtype):
    rep = SO3Rep([(1, 1), (1, 2)])
    x = torch.randn(16, rep.dim, dtype=dtype)
    act = action_of(rep)

    def fn(v):  # rescale each irrep block by a function of its (invariant) norm
        a, b = v[..., :3], v[..., 3:]
        return torch.cat((a * a.norm(dim=-1, keepdim=True), b * torch.tanh(b.norm(dim=-1, keepdim=True))), -1)

    assert_equivariant(fn, x, rep.group, act_in=act, act_out=act)
    assert equivariance_error(fn, x, rep.group, act_in=act, act_out=act) < tolerance(dtype)[1]


def test_invariant_function_passes_and_non_invariant_fails(dtype):
    rep = SO2Rep([(1, 1), (1, 3)])
    x = torch.randn(8, rep.dim, dtype=dtype)
    act = action_of(rep)
    assert_equivariant(lambda v: v.norm(dim=-1), x, rep.group, act_in=act, act_out=invariant)
    with pytest.raises(AssertionError, match="not equivariant: sample 0, output 0"):
        assert_equivariant(lambda v: v[..., 0], x, rep.group, act_in=act)
    assert equivariance_error(lambda v: v[..., 0], x, rep.group, act_in=act) > 0.1


def test_nearly_equivariant_function_is_caught_in_float64_only():
    """A 1e-7 symmetry breaking passes the float32 tolerance but not the float64 one."""
    rep = SO3Rep([(1, 1)])
    act = action_of(rep)
    breaking = torch.tensor([1e-7, 0.0, 0.0])

    def fn(v):
        return v + breaking.to(v.dtype) * v.norm(dim=-1, keepdim=True)

    x32 = torch.randn(8, 3)
    assert_equivariant(fn, x32, rep.group, act_in=act, act_out=act)
    with pytest.raises(AssertionError, match=r"dtype=torch\.float64"):
        assert_equivariant(fn, x32.double(), rep.group, act_in=act, act_out=act)


def test_several_inputs_and_outputs():
    rep = TranslationRep(1, 4)
    act = action_of(rep)
    x, y = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)

    def fn(a, b):  # rotations preserve inner products and sums of equivariant vectors
        return {"dot": (a * b).sum(-1), "sum": a + b}

    def act_in(g, inputs):
        return tuple(act(g, t) for t in inputs)

    def act_out(g, out):
        return {"dot": out["dot"], "sum": act(g, out["sum"])}

    assert_equivariant(fn, (x, y), rep.group, act_in=act_in, act_out=act_out)


def test_custom_sampler_and_dim():
    rep = SO2Rep([(1, 1)])
    x = torch.randn(2, 2, 7, dtype=torch.float64)  # the representation acts on dim 1
    act = action_of(rep, dim=1)

    def sampler(gen):
        return torch.rand((), generator=gen, dtype=torch.float64) * 6.0

    assert_equivariant(lambda v: v * 2.0, x, sampler, act_in=act, act_out=act)
