"""Wall time and peak memory of one generation: CUDA's allocator peak on a GPU, peak RSS on a CPU."""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_memory_mb: Optional[float] = None
    memory_kind: str = ""  # what peak_memory_mb measures


@contextlib.contextmanager
def measured(device: torch.device) -> Iterator[Measurement]:
    """Measure the block. On CPU the peak is the process's peak resident memory during the block where
    Linux lets it be reset (writing 5 to /proc/self/clear_refs), else the peak since the process started."""
    result = Measurement()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result.memory_kind = "CUDA max_memory_allocated"
    else:
        result.memory_kind = "peak RSS" if _reset_peak_rss() else "peak RSS since the process started"
    start = time.perf_counter()
    yield result
    if cuda:
        torch.cuda.synchronize(device)
        result.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result.peak_memory_mb = _peak_rss_mb()
    result.seconds = time.perf_counter() - start


def _reset_peak_rss() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
