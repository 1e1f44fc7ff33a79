"""Count the host-device synchronisations inside the denoising loop, on a CUDA GPU.

    python benchmarks/check_gpu_syncs.py --arch tiny
    python benchmarks/check_gpu_syncs.py --arch sd15 --steps 10

torch.cuda.set_sync_debug_mode("warn") warns at every synchronising CUDA call; it is switched on from
the first step's callback to the last step's, so loading, encoding and decoding are not counted.
Every method runs with its usual scheduler. Each warning is attributed to the first line outside
torch that made it. The CPU-side twin of this check is tests/test_host_reads.py (CI has no GPU).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import centred_mask, model_folder, picture  # noqa: E402

from inpaintkit import Inpainter  # noqa: E402
from inpaintkit.names import DTYPE_CHOICES  # noqa: E402

JOBS = [  # (UNet channels, method, scheduler, options)
    (9, "native", "default", {}),
    (9, "native", "ddim", {}),
    (9, "native", "dpm++2m", {}),
    (9, "native", "euler", {}),
    (4, "blend", "default", {}),
    (4, "bld", "ddim", {"reconstruct": "none"}),
    (4, "soft", "default", {}),
    (4, "repaint", "ddim", {"jump_length": 2, "jump_n_sample": 2}),
    (4, "tdpaint", "default", {}),
]


def count_syncs(
    inpainter: Inpainter, size: int, steps: int, method: str, scheduler: str, options: dict
) -> collections.Counter:
    lines: collections.Counter = collections.Counter()

    def watch(step: int, total: int, latents: torch.Tensor) -> None:
        torch.cuda.set_sync_debug_mode("warn" if step < total - 1 else "default")

    def attribute(message, category, filename, lineno, file=None, line=None):
        """Called as the warning is raised, so the stack still shows who synchronised."""
        caller = next(
            f
            for f in reversed(traceback.extract_stack()[:-1])
            if "/torch/" not in f.filename and "/warnings" not in f.filename
        )
        lines[f"{caller.filename.rsplit('/', 1)[-1]}:{caller.lineno}: {caller.line}"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = attribute  # restored by catch_warnings
        try:
            inpainter(
                picture(size, size),
                centred_mask(size, size, size // 2),
                "a red bicycle",
                method=method,
                scheduler=scheduler,
                steps=steps,
                seed=0,
                callback=watch,
                **options,
            )
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--size", type=int, default=None, help="default: 64 for tiny, 512 for sd15")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    arguments = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("check_gpu_syncs.py needs a CUDA GPU; on a CPU run tests/test_host_reads.py.")
    size = arguments.size or (512 if arguments.arch == "sd15" else 64)
    with tempfile.TemporaryDirectory() as root:
        inpainters = {
            c: Inpainter.from_pretrained(
                model_folder(Path(root), arguments.arch, c), device="cuda", dtype=arguments.dtype
            )
            for c in (9, 4)
        }
        print(f"| job | syncs in steps 2..{arguments.steps} | where |\n|---|---|---|")
        for channels, method, scheduler, options in JOBS:
            lines = count_syncs(inpainters[channels], size, arguments.steps, method, scheduler, options)
            where = "; ".join(f"{count}x {line}" for line, count in lines.most_common(3) if count) or "-"
            print(f"| {method} / {scheduler} | {sum(lines.values())} | {where} |")


if __name__ == "__main__":
    main()
