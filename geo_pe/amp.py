"""CUDA's autocast policy on any device: mixed-precision bugs that only a GPU would show, caught on a CPU.

Under ``torch.autocast("cuda")`` matmul-like ops run in bf16/fp16 while reductions and transcendental ops
(``pow``, ``sum``, ``norm``, ``exp``, ``softmax``, ...) run in float32, and a few ops promote to the widest
input type (PyTorch's "Automatic Mixed Precision" docs, "CUDA Ops that can autocast"). CPU autocast has
other lists: there ``pow`` and ``sum`` keep bf16. So a model that combines the two kinds of outputs
(``index_add`` of a float32 ``pow`` into a bf16 buffer) passes on a CPU and crashes on a GPU.

`cuda_autocast_policy` enables CPU autocast (so regions that switch autocast off behave as they would on a
GPU) and adds, through a `torch.overrides.TorchFunctionMode`, CUDA's float32 and promotion lists on top
of it, so the CPU runs an op in the dtype the GPU would::

    >>> import torch
    >>> from geo_pe.amp import cuda_autocast_policy
    >>> x = torch.randn(4, 8)
    >>> with cuda_autocast_policy(torch.bfloat16):
    ...     y = torch.nn.functional.linear(x, torch.randn(8, 8))
    ...     (y.dtype, y.pow(2).dtype, y.sum().dtype)
    (torch.bfloat16, torch.float32, torch.float32)

It imitates the casts, not the kernels: numerics (accumulation order, fused attention) still differ.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

__all__ = [
    "CUDA_FLOAT32_OPS",
    "CUDA_LOWER_PRECISION_OPS",
    "CUDA_PROMOTE_OPS",
    "cuda_autocast_lists",
    "cuda_autocast_policy",
]

# "CUDA Ops that can autocast to float16" (and bf16); einsum is listed because on CUDA it lowers to bmm,
# which autocast casts, while a function mode sees only the einsum call.
CUDA_LOWER_PRECISION_OPS = frozenset(
    [
        "__matmul__",
        "__rmatmul__",
        "addbmm",
        "addmm",
        "addmv",
        "addr",
        "baddbmm",
        "bmm",
        "chain_matmul",
        "multi_dot",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "linear",
        "matmul",
        "mm",
        "mv",
        "prelu",
        "einsum",
        "scaled_dot_product_attention",
    ]
)
# "CUDA Ops that can autocast to float32".
CUDA_FLOAT32_OPS = frozenset(
    [
        "__pow__",
        "__rdiv__",
        "__rpow__",
        "__rtruediv__",
        "acos",
        "asin",
        "binary_cross_entropy_with_logits",
        "cosh",
        "cosine_embedding_loss",
        "cdist",
        "cosine_similarity",
        "cross_entropy",
        "cumprod",
        "cumsum",
        "dist",
        "erfinv",
        "exp",
        "expm1",
        "group_norm",
        "hinge_embedding_loss",
        "kl_div",
        "l1_loss",
        "layer_norm",
        "log",
        "log_softmax",
        "log10",
        "log1p",
        "log2",
        "margin_ranking_loss",
        "mse_loss",
        "multilabel_margin_loss",
        "multi_margin_loss",
        "nll_loss",
        "norm",
        "normalize",
        "pdist",
        "poisson_nll_loss",
        "pow",
        "prod",
        "reciprocal",
        "rsqrt",
        "sinh",
        "smooth_l1_loss",
        "soft_margin_loss",
        "softmax",
        "softmin",
        "softplus",
        "sum",
        "renorm",
        "tan",
        "triplet_margin_loss",
        "vector_norm",
    ]
)
# "CUDA Ops that promote to the widest input type".
CUDA_PROMOTE_OPS = frozenset(
    [
        "addcdiv",
        "addcmul",
        "atan2",
        "bilinear",
        "cross",
        "dot",
        "grid_sample",
        "index_put",
        "scatter_add",
        "tensordot",
    ]
)

_HALF = (torch.float16, torch.bfloat16)


def _cast(tree, source: tuple[torch.dtype, ...], target: torch.dtype):
    def cast(t):
        return t.to(target) if isinstance(t, torch.Tensor) and t.dtype in source else t

    return tree_map(cast, tree)


class _CudaPolicy(TorchFunctionMode):
    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if not torch.is_autocast_enabled("cpu"):  # a region that switched autocast off
            return func(*args, **kwargs)
        if name in CUDA_LOWER_PRECISION_OPS:
            args, kwargs = _cast((args, kwargs), (torch.float32,), self.dtype)
        elif name in CUDA_FLOAT32_OPS and "dtype" not in kwargs:
            args, kwargs = _cast((args, kwargs), _HALF, torch.float32)
        elif name in CUDA_PROMOTE_OPS:
            floats = [
                t.dtype
                for t in torch.utils._pytree.tree_leaves((args, kwargs))
                if isinstance(t, torch.Tensor) and t.is_floating_point()
            ]
            if floats:
                widest = max(floats, key=lambda d: torch.finfo(d).bits)
                args, kwargs = _cast((args, kwargs), _HALF, widest)
        return func(*args, **kwargs)


def cuda_autocast_lists(dtype: torch.dtype = torch.bfloat16) -> TorchFunctionMode:
    """CUDA's lists, applied wherever CPU autocast is on (a trainer's ``accelerator.autocast()`` turns it
    on); autocast itself is left to the caller. Use as a context manager."""
    if dtype not in _HALF:
        raise ValueError(f"dtype: expected torch.bfloat16 or torch.float16, got {dtype}")
    return _CudaPolicy(dtype)


@contextlib.contextmanager
def cuda_autocast_policy(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """CPU autocast to ``dtype`` with CUDA's float32 and promotion lists (see the module docstring)."""
    with cuda_autocast_lists(dtype), torch.autocast("cpu", dtype=dtype):
        yield
