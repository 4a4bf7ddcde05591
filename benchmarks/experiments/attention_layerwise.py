"""Layerwise equivariance in attention: a patch-embedding + multi-head-attention autoencoder on natural
images under the left-right mirror (Shahverdi, Marchetti, Bökman and Kohn 2026 trained one on CIFAR-10).

A 32x32 grey crop of scikit-learn's photographs is cut into a 4x4 grid of 8x8 patches (16 tokens); each
patch is embedded (64 -> 32 channels, plus a learned position per token), one multi-head attention layer
(8 heads of 4 channels) adds its output to the embedding, and a per-token linear map decodes 64 pixels.
The mirror acts on tokens by exchanging grid columns and on each patch by mirroring its pixels.

Methods:

* ``equivariance_loss``: free weights, loss ``|f(x) - x|^2 + |f(m x) - m f(x)|^2`` all along;
* ``two_phase``: exactly mirror-equivariant until the switch, then free without the loss at a tenth of
  the learning rate (the library's two-phase default), ``two_phase_lr1`` at the full rate;
* ``unconstrained``: free weights, reconstruction only (what the data alone give).

Phase I holds every weight in the symmetrizer's image ``S(W) = (W + P_out W P_in^T) / 2`` for the
mirror acting on pixels, tokens and channels (channels exchanged in pairs inside each head, so each head
maps to itself and its attention maps are mirrored exactly); the switch keeps ``S(W)`` as the free weight.

Each model is read at the switch and at the end, under the mirror and the vertical-flip control: the
end-to-end error, the per-token layerwise error of the embedding and of the attention output (tokens
aligned, then `geo_pe.equivariance.unit_equivariance` over channels) and the per-head matching of the
attention maps (`geo_pe.equivariance.compare_attention_heads`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from geo_pe.equivariance import compare_attention_heads, unit_equivariance

IMAGE, PATCH = 32, 8
GRID = IMAGE // PATCH
TOKENS, PIXELS = GRID * GRID, PATCH * PATCH
WIDTH, HEADS = 32, 8
STEPS, BATCH, LEARNING_RATE = 4000, 128, 3e-3
METHODS = ("equivariance_loss", "two_phase", "two_phase_lr1", "unconstrained")


@dataclass(frozen=True)
class Action:
    """A flip of the image as permutations: token i of g . x is token ``tokens[i]`` of x, and pixel j of
    each patch of g . x is pixel ``pixels[j]`` of the corresponding patch (both involutions)."""

    name: str
    dim: int  # the image axis it reverses

    @property
    def tokens(self) -> torch.Tensor:
        grid = torch.arange(TOKENS).reshape(GRID, GRID)
        return grid.flip(self.dim).flatten()

    @property
    def pixels(self) -> torch.Tensor:
        patch = torch.arange(PIXELS).reshape(PATCH, PATCH)
        return patch.flip(self.dim).flatten()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.flip(self.dim)


MIRROR, VERTICAL_FLIP = Action("mirror", -1), Action("vertical flip", -2)


def to_tokens(images: torch.Tensor) -> torch.Tensor:
    """``(N, 1, 32, 32) -> (N, 16, 64)``: row-major grid of row-major 8x8 patches."""
    n = images.shape[0]
    return images.reshape(n, GRID, PATCH, GRID, PATCH).permute(0, 1, 3, 2, 4).reshape(n, TOKENS, PIXELS)


def to_images(tokens: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_tokens`."""
    n = tokens.shape[0]
    return tokens.reshape(n, GRID, GRID, PATCH, PATCH).permute(0, 1, 3, 2, 4).reshape(n, 1, IMAGE, IMAGE)


def channel_swap(width: int) -> torch.Tensor:
    """The mirror on channels in phase I: channel pairs (2k, 2k + 1) exchanged (inside each head)."""
    return torch.arange(width) ^ 1


def symmetrize(W: torch.Tensor, out_perm: torch.Tensor, in_perm: torch.Tensor | None = None) -> torch.Tensor:
    """``(W + P_out W P_in^T) / 2`` for involutive permutations: W[o, i] = W[out[o], in[i]] afterwards."""
    moved = W[out_perm] if in_perm is None else W[out_perm][:, in_perm]
    return (W + moved) / 2


class PatchAttentionAutoencoder(nn.Module):
    """Patch embedding + one multi-head attention layer (residual) + per-token linear decoder.

    ``exact=True`` (phase I) symmetrizes every weight for `MIRROR`; `release` frees them in place.
    """

    def __init__(self, width: int = WIDTH, heads: int = HEADS, exact: bool = False):
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"heads: expected an even head size dividing width={width}, got {heads} heads")
        self.heads, self.exact = heads, exact
        self.embed = nn.Linear(PIXELS, width)
        self.position = nn.Parameter(0.1 * torch.randn(TOKENS, width))
        self.query, self.key, self.value, self.output = (nn.Linear(width, width) for _ in range(4))
        self.decode = nn.Linear(width, PIXELS)

    def _weights(self) -> dict[str, torch.Tensor]:
        """The weights in use: the raw parameters, or their symmetrized images in phase I."""
        raw = dict(self.named_parameters())
        if not self.exact:
            return raw
        channels = channel_swap(self.position.shape[1])
        pixels, tokens = MIRROR.pixels, MIRROR.tokens
        out = {"position": symmetrize(raw["position"], tokens, channels)}
        for layer, (out_perm, in_perm) in {
            "embed": (channels, pixels),
            "query": (channels, channels),
            "key": (channels, channels),
            "value": (channels, channels),
            "output": (channels, channels),
            "decode": (pixels, channels),
        }.items():
            out[f"{layer}.weight"] = symmetrize(raw[f"{layer}.weight"], out_perm, in_perm)
            out[f"{layer}.bias"] = symmetrize(raw[f"{layer}.bias"], out_perm)
        return out

    def release(self) -> None:
        """Phase II: the symmetrized weights become the free parameters (the function is unchanged)."""
        with torch.no_grad():
            for name, value in self._weights().items():
                dict(self.named_parameters())[name].copy_(value)
        self.exact = False

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(N, 1, 32, 32)`` -> reconstruction and the states: ``embedding``, ``attention`` ``(N, 16,
        width)`` and the attention ``maps`` ``(N, heads, 16, 16)``."""
        w = self._weights()

        def linear(name, x):
            return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

        embedding = linear("embed", to_tokens(images)) + w["position"]
        n, t, width = embedding.shape

        def split(x):
            return x.reshape(n, t, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = (split(linear(name, embedding)) for name in ("query", "key", "value"))
        maps = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // self.heads), dim=-1)
        attention = linear("output", (maps @ v).transpose(1, 2).reshape(n, t, width))
        reconstruction = to_images(linear("decode", embedding + attention))
        return reconstruction, {"embedding": embedding, "attention": attention, "maps": maps}


def _read(model: PatchAttentionAutoencoder, images: torch.Tensor) -> dict:
    """Test MSE, and per action the end-to-end, layerwise and per-head errors (JSON-able)."""
    model.eval()
    with torch.no_grad():
        out, states = model(images)
        record = {"test_mse": float((out - images).pow(2).mean())}
        for action in (MIRROR, VERTICAL_FLIP):
            moved_out, moved_states = model(action(images))
            target = action(out)
            tokens = action.tokens
            layers = {
                name: unit_equivariance(
                    states[name][:, tokens].flatten(0, 1), moved_states[name].flatten(0, 1), name=name
                )
                for name in ("embedding", "attention")
            }
            heads = compare_attention_heads(states["maps"], moved_states["maps"], tokens)
            record[action.name] = {
                "end_to_end": float((moved_out - target).norm() / target.norm()),
                "layers": {
                    name: {
                        "linear_error": r.linear_error,
                        "permutation_error": r.permutation_error,
                        "matched_fraction": r.matched_fraction,
                    }
                    for name, r in layers.items()
                },
                "heads": {
                    "error": heads.error,
                    "matched_share": heads.matched_share,
                    "self_mapped": len(heads.self_mapped),
                    "exchanged": len(heads.exchanged),
                    "permutation": heads.permutation,
                },
            }
    model.train()
    return record


def _picture(model: PatchAttentionAutoencoder, image: torch.Tensor) -> dict:
    """Attention maps of one image and of its mirror image, for the report's figure."""
    model.eval()
    with torch.no_grad():
        _, states = model(image[None])
        _, mirrored = model(MIRROR(image[None]))
    model.train()
    heads = compare_attention_heads(states["maps"], mirrored["maps"], MIRROR.tokens)
    p = MIRROR.tokens
    return {
        "image": image[0].tolist(),
        "maps": states["maps"][0][:, p][:, :, p].tolist(),  # each original head, tokens mirrored
        "mirrored_maps": mirrored["maps"][0].tolist(),
        "permutation": heads.permutation,
        "similarity": [float(heads.similarity[a, b]) for a, b in enumerate(heads.permutation)],
    }


def run_attention_layerwise(method: str, seed: int, quick: bool = False, weight: float = 1.0) -> dict:
    """Train one autoencoder (``STEPS`` steps, switch or first reading at half) and read it at both points."""
    from benchmarks.experiments.patches import natural_patches

    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    train, test = natural_patches(IMAGE, stride=4)
    torch.manual_seed(seed)
    model = PatchAttentionAutoencoder(exact=method.startswith("two_phase"))
    steps = 20 if quick else STEPS
    switch = steps // 2
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    order = torch.Generator().manual_seed(seed)
    record: dict = {"method": method, "steps": steps, "switch": switch}
    for step in range(steps):
        if step == switch:
            record["at_switch"] = _read(model, test)
            if method.startswith("two_phase"):
                model.release()
                rate = LEARNING_RATE * (1.0 if method == "two_phase_lr1" else 0.1)
                optimizer = torch.optim.Adam(model.parameters(), lr=rate)
        batch = train[torch.randint(len(train), (BATCH,), generator=order)]
        out, _ = model(batch)
        loss = (out - batch).pow(2).mean()
        if method == "equivariance_loss":
            moved, _ = model(MIRROR(batch))
            loss = loss + weight * (moved - MIRROR(out)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    record["at_end"] = _read(model, test)
    if seed == 0:
        record["picture"] = _picture(model, test[len(test) // 3])
    return record
