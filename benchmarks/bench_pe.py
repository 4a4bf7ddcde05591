"""Rotary PE speed: geo_pe against HF transformers' apply_rotary_pos_emb and the memory-bound floor.

fp32 on the CPU, (batch, heads, tokens, head_dim) = (8, 8, 512, 64), q and k laid out as HF's attention
gets them (a (batch, tokens, heads, dim) projection, transposed). Timed per call on q and k (and v and
the output for GTA): the application only, since the encoding is computed once per forward and shared
by all layers (its cost is reported separately). Each round runs every contender for a short block of
calls and keeps all but the first (which pays for fresh pages from the allocator, as it would not in a
model's steady state); rounds alternate between contenders so that load on the machine hits all alike.
Medians over all kept calls are reported.

    python benchmarks/bench_pe.py [--rounds 10] [--block 5]

Eager PyTorch and ``torch.compile`` are both measured: under compile, matrix blocks (SO(3)) are spelled
out so that Inductor fuses them, while eager mode can only use batched GEMMs with a tiny inner dimension.

Prints a table, then one JSON line: ``{"rotary_speedup_vs_hf": ..., "rotary_vs_clone": ...,
"so3_rotary_vs_so2_rotary": ..., "gta_so3_vs_so2_rotary": ..., ...}``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
from _allocator import steady_allocator
from _machine import machine
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from geo_pe import quaternion, se3
from geo_pe.pe import GTAPE, RotaryPE

B, H, T, D = 8, 8, 512, 64
SPECS = {
    "translation": "t1:32",
    "so2": "so2:8x1+8x2+8x3+8x4",
    "so3": "so3:8x1+8x2",  # l <= 2 blocks: 24 + 40 channels
    "se3": "se3(scale=0.1):16xh",  # 16 homogeneous 4x4 blocks (queries get rho^-T)
}


def hf_cos_sin(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin exactly as LlamaRotaryEmbedding builds them (default RoPE, base 10000)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float) / D))
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=5, help="calls per contender per round")
    parser.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's defaults (see _allocator.py)"
    )
    args = parser.parse_args()
    allocator = steady_allocator(not args.default_malloc)
    torch.manual_seed(0)

    def heads_tensor():
        return torch.randn(B, T, H, D).transpose(1, 2)  # HF attention layout, non-contiguous

    q, k, v = heads_tensor(), heads_tensor(), heads_tensor()
    positions = torch.arange(T).expand(B, T)
    elements = {
        "translation": positions,
        "so2": torch.rand(B, T) * 6.283,
        "so3": quaternion.random(B, T, generator=0),
        "se3": se3.random(B, T, generator=0, translation_scale=10.0),
    }
    cos, sin = hf_cos_sin(positions)
    rotary = {name: RotaryPE(spec, head_dim=D) for name, spec in SPECS.items()}
    rotary_half = RotaryPE(SPECS["translation"], head_dim=D, pair_layout="half")
    gta = {name: GTAPE(spec, head_dim=D) for name, spec in SPECS.items()}
    enc = {name: pe.encode(elements[name]) for name, pe in rotary.items()}
    out = torch.randn(B, H, T, D)

    def gta_transforms(name):
        pe, e = gta[name], enc[name]
        return pe.rotate_qk(q, k, e), pe.transport_values(v, e), pe.transport_output(out, e)

    warnings.simplefilter("ignore")  # torch.compile's deprecation chatter
    compiled = {name: torch.compile(pe.rotate_qk) for name, pe in rotary.items()}
    compiled_gta = {
        name: torch.compile(lambda name=name: gta_transforms(name)) for name in ("so2", "so3", "se3")
    }

    contenders = {
        "hf apply_rotary_pos_emb": lambda: apply_rotary_pos_emb(q, k, cos, sin),
        "q.clone(); k.clone()": lambda: (q.clone(), k.clone()),
        "geo_pe rotary t1 (interleaved)": lambda: rotary["translation"].rotate_qk(q, k, enc["translation"]),
        "geo_pe rotary t1 (half, HF layout)": lambda: rotary_half.rotate_qk(q, k, enc["translation"]),
        "geo_pe rotary so2": lambda: rotary["so2"].rotate_qk(q, k, enc["so2"]),
        "geo_pe rotary so3 (l <= 2)": lambda: rotary["so3"].rotate_qk(q, k, enc["so3"]),
        "geo_pe gta so3: q, k, v, out^T": lambda: gta_transforms("so3"),
        "geo_pe gta so2: q, k, v, out^T": lambda: gta_transforms("so2"),
        "geo_pe rotary se3 (16 x h)": lambda: rotary["se3"].rotate_qk(q, k, enc["se3"]),
        "geo_pe gta se3: q, k, v, out^-1": lambda: gta_transforms("se3"),
        "compiled rotary t1": lambda: compiled["translation"](q, k, enc["translation"]),
        "compiled rotary so2": lambda: compiled["so2"](q, k, enc["so2"]),
        "compiled rotary so3 (l <= 2)": lambda: compiled["so3"](q, k, enc["so3"]),
        "compiled gta so3: q, k, v, out^T": compiled_gta["so3"],
        "compiled gta so2: q, k, v, out^T": compiled_gta["so2"],
        "compiled rotary se3 (16 x h)": lambda: compiled["se3"](q, k, enc["se3"]),
        "compiled gta se3: q, k, v, out^-1": compiled_gta["se3"],
        "encode se3 (once per forward)": lambda: rotary["se3"].encode(elements["se3"]),
        "encode t1 (once per forward)": lambda: rotary["translation"].encode(positions),
        "encode so3 (once per forward)": lambda: rotary["so3"].encode(elements["so3"]),
        "hf cos/sin (once per forward)": lambda: hf_cos_sin(positions),
    }
    times = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            for call in range(args.block):
                start = time.perf_counter()
                fn()
                if call:
                    times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}

    # correctness next to speed: the translation rotary in HF's layout is HF's RoPE
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    q_ours, k_ours = rotary_half.rotate_qk(q, k, enc["translation"])
    max_diff = max((q_hf - q_ours).abs().max().item(), (k_hf - k_ours).abs().max().item())

    threads = torch.get_num_threads()
    print(f"fp32 CPU, (batch, heads, tokens, head_dim) = ({B}, {H}, {T}, {D}), {threads} threads")
    print(
        f"median over {args.rounds} interleaved rounds of {args.block - 1} kept calls; allocator: {allocator}"
    )
    for name, ms in median.items():
        print(f"  {name:<36} {ms:8.2f} ms")
    print(f"  max |geo_pe half-layout RoPE - HF RoPE| = {max_diff:.2e}")
    hf, clone = median["hf apply_rotary_pos_emb"], median["q.clone(); k.clone()"]
    t1, so2, so2_c = (
        median["geo_pe rotary t1 (interleaved)"],
        median["geo_pe rotary so2"],
        median["compiled rotary so2"],
    )
    result = {
        "rotary_speedup_vs_hf": round(hf / t1, 2),
        "rotary_half_layout_speedup_vs_hf": round(hf / median["geo_pe rotary t1 (half, HF layout)"], 2),
        "so2_rotary_speedup_vs_hf": round(hf / so2, 2),
        "rotary_vs_clone": round(t1 / clone, 2),
        "so2_rotary_vs_clone": round(so2 / clone, 2),
        "so3_rotary_vs_so2_rotary": round(median["geo_pe rotary so3 (l <= 2)"] / so2, 2),
        "gta_so3_vs_so2_rotary": round(median["geo_pe gta so3: q, k, v, out^T"] / so2, 2),
        "compiled_so3_rotary_vs_compiled_so2_rotary": round(
            median["compiled rotary so3 (l <= 2)"] / so2_c, 2
        ),
        "compiled_gta_so3_vs_compiled_so2_rotary": round(
            median["compiled gta so3: q, k, v, out^T"] / so2_c, 2
        ),
        "compiled_so3_rotary_vs_eager_so2_rotary": round(median["compiled rotary so3 (l <= 2)"] / so2, 2),
        "se3_rotary_vs_so2_rotary": round(median["geo_pe rotary se3 (16 x h)"] / so2, 2),
        "gta_se3_vs_so2_rotary": round(median["geo_pe gta se3: q, k, v, out^-1"] / so2, 2),
        "compiled_se3_rotary_vs_compiled_so2_rotary": round(
            median["compiled rotary se3 (16 x h)"] / so2_c, 2
        ),
        "max_abs_diff_vs_hf_rope": max_diff,
        "allocator": allocator,
    }
    result["machine"] = machine("cpu")  # the distance to the memory floor depends on the CPU
    print(json.dumps(result))


if __name__ == "__main__":
    main()
