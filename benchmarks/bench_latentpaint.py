"""latentpaint against blend at the same steps, side by side: seconds per image as a ratio (issue 15).

    python benchmarks/bench_latentpaint.py --arch tiny --steps 20 --repeats 5 --threads 1
    python benchmarks/bench_latentpaint.py --arch sd15 --size 256 --steps 20 --repeats 2 --device cpu
    python benchmarks/bench_latentpaint.py --arch sd15 --size 512 --steps 50 --device cuda
    python benchmarks/bench_latentpaint.py --arch sdxl --size 1024 --steps 50 --device cuda

In one process, on one Inpainter (one random-weight model with a 4-channel UNet), alternating job by job:
`blend`; `latentpaint` with its defaults (fusion at every step: one UNet call per step on twice the batch);
`latentpaint --fuse-until 0.5` (half the steps fused, the rest blend's steps); and `latentpaint` with a
propagation module attached (an untrained PropagationModules for every fused block: its last layer is zero, so
the output is latentpaint's, but the max-pool and the MLP run at every fused block, which is the overhead a
trained module adds). The last job shares the same UNet, VAE and text encoder through a second Inpainter
whose components differ only in `method_weights`. Same seed, prompt, negative prompt, steps, guidance 7.5 (CFG)
and size for every job; the model's default scheduler (PNDM for SD: steps + 1 UNet calls).

Each job first runs once at 2 steps (a warm-up: first-call allocations and kernel selection, for both batch
sizes, are not what we measure), then `--repeats` times at `--steps`, the jobs alternating so that drift hits
every job alike. Prints, per job: median seconds per image, the ratio to blend (issue 15 expects about 2 for
full fusion), the UNet calls per image and the batch of each call (counted with a forward pre-hook on the UNet
during the first timed run), and peak memory (RSS on CPU, torch.cuda.max_memory_allocated on GPU; on a CPU
the process holds one model, so the RSS peak mostly tells the activations of the larger batch).
`--jobs` picks a subset of the jobs (blend always runs: it is the reference).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import centred_mask, machine, model_folder, picture, timed  # noqa: E402

from inpaintkit import Inpainter, __version__  # noqa: E402
from inpaintkit.methods.feature_fusion import block_channels, unet_blocks  # noqa: E402
from inpaintkit.methods.propagation import PropagationModules  # noqa: E402
from inpaintkit.names import DTYPE_CHOICES  # noqa: E402

PROMPT, NEGATIVE, SEED, GUIDANCE = "a red bicycle", "blurry", 0, 7.5
# job name -> (options given to the Inpainter, whether it runs with a propagation module attached)
JOBS: dict[str, tuple[dict[str, Any], bool]] = {
    "blend": ({"method": "blend"}, False),
    "latentpaint": ({"method": "latentpaint"}, False),
    "latentpaint --fuse-until 0.5": ({"method": "latentpaint", "fuse_until": 0.5}, False),
    "latentpaint + propagation (untrained)": ({"method": "latentpaint"}, True),
}


def job(inpainter: Inpainter, options: dict[str, Any], size: int) -> Callable[[int], None]:
    image, mask = picture(size, size), centred_mask(size, size, size // 2)

    def run(steps: int) -> None:
        inpainter(image, mask, PROMPT, negative_prompt=NEGATIVE, steps=steps, guidance=GUIDANCE, seed=SEED, **options)

    return run


def with_propagation(inpainter: Inpainter) -> Inpainter:
    """The same models, with an untrained propagation module for every block latentpaint fuses by default."""
    components = inpainter.components
    channels = block_channels(components.unet)
    modules = PropagationModules({name: channels[name] for name in unet_blocks(components.unet)}, source="untrained")
    weights = {**components.method_weights, "latentpaint": modules.to(components.device, components.dtype).eval()}
    return Inpainter(replace(components, method_weights=weights))


@contextlib.contextmanager
def counting(unet: torch.nn.Module) -> Iterator[Counter]:
    """The UNet's calls inside, by batch size (a forward pre-hook: a few microseconds a call)."""
    batches: Counter = Counter()

    def count(module, args, kwargs) -> None:
        sample = args[0] if args else kwargs["sample"]
        batches[sample.shape[0]] += 1

    handle = unet.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield batches
    finally:
        handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("tiny", "sd15", "tiny-sdxl", "sdxl"), default="tiny")
    parser.add_argument("--size", type=int, help="image side in pixels (default: the model's native size)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument(
        "--jobs", nargs="+", choices=tuple(JOBS)[1:], default=list(JOBS)[1:], help="the jobs beside blend"
    )
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "inpaintkit-bench")
    arguments = parser.parse_args()

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    folder = model_folder(arguments.model_dir, arguments.arch, channels=4)
    inpainter = Inpainter.from_pretrained(folder, device=arguments.device, dtype=arguments.dtype)
    components = inpainter.components
    size = arguments.size or inpainter.capabilities.native_size
    propagating = None
    jobs: dict[str, Callable[[int], None]] = {}
    for name in ("blend", *arguments.jobs):
        options, propagation = JOBS[name]
        if propagation and propagating is None:
            propagating = with_propagation(inpainter)
        jobs[name] = job(propagating if propagation else inpainter, options, size)

    # Warm-up: first-call allocations and kernel selection are not what we measure. Two steps (three PNDM calls)
    # meet every shape a job has, both batches included (--fuse-until 0.5 fuses 2 of 3), at a fraction of the time.
    for run in jobs.values():
        run(min(arguments.steps, 2))
    calls: dict[str, Counter] = {}
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    memory: dict[str, list[float]] = {name: [] for name in jobs}
    for repeat in range(arguments.repeats):
        for name, run in jobs.items():  # alternate, so drift hits every job alike
            with counting(components.unet) if repeat == 0 else contextlib.nullcontext(Counter()) as batches:
                elapsed, peak = timed(lambda: run(arguments.steps), device)
            calls.setdefault(name, batches)
            seconds[name].append(elapsed)
            memory[name].append(peak)

    memory_kind = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS of the process"
    print(
        f"# bench_latentpaint, {time.strftime('%Y-%m-%d')}, inpaintkit {__version__}, torch {torch.__version__}, "
        f"diffusers {__import__('diffusers').__version__}, {machine(device)}, {torch.get_num_threads()} CPU threads"
    )
    print(
        f"# arch {arguments.arch} (random weights, 4-channel UNet), {size}x{size}, {arguments.steps} steps, "
        f"guidance {GUIDANCE} (CFG), {str(components.dtype).removeprefix('torch.')}, "
        f"{components.scheduler_config['_class_name']}, median of {arguments.repeats} after a 2-step warm-up"
    )
    print(
        f"| job | median s/image | ratio to blend | UNet calls per image (x batch) | peak memory MB ({memory_kind}) "
        "| every run (s) |"
    )
    print("|---|---|---|---|---|---|")
    reference = statistics.median(seconds["blend"])
    for name in jobs:
        median = statistics.median(seconds[name])
        batches = " + ".join(f"{count} x {batch}" for batch, count in sorted(calls[name].items()))
        runs = ", ".join(f"{value:.3f}" for value in seconds[name])
        print(f"| {name} | {median:.3f} | {median / reference:.3f} | {batches} | {max(memory[name]):.0f} | {runs} |")


if __name__ == "__main__":
    main()
