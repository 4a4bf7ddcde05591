"""Training-step time of the geo transformer against HF's LlamaModel, and of phase I against phase II.

CPU, fp32, both models with the same hidden size, layers, heads, SwiGLU intermediate size, vocabulary,
sequence length and batch, so the same FLOPs per layer; both run PyTorch SDPA attention, and both are
causal (the geo transformer's ``causal=True``), so attention costs the same at every length. A step is
forward, a loss on the last hidden state, backward and an AdamW step. Contenders:

* ``llama``: ``transformers.LlamaModel`` (its RoPE, half pair layout);
* ``geo phase II``: ``GeoTransformerModel`` with the translation rotary PE configured as RoPE, after a
  switch scalar identity -> free (the attention projections are ``PhasedLinear`` with free weights);
* ``geo phase I``: the same model before the switch: q, k, v, o are ``b * x`` (no matmul).

Rounds alternate between contenders (a warm-up step each, then ``--block`` timed steps); medians of the
timed steps are reported.

    python benchmarks/bench_model.py [--rounds 5] [--block 3] [--batch 8] [--tokens 256]
    python benchmarks/bench_model.py --sweep 64 256 1024 2048   # geo phase II / Llama per length

With ``--sweep`` the batch shrinks as the sequence grows (``batch * tokens`` stays that of the default
run) and each length reports geo phase II over Llama.

Prints both configurations and a table, then one JSON line:
``{"step_vs_hf_llama": ..., "phase1_vs_phase2_step": ..., ...}``, with the matmul-FLOP ratio of phase I
to phase II (the bound on what dropping the projections can save) and the measured ratio of the time
spent in matmuls next to the step ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _allocator import steady_allocator
from transformers import LlamaConfig, LlamaModel

from models import GeoTransformerConfig, GeoTransformerModel


def make_models(args) -> dict[str, torch.nn.Module]:
    head_dim = args.hidden // args.heads
    shape = {  # the same transformer on both sides
        "vocab_size": args.vocab,
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
    }
    llama_config = LlamaConfig(
        **shape,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.tokens,
        attn_implementation="sdpa",
    )
    geo_config = GeoTransformerConfig(
        **shape,
        feature_size=0,  # token ids only, as Llama
        pe_relative=f"t1:{head_dim // 2}",  # RoPE: base 10000 on the whole head
        pair_layout=args.pair_layout,
        phase_history=["scalar_identity"],
        attn_implementation="sdpa",
        causal=True,  # Llama is a decoder: compare like with like
    )
    torch.manual_seed(0)
    llama = LlamaModel(llama_config)
    phase1 = GeoTransformerModel(geo_config)
    phase2 = GeoTransformerModel(geo_config)
    phase2.load_state_dict(phase1.state_dict())
    phase2.set_phase("free")
    return {"llama": llama, "geo phase II": phase2, "geo phase I": phase1}


def phase1_flop_ratio(args) -> float:
    """Matmul FLOPs of phase I over phase II per token and layer: phase I drops the four h x h
    projections and keeps the SwiGLU MLP (3 h i) and causal attention (T h on average: scores and
    values over the T / 2 earlier tokens)."""
    h, i, t = args.hidden, args.intermediate, args.tokens
    kept = 3 * h * i + t * h
    return kept / (kept + 4 * h * h)


def time_steps(models: dict, ids: torch.Tensor, rounds: int, block: int) -> dict[str, float]:
    """Median training-step seconds per contender, rounds alternating between contenders."""
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}

    def step(name: str) -> float:
        model, optimizer = models[name], optimizers[name]
        start = time.perf_counter()
        loss = model(input_ids=ids).last_hidden_state.square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name in models:
            step(name)  # warm-up: fresh pages, optimizer state on the first round
            times[name].extend(step(name) for _ in range(block))
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_seconds(model: torch.nn.Module, ids: torch.Tensor, steps: int = 3) -> float:
    """Seconds per training step spent in matrix multiplications (profiler self time of mm, addmm,
    bmm), to set next to the FLOP bound: the rest of a step is work both phases share."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model(input_ids=ids).last_hidden_state.square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    with torch.profiler.profile() as prof:
        for _ in range(steps):
            step()
    kernels = ("aten::mm", "aten::addmm", "aten::bmm")
    total = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in kernels)
    return total / 1e6 / steps


def sweep(args) -> None:
    """Geo phase II over Llama at each sequence length, the same number of tokens per batch."""
    tokens_per_batch = args.batch * args.tokens
    rows = {}
    for tokens in args.sweep:
        args.tokens, args.batch = tokens, max(1, tokens_per_batch // tokens)
        models = make_models(args)
        models.pop("geo phase I")
        ids = torch.randint(args.vocab, (args.batch, tokens), generator=torch.Generator().manual_seed(0))
        median = time_steps(models, ids, args.rounds, args.block)
        rows[tokens] = (args.batch, median["llama"], median["geo phase II"])
        print(f"tokens {tokens:5d} batch {args.batch:3d}: llama {1e3 * median['llama']:8.1f} ms, "
              f"geo phase II {1e3 * median['geo phase II']:8.1f} ms, "
              f"ratio {median['geo phase II'] / median['llama']:.3f}", flush=True)  # fmt: skip
    print(json.dumps({"geo_vs_llama_by_tokens": {t: round(g / l, 3) for t, (_, l, g) in rows.items()}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=3, help="timed steps per contender per round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=688)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--pair-layout", default="interleaved", choices=["interleaved", "half"])
    parser.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's defaults (see _allocator.py)"
    )
    parser.add_argument("--sweep", type=int, nargs="+", help="sequence lengths: geo phase II / Llama at each")
    args = parser.parse_args()
    allocator = steady_allocator(not args.default_malloc)
    if args.sweep:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {allocator}, causal both")
        return sweep(args)
    models = make_models(args)
    ids = torch.randint(args.vocab, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    median = time_steps(models, ids, args.rounds, args.block)
    params = {name: sum(p.numel() for p in m.parameters() if p.requires_grad) for name, m in models.items()}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {allocator}")
    print(
        f"shared sizes: batch {args.batch}, tokens {args.tokens}, hidden {args.hidden}, "
        f"layers {args.layers}, heads {args.heads}, SwiGLU intermediate {args.intermediate}, "
        f"vocab {args.vocab}, fp32, SDPA"
    )
    for name in ("llama", "geo phase II"):  # the settings that differ from each class's defaults
        print(f"{name} config: {json.dumps(models[name].config.to_diff_dict(), sort_keys=True)}")
    print(f"{'contender':<14} {'step ms':>9} {'trainable params':>17}")
    for name in models:
        print(f"{name:<14} {1e3 * median[name]:9.1f} {params[name]:17,d}")
    matmul = {name: matmul_seconds(models[name], ids) for name in ("geo phase I", "geo phase II")}
    print(
        f"matmul time per step: phase I {1e3 * matmul['geo phase I']:.1f} ms, "
        f"phase II {1e3 * matmul['geo phase II']:.1f} ms (profiler self time of mm/addmm/bmm)"
    )
    result = {
        "step_vs_hf_llama": round(median["geo phase II"] / median["llama"], 3),
        "phase1_vs_phase2_step": round(median["geo phase I"] / median["geo phase II"], 3),
        "phase1_vs_phase2_matmul_flops": round(phase1_flop_ratio(args), 3),
        "phase1_vs_phase2_matmul_time": round(matmul["geo phase I"] / matmul["geo phase II"], 3),
        "llama_step_ms": round(1e3 * median["llama"], 1),
        "geo_phase2_step_ms": round(1e3 * median["geo phase II"], 1),
        "geo_phase1_step_ms": round(1e3 * median["geo phase I"], 1),
        "pair_layout": args.pair_layout,
        "allocator": "heap reuse" if not args.default_malloc else "glibc defaults",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
