"""Input validation shared by the library: clear `ValueError`s that name the argument.

Value checks (finite, non-zero) read tensor data, which costs a device sync and cannot be traced by
`torch.compile`. They therefore run only in eager mode and can be switched off with
`set_input_validation(False)` (or the `input_validation` context manager) once a pipeline is known to be
sound. The switch is context-local, like torch's grad mode: it holds for the current thread (or asyncio
task) and what it calls, never for another thread. Shape checks always run.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import torch

_VALIDATE: contextvars.ContextVar[bool] = contextvars.ContextVar("geo_pe_input_validation", default=True)


def set_input_validation(enabled: bool) -> None:
    """Turn the value checks (finite, non-zero norms) on or off in the current context."""
    _VALIDATE.set(bool(enabled))


@contextlib.contextmanager
def input_validation(enabled: bool) -> Iterator[None]:
    """Value checks on or off inside the block (context manager form of `set_input_validation`)."""
    token = _VALIDATE.set(bool(enabled))
    try:
        yield
    finally:
        _VALIDATE.reset(token)


def value_checks_enabled() -> bool:
    """True when data-dependent checks may run (enabled, eager mode, not tracing)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return _VALIDATE.get()


def check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def check_trailing_shape(x: torch.Tensor, trailing: Sequence[int], name: str, what: str) -> None:
    """Raise unless `x.shape` ends with `trailing`."""
    trailing = tuple(trailing)
    if x.dim() < len(trailing) or tuple(x.shape[x.dim() - len(trailing) :]) != trailing:
        dims = ", ".join(str(d) for d in trailing)
        raise ValueError(f"{name}: expected {what} of shape (..., {dims}), got shape {tuple(x.shape)}")


def check_floating(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")


def check_finite(x: torch.Tensor, name: str, what: str) -> None:
    if value_checks_enabled():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            raise ValueError(f"{name}: expected finite {what}, got {int(bad.sum())} NaN or infinite entries")


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype in which angles and rotation matrices are computed: float64 stays, all else is float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Disable autocast for the block, so matmuls on angles and Wigner matrices stay in float32/float64."""
    device_type = x.device.type if x.device.type in ("cpu", "cuda", "xpu", "mps") else "cpu"
    return torch.autocast(device_type=device_type, enabled=False)
