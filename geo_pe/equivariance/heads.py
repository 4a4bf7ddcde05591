"""Per-head equivariance of attention: does a transformation of the input act on the heads as a permutation?

For an input x, a transformed input g . x and the action of g on tokens (a permutation p: token i of
g . x is token p[i] of x, e.g. the mirror image of a patch grid), an attention head whose maps follow the
symmetry satisfies ``A'_a[i, j] = A_b[p[i], p[j]]`` for some head b: the transformed input's head a
attends as head b did, with the tokens moved. Shahverdi, Marchetti, Bökman and Kohn (2026) observed this
in attention layers trained on natural images under the left-right mirror: most heads mirror their own
maps, and a few are exchanged in pairs.

`compare_attention_heads` finds the best head permutation by Hungarian matching (scipy's
``linear_sum_assignment``) on the cosine similarity of the maps, and reports its relative error, the
share of heads matched above a threshold, and which heads map to themselves and which are exchanged.
The maps are compared after removing each row's mean (``centre=True``): a softmax row sums to one, so
every map shares the uniform part 1/T, and near-uniform heads (at initialisation, or diffuse ones) would
otherwise look alike whatever they attend to.
`record_attention` collects the maps of any model: the geo transformer returns them with
``output_attentions=True``; HF attention modules hand them to a forward hook (their second output).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["HeadMatching", "compare_attention_heads", "record_attention"]


@dataclass
class HeadMatching:
    """``permutation[a] = b``: head a on the transformed input acts as head b on the original.

    ``errors[a]``: relative Frobenius error of that match; ``similarity`` ``(H, H)``: cosine similarities
    (transformed head, original head); ``matched_share``: share of heads whose match has similarity at
    least the threshold; ``self_mapped``: matched heads with b = a; ``exchanged``: matched heads with b != a.
    """

    permutation: list[int]
    errors: torch.Tensor
    similarity: torch.Tensor
    matched_share: float
    self_mapped: list[int] = field(default_factory=list)
    exchanged: list[tuple[int, int]] = field(default_factory=list)

    @property
    def error(self) -> float:
        """The mean relative error over heads."""
        return float(self.errors.mean())


def _check_maps(maps: torch.Tensor, name: str) -> None:
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[-1] != maps.shape[-2]:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"{name}: expected attention maps (batch, heads, tokens, tokens), got {shape}")


def compare_attention_heads(
    maps: torch.Tensor,
    transformed_maps: torch.Tensor,
    token_permutation: torch.Tensor | None = None,
    *,
    threshold: float = 0.9,
    centre: bool = True,
) -> HeadMatching:
    """Match the heads of ``transformed_maps`` (the maps on g . x) to those of ``maps`` (on x), both
    ``(batch, heads, T, T)``; ``token_permutation`` ``(T,)`` is g's action on tokens (identity if None).
    Similarities and errors are of the centred maps (each row minus its mean) unless ``centre=False``."""
    from scipy.optimize import linear_sum_assignment

    _check_maps(maps, "maps")
    _check_maps(transformed_maps, "transformed_maps")
    if maps.shape != transformed_maps.shape:
        raise ValueError(
            f"transformed_maps: expected the shape of maps {tuple(maps.shape)}, got "
            f"{tuple(transformed_maps.shape)}"
        )
    T = maps.shape[-1]
    if token_permutation is None:
        token_permutation = torch.arange(T)
    p = torch.as_tensor(token_permutation, dtype=torch.long)
    if p.shape != (T,) or not torch.equal(p.sort().values, torch.arange(T)):
        raise ValueError(f"token_permutation: expected a permutation of range({T}), got {p.tolist()}")
    expected = maps.detach().double()[..., p, :][..., :, p]  # what each original head predicts on g . x
    actual = transformed_maps.detach().double()
    if centre:
        expected = expected - expected.mean(-1, keepdim=True)
        actual = actual - actual.mean(-1, keepdim=True)
    a = actual.transpose(0, 1).flatten(1)  # (H, batch T T)
    e = expected.transpose(0, 1).flatten(1)
    similarity = (a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)) @ (
        e / e.norm(dim=1, keepdim=True).clamp_min(1e-30)
    ).T
    rows, cols = linear_sum_assignment((-similarity).numpy())
    permutation = [int(c) for _, c in sorted(zip(rows, cols, strict=True))]
    errors = torch.stack(
        [(a[h] - e[b]).norm() / e[b].norm().clamp_min(1e-30) for h, b in enumerate(permutation)]
    )
    matched = [h for h, b in enumerate(permutation) if similarity[h, b] >= threshold]
    return HeadMatching(
        permutation=permutation,
        errors=errors,
        similarity=similarity,
        matched_share=len(matched) / len(permutation),
        self_mapped=[h for h in matched if permutation[h] == h],
        exchanged=[(h, permutation[h]) for h in matched if permutation[h] != h],
    )


@contextlib.contextmanager
def record_attention(model: nn.Module, modules: str) -> Iterator[dict[str, torch.Tensor]]:
    """Collect the attention maps of the submodules whose names match the regex ``modules`` (for HF
    attention modules, e.g. ``r".*self_attn"``, which return ``(output, weights)``; eager attention is
    needed for weights). Yields a dict filled on every forward: name -> ``(batch, heads, T, T)``."""
    pattern = re.compile(modules)
    chosen = [(n, m) for n, m in model.named_modules() if pattern.fullmatch(n)]
    if not chosen:
        raise ValueError(f"modules: no submodule name matches {modules!r}")
    maps: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def keep(_module, _inputs, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not isinstance(weights, torch.Tensor):
                raise ValueError(
                    f"modules: {name} returned no attention weights; run it with eager attention "
                    "(attn_implementation='eager')"
                )
            maps[name] = weights.detach()

        return keep

    handles = [m.register_forward_hook(hook(n)) for n, m in chosen]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()
