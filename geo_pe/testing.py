"""Equivariance checks for any callable: `equivariance_error` and `assert_equivariant`.

A function f is equivariant when ``f(g . x) = g . f(x)`` for all g: the input action and output action
are any callables ``(g, x) -> g . x``. Invariance is the output action ``lambda g, y: y``.
Group elements come from ``group.sample`` (any `geo_pe.reps.groups.Group`) or a custom sampler.

Example::

    >>> import torch
    >>> from geo_pe.reps import SO3Rep
    >>> from geo_pe.testing import assert_equivariant, action_of
    >>> rep = SO3Rep([(1, 1)])
    >>> x = torch.randn(16, 3, dtype=torch.float64)
    >>> assert_equivariant(lambda v: v * v.norm(dim=-1, keepdim=True), (x,), rep.group,
    ...                    act_in=action_of(rep), act_out=action_of(rep))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from geo_pe.reps.groups import Group, as_generator

__all__ = [
    "DEFAULT_TOLERANCES",
    "ROUNDING_TOLERANCES",
    "action_of",
    "assert_close_to_rounding",
    "assert_equivariant",
    "assert_same_weights",
    "count_host_syncs",
    "equivariance_error",
    "invariant",
    "tolerance",
]

# (atol, rtol) by dtype: float64 checks are tight enough to catch a wrong formula that float32 would hide.
DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (5e-2, 5e-2),
    torch.float16: (1e-2, 1e-2),
}

# (atol, rtol) by dtype for the same arithmetic summed in another order: BLAS picks its kernels by memory
# alignment (tensors loaded from a file are views at the file's offsets) and by thread count. A few units
# in the last place, far below what a wrong formula or a lost weight would give.
ROUNDING_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-13, 1e-12),
    torch.float32: (1e-6, 1e-5),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float16: (1e-3, 1e-3),
}

Action = Callable[[Any, Any], Any]


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """Default ``(atol, rtol)`` for results of ``dtype``."""
    return DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES[torch.float32])


def assert_close_to_rounding(actual: torch.Tensor, expected: torch.Tensor, msg: str | None = None) -> None:
    """``actual`` equals ``expected`` up to summation order (``ROUNDING_TOLERANCES`` of its dtype).

    For one computation reached along two paths that may sum in another order: a model and its reloaded
    copy, a chunked and a whole pass. Bit-for-bit equality is only promised along the same code path on
    storage of the same alignment; compare weights with ``assert_same_weights`` instead.
    """
    atol, rtol = ROUNDING_TOLERANCES.get(actual.dtype, ROUNDING_TOLERANCES[torch.float32])
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=msg)


def assert_same_weights(model: torch.nn.Module, other: torch.nn.Module) -> None:
    """Both modules hold the same parameters and buffers (saved or rebuilt) bit for bit, under equal names."""
    for kind in ("named_parameters", "named_buffers"):
        mine, theirs = dict(getattr(model, kind)()), dict(getattr(other, kind)())
        assert mine.keys() == theirs.keys(), f"{kind}: {sorted(mine.keys() ^ theirs.keys())} differ"
        for name, value in mine.items():
            assert theirs[name].dtype == value.dtype and torch.equal(theirs[name], value), f"{name} differs"


def invariant(g: Any, y: Any) -> Any:
    """The trivial action (use as ``act_out`` to check invariance)."""
    return y


def action_of(rep, *, dim: int = -1) -> Action:
    """``(g, x) -> rho(g) x`` along dimension ``dim`` of x, for a `Representation` ``rep``.

    ``g``'s batch shape must broadcast against x's shape without that dimension.
    """

    def act(g, x):
        moved = x.movedim(dim, -1)
        return rep.act(g, moved).movedim(-1, dim)

    return act


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _flatten(y: Any) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, dict):
        return [t for v in y.values() for t in _flatten(v)]
    if isinstance(y, (tuple, list)):
        return [t for v in y for t in _flatten(v)]
    raise TypeError(f"outputs: expected tensors (or tuples/dicts of them), got {type(y).__name__}")


def _transformed_pairs(fn, inputs, group, act_in, act_out, num_samples, generator):
    """Yield ``(sample, k, f(g . x)_k, (g . f(x))_k)`` for random g and every output tensor k."""
    gen = as_generator(generator)
    inputs = _as_tuple(inputs)
    single = len(inputs) == 1
    # Group elements in the inputs' precision: float64 inputs get float64 rotations, angles, shifts.
    dtype = next((t.dtype for t in _flatten(inputs) if t.is_floating_point()), None)
    for sample in range(num_samples):
        g = group.sample(generator=gen, dtype=dtype) if isinstance(group, Group) else group(gen)
        moved = (act_in(g, inputs[0]),) if single else _as_tuple(act_in(g, inputs))
        expected = _flatten(act_out(g, fn(*inputs)))
        actual = _flatten(fn(*moved))
        if len(expected) != len(actual):
            raise AssertionError("fn: returned a different number of outputs for transformed inputs")
        for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
            if a.shape != e.shape:
                raise AssertionError(
                    f"output {k}: shape {tuple(a.shape)} after the action, {tuple(e.shape)} before"
                )
            yield sample, k, a, e


def equivariance_error(
    fn: Callable,
    inputs: Any,
    group: Group | Callable[[torch.Generator | None], Any],
    *,
    act_in: Action,
    act_out: Action = invariant,
    num_samples: int = 8,
    generator: torch.Generator | int | None = 0,
    relative: bool = True,
) -> float:
    """Largest error ``|f(g . x) - g . f(x)|`` over ``num_samples`` random g.

    Args:
        fn: called as ``fn(*inputs)``.
        inputs: a tensor or a tuple of inputs.
        group: a `Group` (elements from ``group.sample()`` in the dtype of the first floating-point
            input) or a function ``generator -> g``.
        act_in: ``(g, x) -> g . x`` for a single tensor input, or ``(g, inputs_tuple) -> tuple``.
        act_out: ``(g, y) -> g . y``; defaults to invariance.
        relative: divide by the norm of ``g . f(x)`` (floored at the float eps of its dtype).

    Returns:
        The worst error as a Python float (max over samples and output tensors; norms over all entries).
    """
    worst = 0.0
    for _, _, a, e in _transformed_pairs(fn, inputs, group, act_in, act_out, num_samples, generator):
        err = torch.linalg.vector_norm((a - e).double()).item()
        if relative:
            floor = torch.finfo(e.dtype).eps if e.is_floating_point() else 1e-12
            err /= max(torch.linalg.vector_norm(e.double()).item(), floor)
        worst = max(worst, err)
    return worst


def assert_equivariant(
    fn: Callable,
    inputs: Any,
    group: Group | Callable[[torch.Generator | None], Any],
    *,
    act_in: Action,
    act_out: Action = invariant,
    num_samples: int = 8,
    generator: torch.Generator | int | None = 0,
    atol: float | None = None,
    rtol: float | None = None,
) -> None:
    """Assert ``fn(g . x) == g . fn(x)`` elementwise within ``atol + rtol |g . fn(x)|``.

    Arguments as in `equivariance_error`. Tolerances default to `DEFAULT_TOLERANCES` for the output's
    dtype. Raises ``AssertionError`` naming the sample, the output and the largest deviation.
    """
    for sample, k, a, e in _transformed_pairs(fn, inputs, group, act_in, act_out, num_samples, generator):
        default_atol, default_rtol = tolerance(e.dtype)
        a_tol = default_atol if atol is None else atol
        r_tol = default_rtol if rtol is None else rtol
        diff = (a - e).abs()
        if not bool((diff <= a_tol + r_tol * e.abs()).all()):
            raise AssertionError(
                f"not equivariant: sample {sample}, output {k}: "
                f"max |f(g.x) - g.f(x)| = {diff.max().item():.3e} "
                f"(atol={a_tol:g}, rtol={r_tol:g}, dtype={e.dtype})"
            )


# Tensor calls that wait for the device: a value read on the host, or an output whose size depends on data.
HOST_SYNCS = frozenset(
    [
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "item",
        "tolist",
        "nonzero",
        "argwhere",
        "masked_select",
        "unique",
    ]
)


class _SyncCounter(TorchFunctionMode):
    def __init__(self, found: list[str]):
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_SYNCS:
            self.found.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Record the tensor calls in the block that would wait for a GPU (``bool(t)``, ``.item()``,
    ``.tolist()``, ``nonzero``, ...), on any device: a CPU-side stand-in for
    ``torch.cuda.set_sync_debug_mode``. Yields the list of their names, filled as they happen."""
    found: list[str] = []
    with _SyncCounter(found):
        yield found
