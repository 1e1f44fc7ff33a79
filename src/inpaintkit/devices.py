"""Where and how the models run: the device, the dtype `auto` picks, and the CPU thread count."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Optional

import torch

from .errors import InputError

log = logging.getLogger("inpaintkit")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CGROUP_ROOT = Path("/sys/fs/cgroup")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"Unknown device '{device}'; use auto, cpu or cuda.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"Device '{device}' was asked for but this PyTorch build sees no CUDA GPU; use --device cpu.")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise InputError(
            f"Device '{device}' does not exist; this machine has CUDA devices 0..{torch.cuda.device_count() - 1}."
        )
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA; on a CPU, bf16 where it multiplies bf16 in hardware, else fp32. A torch.dtype passes
    through.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"Unknown dtype '{dtype}'; use auto, fp32, fp16 or bf16.")
    return DTYPES[dtype]


def dtype_flag(dtype: torch.dtype) -> str:
    """The --dtype value that names a torch dtype: torch.bfloat16 -> "bf16"."""
    return {value: name for name, value in DTYPES.items()}[dtype]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX-512 BF16 or AMX).

    With them SD 1.5 runs about 1.8x faster in bf16 than in fp32 (benchmarks/RESULTS.md); without
    them oneDNN emulates bf16 and it is no faster, so `auto` keeps fp32 there (issue 8).
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up defensively
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def limit_cpu_threads(cgroup_root: Path = CGROUP_ROOT) -> None:
    """Use no more threads than the CPUs the container may use (a cgroup quota, e.g. `docker run --cpus 2`).

    PyTorch counts the host's cores, not the quota: 32 threads sharing 2 CPUs' worth of time spend it
    waiting for each other. An explicit OMP_NUM_THREADS, or a lower count already set, is kept.
    """
    quota = cpu_quota(cgroup_root)
    if quota is None or "OMP_NUM_THREADS" in os.environ or torch.get_num_threads() <= quota:
        return
    log.info(
        "Using %d CPU threads: this process may use %d CPUs (cgroup quota), not %d.",
        quota,
        quota,
        torch.get_num_threads(),
    )
    torch.set_num_threads(quota)


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> Optional[int]:
    """The CPUs a cgroup quota allows, rounded up, or None without a quota (cgroup v2 cpu.max, else v1)."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
    except (OSError, ValueError):
        try:
            quota = (cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup_root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:  # v1 writes -1 for "no quota"
        return None
    return max(1, math.ceil(quota_us / period_us))


def free_memory() -> None:
    """Collect garbage and give cached GPU memory back: after an out-of-memory error, or before a model loads in
    place of another."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
