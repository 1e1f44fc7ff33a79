"""`inpaintkit bench --ray local` against the local run: throughput with 1 and 2 Ray workers, Ray's start-up (issue 18).

    python benchmarks/bench_ray.py --images 24 --steps 8 --repeats 2 --threads 1

One tiny random-weight model (4-channel UNet, method `blend`) and a folder dataset of `--images` samples (64x64
pictures, a box mask and a prompt each, as the tests write them). Each job is a whole `python -m inpaintkit.cli bench
--pipeline blend --steps S --src DATASET --dst DST --model MODEL --device cpu --quiet` in a subprocess (no --metric:
it times generation, i.e. batch inpainting), each in a fresh DST, timed from the outside (wall seconds: interpreter,
imports, model load, Ray's start, generation, report):
  local                        no Ray;
  --ray local --ray-workers 1  a local Ray cluster, one actor (one CPU) making every output;
  --ray local --ray-workers 2  the same with two actors;
and two jobs over a DST that the local job already completed (a copy: nothing to make), which time what a run costs
besides making its outputs: without Ray (interpreter, imports, reading the dataset, the report), and with `--ray
local` (the same plus starting and stopping the local cluster). Their difference is Ray's start-up cost.
Then `local` and `--ray-workers 1` once more on the first half of the samples: the difference between the full and the
half run, over the images between them, is the cost of one more image with no fixed cost in it (process, model load,
actor start), so their difference is Ray's overhead per image in steady state.

Every subprocess gets OMP_NUM_THREADS=`--threads` (default 1): each actor uses the driver's torch thread count, and
on this 2-core machine 2 threads per process is far slower for the tiny model (RESULTS.md, "CPU threads"), and two
actors at 2 threads each would put 4 threads on 2 cores. Jobs alternate repeat by repeat, so drift hits each alike;
the table gives the median. The `PATH<TAB>generated ...` lines each run prints are counted, to check that each
made-everything job made `--images` outputs and each complete-DST job made none.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import centred_mask, model_folder, picture  # noqa: E402
from PIL import Image  # noqa: E402

from inpaintkit import __version__  # noqa: E402

SIZE = 64
HALF = "half the images"
# job name -> (extra bench arguments, whether it runs over a DST the local job completed, on half the samples)
JOBS: dict[str, tuple[list[str], bool, bool]] = {
    "local": ([], False, False),
    "--ray local --ray-workers 1": (["--ray", "local", "--ray-workers", "1"], False, False),
    "--ray local --ray-workers 2": (["--ray", "local", "--ray-workers", "2"], False, False),
    "local, DST complete (nothing to make)": ([], True, False),
    "--ray local, DST complete (nothing to make)": (["--ray", "local"], True, False),
    f"local, {HALF}": ([], False, True),
    f"--ray local --ray-workers 1, {HALF}": (["--ray", "local", "--ray-workers", "1"], False, True),
}
# Assumed, not measured here (no GPU row exists in RESULTS.md): SD 1.5, 512x512, 50 steps, CFG, fp16, batch 1,
# diffusers with torch 2.1 SDPA on one A100 80GB SXM: median 1.603 s per image (31.19 it/s), as published in the
# README of github.com/fal-ai/stable-diffusion-benchmarks (text-to-image; a blend inpainting job adds one VAE encode).
ASSUMED_GPU_SECONDS = 1.603
ASSUMED_EFFICIENCY = 0.9  # what a real cluster keeps of N x one GPU (stragglers, the last partial wave, retries)


def write_dataset(folder: Path, count: int) -> Path:
    """`count` samples: NAME.png (a gradient, shifted per sample), NAME.mask.png (a box) and NAME.txt (a prompt)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = picture(SIZE, SIZE)
    for index in range(count):
        name = f"s{index:04d}"
        Image.fromarray((base + 7 * index).astype("uint8")).save(folder / f"{name}.png")
        Image.fromarray(centred_mask(SIZE, SIZE, 16 + index % 4 * 8)).save(folder / f"{name}.mask.png")
        (folder / f"{name}.txt").write_text("a red ball\n")
    return folder


def run_bench(
    arguments: argparse.Namespace, dataset: Path, dst: Path, model: Path, extra: list[str]
) -> tuple[float, int, float]:
    """Wall seconds of one `inpaintkit bench` subprocess, how many outputs it generated, and their own seconds."""
    command = [sys.executable, "-m", "inpaintkit.cli", "bench", "--pipeline", "blend", "--steps", str(arguments.steps)]
    command += ["--src", str(dataset), "--dst", str(dst), "--model", str(model), "--device", "cpu", "--quiet", *extra]
    environment = {**os.environ, "OMP_NUM_THREADS": str(arguments.threads)}
    start = time.perf_counter()
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    statuses = [line.partition("\t")[2] for line in done.stdout.splitlines()]
    generated = [float(status.split()[2]) for status in statuses if status.startswith("generated in")]
    return seconds, len(generated), sum(generated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="samples in the dataset (default 24)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every bench process (default 1)")
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "inpaintkit-bench")
    arguments = parser.parse_args()

    model = model_folder(arguments.model_dir, "tiny", channels=4)
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {name: [] for name in JOBS}
    own_seconds: dict[str, list[float]] = {name: [] for name in JOBS}  # the sum of each output's "generated in"
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as temporary:
        root = Path(temporary)
        dataset = write_dataset(root / "dataset", arguments.images)
        half = write_dataset(root / "half", arguments.images // 2)
        for repeat in range(arguments.repeats):
            complete = None
            for index, (name, (extra, over_complete, halved)) in enumerate(JOBS.items()):  # alternate: drift hits all
                dst = root / f"{repeat}-{index}"
                if over_complete:
                    shutil.copytree(complete, dst)
                elapsed, made, own = run_bench(arguments, half if halved else dataset, dst, model, extra)
                own_seconds[name].append(own)
                expected = 0 if over_complete else arguments.images // 2 if halved else arguments.images
                if made != expected:
                    raise SystemExit(f"{name}: generated {made} outputs, expected {expected}")
                if name == "local":
                    complete = dst
                seconds[name].append(elapsed)
                print(f"# repeat {repeat + 1}: {name}: {elapsed:.2f} s", file=sys.stderr)
    load_after = os.getloadavg()

    import ray
    import torch

    median = {name: statistics.median(values) for name, values in seconds.items()}
    count = arguments.images
    print(
        f"# bench_ray, {time.strftime('%Y-%m-%d')}, inpaintkit {__version__}, torch {torch.__version__}, "
        f"ray {ray.__version__}, {platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={arguments.threads}, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"# tiny model (random weights, 4-channel UNet), blend, {SIZE}x{SIZE}, {arguments.steps} steps, "
        f"{count} images, whole `inpaintkit bench` subprocesses, median of {arguments.repeats}"
    )
    print(
        "| job | wall s | outputs made | images/s | throughput ratio to local | sum of per-output s | every run (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (_, over_complete, halved) in JOBS.items():
        runs = ", ".join(f"{value:.2f}" for value in seconds[name])
        made = 0 if over_complete else count // 2 if halved else count
        own = statistics.median(own_seconds[name])
        if not made or halved:
            print(f"| {name} | {median[name]:.2f} | {made} |  |  | {own:.2f} | {runs} |")
            continue
        print(
            f"| {name} | {median[name]:.2f} | {made} | {made / median[name]:.2f} | "
            f"{median['local'] / median[name]:.2f} | {own:.2f} | {runs} |"
        )

    startup = median["--ray local, DST complete (nothing to make)"] - median["local, DST complete (nothing to make)"]
    between = count - count // 2
    local_slope = (median["local"] - median[f"local, {HALF}"]) / between
    ray_slope = (median["--ray local --ray-workers 1"] - median[f"--ray local --ray-workers 1, {HALF}"]) / between
    overhead = ray_slope - local_slope
    print()
    print(f"Ray start-up (--ray local over a complete DST minus local over a complete DST): {startup:.2f} s")
    print(
        f"Seconds per extra image (full minus half run, over {between} images): local {local_slope:.3f}, "
        f"--ray-workers 1 {ray_slope:.3f}; Ray's overhead per image {overhead:.3f} s"
    )
    print()
    print(
        "Estimate, images/hour for N GPUs = N x 3600 / (t_gpu + o_ray) x e, with t_gpu = "
        f"{ASSUMED_GPU_SECONDS} s per image (ASSUMED: SD 1.5, 512x512, 50 steps, CFG, fp16 on one A100 80GB, "
        f"published, not measured here), o_ray = {max(overhead, 0):.3f} s (measured here), e = "
        f"{ASSUMED_EFFICIENCY} (ASSUMED); Ray's start-up ({startup:.0f} s) once per run:"
    )
    print("| GPUs | images/hour |")
    print("|---|---|")
    for gpus in (1, 2, 4, 8, 16):
        rate = gpus * 3600 / (ASSUMED_GPU_SECONDS + max(overhead, 0)) * ASSUMED_EFFICIENCY
        print(f"| {gpus} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
