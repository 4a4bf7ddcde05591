"""The GPU check: the paths only a CUDA machine runs, in one command, with one JSON of figures.

    python -m benchmarks.gpu [--out benchmarks/results/gpu.json] [--quick]

Without a CUDA device it says so in one line and exits 0. On one, each section runs on its own (a failure
is recorded in the JSON with its error and the next section runs):

* ``quickstart_bf16`` / ``quickstart_fp16``: the quickstart through ``accelerate launch`` under bf16
  autocast, and a short fp16 run (autocast with loss scaling); test accuracy per phase, steps per second;
* ``fsdp``: the quickstart through the shipped FSDP2 config on one process: phase I, the sharded switch,
  phase II, ``save_pretrained``, sharded checkpoints, ``--resume`` (weights against the uninterrupted
  run) and ``from_pretrained`` of the result on the GPU;
* ``nbody``: whole training steps per second on the N-body task, eager and compiled, against EGNN, and
  the host syncs in an eager step (``torch.cuda.set_sync_debug_mode``);
* ``rotary``: RotaryPE against HF's ``apply_rotary_pos_emb`` and a clone of q and k (the memory floor) in
  fp32 (8, 8, 512, 64) and bf16 (8, 16, 4096, 64), and SO(3) rotary against SO(2), eager and compiled;
* ``model_vs_llama``: a training step (forward, backward, AdamW) of the geo transformer in phase I and
  phase II against HF's LlamaModel of the same shape, bf16 autocast, 8 layers, hidden 512, 16 x 1,024;
* the peak GPU memory of every in-process section.

Times are CUDA-event medians after warm-up; every figure in the GPU table of docs/training_on_gpus.md
comes from this file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


# --- timing ------------------------------------------------------------------------------------------------
def cuda_ms(fn, *, warmup: int = 5, repeats: int = 30) -> float:
    """Median milliseconds of ``fn()`` on the GPU (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_memory(section):
    """Run ``section()`` and add its peak GPU memory (GiB) to the dict it returns."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = section()
    result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return result


# --- sections run through the launcher ---------------------------------------------------------------------
def launch(args: list[str], config_file: str | None = None, precision: str = "bf16") -> tuple[float, str]:
    """``accelerate launch --num_processes 1 -m train ARGS``; returns (wall seconds, output tail)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    if config_file:
        command += ["--config_file", config_file]
    command += ["--num_machines", "1", "--mixed_precision", precision, "--dynamo_backend", "no"]
    command += ["-m", "train", *args, "--report_to", "none", "--plot", "false"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr[-1500:]}")
    return time.perf_counter() - start, done.stdout[-600:]


def phases_summary(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    steps_per_s = None
    if len(train) >= 2:
        steps = train[-1]["step"] - train[0]["step"]
        steps_per_s = round(steps / max(train[-1]["seconds"] - train[0]["seconds"], 1e-9), 1)
    return {
        "phases": [
            {k: p[k] for k in ("phase", "ended_at_step", "test_accuracy", "equivariance_error")}
            for p in results["phases"]
        ],
        "steps_per_s_with_evaluations": steps_per_s,
        "train_wall_seconds": round(results["wall_seconds"], 1),
    }


def quickstart(work: Path, precision: str, steps: tuple[int, int]) -> dict:
    out = work / f"quickstart_{precision}"
    args = ["--config", "configs/quickstart.yaml", "--output_dir", str(out), "--overwrite_output_dir", "true"]
    args += ["--phase1_steps", str(steps[0]), "--phase2_steps", str(steps[1]), "--mixed_precision", precision]
    wall, _ = launch(args, precision=precision)
    return {"precision": precision, "launch_wall_seconds": round(wall, 1), **phases_summary(out)}


def fsdp(work: Path, steps: tuple[int, int]) -> dict:
    from safetensors.torch import load_file

    from geo_pe.reps.groups import ProductGroup
    from models import GeoTransformerForSequenceClassification

    config = str(ROOT / "configs" / "accelerate" / "fsdp.yaml")
    base = ["--config", "configs/quickstart.yaml", "--phase1_steps", str(steps[0])]
    base += ["--phase2_steps", str(steps[1]), "--save_steps", str(max(1, steps[0] // 2))]
    whole, split = work / "fsdp_whole", work / "fsdp_split"
    wall, _ = launch([*base, "--output_dir", str(whole)], config)
    stop_at = steps[0] + steps[1] // 2  # after the switch
    launch([*base, "--output_dir", str(split), "--stop_after_steps", str(stop_at)], config)
    launch([*base, "--output_dir", str(split), "--resume", "true"], config)
    a = load_file(str(whole / "model" / "model.safetensors"))
    b = load_file(str(split / "model" / "model.safetensors"))
    difference = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    model = GeoTransformerForSequenceClassification.from_pretrained(whole / "model").cuda().eval()
    positions = ProductGroup(model.model.attribute_spaces).sample((2, 64), generator=0)
    features = torch.randn(2, 64, model.config.feature_size)
    with torch.no_grad():
        positions = {name: g.cuda() for name, g in positions.items()}
        logits = model(features=features.cuda(), positions=positions).logits
    return {
        "launch_wall_seconds": round(wall, 1),
        **phases_summary(whole),
        "resume_max_weight_difference": difference,
        "resume_bit_exact": difference == 0.0,
        "checkpoint_files": sorted(p.name for p in next((whole / "checkpoints").iterdir()).iterdir()),
        "loaded_forward_finite": bool(torch.isfinite(logits).all()),
    }


# --- in-process sections ------------------------------------------------------------------------------------
def nbody(work: Path, quick: bool) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_train_step as bench

    splits = {n: bench.make_split(c, s) for s, (n, c) in enumerate(bench.SIZES.items())}
    files = bench.write_parquet(splits, work / "nbody")
    egnn = bench.EGNNStep(splits["train"], "cuda")
    steps = {"egnn": egnn}
    for compiled in (False, True):
        for phase in (1, 2):
            name = f"{'compiled' if compiled else 'eager'} phase {'I' * phase}"
            extra = ("--compile", "true") if compiled else ()
            trainer = bench.nbody_trainer(files, work / name.replace(" ", "_"), *extra)
            if phase == 2:
                trainer.switch_phase()
            steps[name] = trainer.step
    repeats = 20 if quick else 100
    ms = {name: cuda_ms(step, warmup=10, repeats=repeats) for name, step in steps.items()}
    # host syncs in an eager step: CUDA's own detector, as warnings
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps["eager phase II"]()
        torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0][:120] for w in caught if "synchroniz" in str(w.message).lower()]
    eager = max(ms["eager phase I"], ms["eager phase II"])
    compiled = max(ms["compiled phase I"], ms["compiled phase II"])
    return {
        "step_ms": {k: round(v, 3) for k, v in ms.items()},
        "eager_steps_per_s": round(1e3 / eager, 1),
        "compiled_steps_per_s": round(1e3 / compiled, 1),
        "egnn_steps_per_s": round(1e3 / ms["egnn"], 1),
        "geo_vs_egnn_step": round(eager / ms["egnn"], 3),
        "compiled_speedup": round(eager / compiled, 3),
        "host_syncs_in_eager_step": len(syncs),
        "host_sync_examples": syncs[:3],
    }


def rotary_at(shape: tuple[int, int, int, int], dtype: torch.dtype) -> dict:
    """Rotary on q and k of ``shape`` (batch, heads, tokens, head_dim), in the layout of HF's projections."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from geo_pe import quaternion
    from geo_pe.pe import RotaryPE

    B, H, T, D = shape
    q = torch.randn(B, T, H, D, device="cuda", dtype=dtype).transpose(1, 2)
    k = torch.randn(B, T, H, D, device="cuda", dtype=dtype).transpose(1, 2)
    positions = torch.arange(T, device="cuda")
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, device="cuda", dtype=torch.float) / D))
    emb = torch.cat([positions[:, None].float() * inv_freq] * 2, dim=-1)[None]
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)  # as LlamaRotaryEmbedding hands them down
    interleaved = RotaryPE(f"t1:{D // 2}").cuda()
    half = RotaryPE(f"t1:{D // 2}", pair_layout="half").cuda()
    so2 = RotaryPE(f"so2:{D // 8}x1+{D // 8}x2+{D // 8}x3+{D // 8}x4").cuda()
    so3 = RotaryPE(f"so3:{D // 8}x1+{D // 8}x2").cuda()
    t1_enc = interleaved.encode(positions)
    so2_enc = so2.encode(torch.rand(B, T, device="cuda") * 6)
    so3_enc = so3.encode(quaternion.random(B, T, generator=0).cuda())
    compiled_so2, compiled_so3 = torch.compile(so2.rotate_qk), torch.compile(so3.rotate_qk)
    times = {
        "hf_apply_rotary_pos_emb": cuda_ms(lambda: apply_rotary_pos_emb(q, k, cos, sin)),
        "clone_q_k": cuda_ms(lambda: (q.clone(), k.clone())),
        "geo_t1_interleaved": cuda_ms(lambda: interleaved.rotate_qk(q, k, t1_enc)),
        "geo_t1_half": cuda_ms(lambda: half.rotate_qk(q, k, t1_enc)),
        "geo_so2": cuda_ms(lambda: so2.rotate_qk(q, k, so2_enc)),
        "geo_so3": cuda_ms(lambda: so3.rotate_qk(q, k, so3_enc)),
        "compiled_so2": cuda_ms(lambda: compiled_so2(q, k, so2_enc)),
        "compiled_so3": cuda_ms(lambda: compiled_so3(q, k, so3_enc)),
    }
    best = min(times["geo_t1_interleaved"], times["geo_t1_half"])
    return {
        "ms": {name: round(value, 4) for name, value in times.items()},
        "rotary_vs_hf": round(best / times["hf_apply_rotary_pos_emb"], 3),
        "rotary_vs_clone": round(best / times["clone_q_k"], 3),
        "so3_vs_so2_eager": round(times["geo_so3"] / times["geo_so2"], 3),
        "so3_vs_so2_compiled": round(times["compiled_so3"] / times["compiled_so2"], 3),
    }


def rotary() -> dict:
    return {
        "fp32_8x8x512x64": rotary_at((8, 8, 512, 64), torch.float32),
        "bf16_8x16x4096x64": rotary_at((8, 16, 4096, 64), torch.bfloat16),
    }


def model_vs_llama(quick: bool) -> dict:
    from transformers import LlamaConfig, LlamaModel

    from models import GeoTransformerConfig, GeoTransformerModel

    shape = dict(vocab_size=1000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                 num_attention_heads=8)  # fmt: skip
    torch.manual_seed(0)
    llama = LlamaModel(LlamaConfig(**shape, num_key_value_heads=8, max_position_embeddings=1024,
                                   attn_implementation="sdpa")).cuda()  # fmt: skip
    geo_config = GeoTransformerConfig(**shape, feature_size=0, pe_relative="t1:32", pair_layout="half",
                                      phase_history=["scalar_identity"], attn_implementation="sdpa",
                                      causal=True)  # fmt: skip
    phase1 = GeoTransformerModel(geo_config).cuda()
    phase2 = GeoTransformerModel(geo_config).cuda()
    phase2.load_state_dict(phase1.state_dict())
    phase2.set_phase("free")
    ids = torch.randint(1000, (16, 1024), device="cuda")
    out = {}
    for name, model in {"llama": llama, "geo_phase2": phase2, "geo_phase1": phase1}.items():
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step(model=model, optimizer=optimizer):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=ids).last_hidden_state.float().pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        out[name] = cuda_ms(step, warmup=3, repeats=5 if quick else 15)
    return {
        "step_ms": {k: round(v, 3) for k, v in out.items()},
        "phase2_vs_llama": round(out["geo_phase2"] / out["llama"], 3),
        "phase1_vs_phase2": round(out["geo_phase1"] / out["geo_phase2"], 3),
    }


# --- the check ----------------------------------------------------------------------------------------------
def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    parser.add_argument("--only", nargs="+", help="run only these sections")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA device here, nothing to check (run it on a machine with a GPU)")
        return 0
    warnings.filterwarnings("ignore", category=UserWarning)
    work = Path(tempfile.mkdtemp(prefix="geo_pe_gpu_"))
    quick = args.quick
    sections = {  # the most telling first: a run cut short still reports them (the JSON is rewritten)
        "quickstart_bf16": lambda: quickstart(work, "bf16", (300, 150) if quick else (1200, 600)),
        "fsdp": lambda: fsdp(work, (100, 100)),
        "nbody": lambda: peak_memory(lambda: nbody(work, quick)),
        "rotary": lambda: peak_memory(rotary),
        "model_vs_llama": lambda: peak_memory(lambda: model_vs_llama(quick)),
        "quickstart_fp16": lambda: quickstart(work, "fp16", (100, 50)),
    }
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": quick,
    }
    for name, section in sections.items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        try:
            report[name] = section()
        except Exception as err:  # recorded, and the other sections still run
            error = f"{type(err).__name__}: {err}"[:2000]
            report[name] = {"error": error, "trace": traceback.format_exc()[-2000:]}
        report[name]["section_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {json.dumps(report[name])[:600]}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
