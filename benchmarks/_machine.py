"""The machine a benchmark ran on, for its JSON line: CPU model and vector ISA, threads, torch, the GPU."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch


def machine(device: str = "cpu") -> dict:
    """``{"device", "torch", "threads", "cpu", "cpu_capability"[, "gpu"]}``; the capability is the ISA
    PyTorch's CPU kernels dispatch to (e.g. AVX2, AVX512)."""
    info = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info["cpu"] = cpu
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info
