"""Crop-to-mask: a 4096x3072 photo with a 256x256 mask vs the same job on a 512x512 image.

    python benchmarks/bench_crop.py --arch sd15 --steps 5 --device cpu

Runs the jobs alternately in one process and prints median seconds per image and their ratio to the first.
With --crop-padding the large photo must cost about what the 512x512 job costs; the third job adds
--mask-blur and --color-match, whose pixel work must grow with the mask, not with the photo.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import centred_mask, model_folder, picture  # noqa: E402

from inpaintkit import Inpainter, __version__  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="sd15")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "inpaintkit-bench")
    arguments = parser.parse_args()

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    inpainter = Inpainter.from_pretrained(model_folder(arguments.model_dir, arguments.arch), device=arguments.device)
    native = inpainter.capabilities.native_size

    photo, photo_mask = picture(4096, 3072), centred_mask(4096, 3072, 256)
    jobs = {
        f"{native}x{native}, {native // 2}x{native // 2} mask, whole image": (
            picture(native, native),
            centred_mask(native, native, native // 2),
            {},
        ),
        "4096x3072, 256x256 mask, --crop-padding 32": (photo, photo_mask, {"crop_padding": 32}),
        "the same, --mask-blur 8 --color-match": (
            photo,
            photo_mask,
            {"crop_padding": 32, "mask_blur": 8, "color_match": True},
        ),
    }
    times = {name: [] for name in jobs}
    for _ in range(arguments.repeats):
        for name, (pixels, mask, options) in jobs.items():  # alternate, so drift hits all alike
            start = time.perf_counter()
            inpainter(pixels, mask, "a red bicycle", steps=arguments.steps, seed=0, **options)
            times[name].append(time.perf_counter() - start)

    print(
        f"# crop-to-mask, {time.strftime('%Y-%m-%d')}, inpaintkit {__version__}, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {arguments.device}"
    )
    print(
        f"# arch {arguments.arch} (random weights), {arguments.steps} steps, guidance 7.5, median of "
        f"{arguments.repeats}"
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = next(iter(medians.values()))
    print("| job | median s/image | ratio to the first | every run (s) |")
    print("|---|---|---|---|")
    for name, median in medians.items():
        runs = ", ".join(f"{value:.2f}" for value in times[name])
        print(f"| {name} | {median:.2f} | {median / baseline:.2f} | {runs} |")


if __name__ == "__main__":
    main()
