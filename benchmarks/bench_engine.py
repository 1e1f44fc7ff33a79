"""inpaintkit vs diffusers' StableDiffusion(XL)InpaintPipeline on the same components, side by side.

    python benchmarks/bench_engine.py --arch tiny --size 64 --steps 10 --device cpu
    python benchmarks/bench_engine.py --arch sd15 --size 512 --steps 50 --device cuda
    python benchmarks/bench_engine.py --arch sdxl --size 1024 --steps 50 --device cuda

In one process, alternating job by job: inpaintkit `native` (9-channel UNet) against diffusers with
the same 9-channel UNet, and inpaintkit `blend` (4-channel UNet) against diffusers with that 4-channel
UNet (diffusers then blends latents as `blend` does). Same seed, steps, guidance 7.5, strength 1,
prompt and negative prompt; inpaintkit with its defaults (paste-back on). Prints, per pair: median
seconds per image, the ratio inpaintkit/diffusers, seconds per UNet step, and peak memory (RSS on
CPU, torch.cuda.max_memory_allocated on GPU). `--compile` adds `inpaintkit native --compile` (its
ratio is to the same diffusers job) and reports its compile time, the first call's extra seconds, apart.

`--arch sdxl` (SDXL 1.0's architecture, sdxl_model.py) and `--arch tiny-sdxl` compare with diffusers'
StableDiffusionXLInpaintPipeline. Four SDXL pipelines do not fit a 24 GB machine, so on a CPU the
diffusers pipeline of each pair is given inpaintkit's UNet and text encoders (the same module objects:
inpaintkit changes nothing in them on a CPU) and loads only its own VAE, tokenizers and scheduler; on a
GPU, where inpaintkit makes its UNet channels_last, diffusers loads its own copies as for SD.
`--methods native` (or `blend`) runs one pair only, e.g. SDXL in fp32 on a 24 GB CPU machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import centred_mask, machine, model_folder, picture, timed  # noqa: E402

from inpaintkit import Inpainter, __version__  # noqa: E402
from inpaintkit.acceleration import Acceleration, accelerate  # noqa: E402
from inpaintkit.models import Components  # noqa: E402
from inpaintkit.names import DTYPE_CHOICES  # noqa: E402

PROMPT, NEGATIVE, SEED, GUIDANCE = "a red bicycle", "blurry", 0, 7.5
SDXL_ARCHES = ("tiny-sdxl", "sdxl")


def diffusers_job(
    folder: Path, device: str, dtype: torch.dtype, size: int, steps: int, shared: Components | None = None
) -> Callable[[], None]:
    """The diffusers pipeline of the folder's family; with `shared`, it uses those components' UNet and text
    encoders rather than loading its own."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the SDXL pipeline warns at each VAE cast it makes in a call

    if shared is None:
        modules = {}
    else:
        modules = {name: getattr(shared, name) for name in ("unet", *shared.family.text_encoders)}
    if (folder / "text_encoder_2").is_dir():  # an SDXL folder
        pipeline = StableDiffusionXLInpaintPipeline.from_pretrained(folder, torch_dtype=dtype, **modules)
    else:
        pipeline = StableDiffusionInpaintPipeline.from_pretrained(
            folder, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False, **modules
        )
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    image, mask = Image.fromarray(picture(size, size)), Image.fromarray(centred_mask(size, size, size // 2))

    def run() -> None:
        generator = torch.Generator("cpu").manual_seed(SEED)
        pipeline(
            PROMPT,
            image=image,
            mask_image=mask,
            negative_prompt=NEGATIVE,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            strength=1.0,  # the SD pipeline's default; the SDXL pipeline's is 0.9999
            height=size,
            width=size,
            generator=generator,
            output_type="np",
        )

    return run


def inpaintkit_job(inpainter: Inpainter, method: str, size: int, steps: int) -> Callable[[], None]:
    image, mask = picture(size, size), centred_mask(size, size, size // 2)

    def run() -> None:
        inpainter(
            image, mask, PROMPT, negative_prompt=NEGATIVE, method=method, steps=steps, guidance=GUIDANCE, seed=SEED
        )

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("tiny", "sd15", *SDXL_ARCHES), default="tiny")
    parser.add_argument("--size", type=int, help="image side in pixels (default: the model's native size)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument(
        "--compile", action="store_true", help="also time inpaintkit native with a torch.compile'd UNet"
    )
    parser.add_argument(
        "--methods", nargs="+", choices=("native", "blend"), default=["native", "blend"], help="the pairs to run"
    )
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "inpaintkit-bench")
    arguments = parser.parse_args()

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    share = arguments.arch in SDXL_ARCHES and device.type == "cpu"  # see the module's docstring
    jobs: dict[str, Callable[[], None]] = {}
    pairs: list[tuple[str, str]] = []  # (inpaintkit job, the diffusers job it is compared with)
    for method, channels in (("native", 9), ("blend", 4)):
        if method not in arguments.methods:
            continue
        folder = model_folder(arguments.model_dir, arguments.arch, channels)
        inpainter = Inpainter.from_pretrained(folder, device=arguments.device, dtype=arguments.dtype)
        components = inpainter.components
        size = arguments.size or inpainter.capabilities.native_size
        jobs[f"inpaintkit {method}"] = inpaintkit_job(inpainter, method, size, arguments.steps)
        theirs = f"diffusers ({channels}-channel UNet)"
        jobs[theirs] = diffusers_job(
            folder, arguments.device, components.dtype, size, arguments.steps, components if share else None
        )
        pairs.append((f"inpaintkit {method}", theirs))
        dtype = components.dtype
        if method == "native" and arguments.compile:
            if share:  # a compiled wrapper around the same UNet rather than a third copy of the weights
                compiled = Inpainter(replace(components))
                accelerate(compiled.components, Acceleration(compile=True))
            else:
                compiled = Inpainter.from_pretrained(
                    folder, device=arguments.device, dtype=arguments.dtype, compile=True
                )
            jobs["inpaintkit native --compile"] = inpaintkit_job(compiled, method, size, arguments.steps)
            pairs.append(("inpaintkit native --compile", theirs))  # compared with the same diffusers runs

    first_call = {}
    for (
        name,
        job,
    ) in jobs.items():  # warm-up: first-call allocations, kernel selection and compilation are not what we measure
        first_call[name] = timed(job, device)[0]
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    memory: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(arguments.repeats):
        for name, job in jobs.items():  # alternate, so drift hits every job alike
            elapsed, peak = timed(job, device)
            seconds[name].append(elapsed)
            memory[name].append(peak)

    memory_kind = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS of the process"
    print(
        f"# bench_engine, {time.strftime('%Y-%m-%d')}, inpaintkit {__version__}, torch {torch.__version__}, "
        f"diffusers {__import__('diffusers').__version__}, {machine(device)}, {torch.get_num_threads()} CPU threads"
    )
    print(
        f"# arch {arguments.arch} (random weights), {size}x{size}, {arguments.steps} steps, guidance {GUIDANCE} (CFG), "
        f"{str(dtype).removeprefix('torch.')}, median of {arguments.repeats} after a warm-up"
        + (", diffusers given inpaintkit's UNet and text encoders (shared weights)" if share else "")
    )
    print(
        f"| job | median s/image | ratio inpaintkit/diffusers | s per UNet step | peak memory MB ({memory_kind}) | "
        "every run (s) |"
    )
    print("|---|---|---|---|---|---|")
    printed = set()
    for ours, theirs in pairs:
        for name in (ours, theirs):
            if name in printed:
                continue
            printed.add(name)
            median = statistics.median(seconds[name])
            ratio = f"{median / statistics.median(seconds[theirs]):.3f}" if name == ours else ""
            runs = ", ".join(f"{value:.3f}" for value in seconds[name])
            print(
                f"| {name} | {median:.3f} | {ratio} | {median / arguments.steps:.4f} | {max(memory[name]):.0f} | "
                f"{runs} |"
            )
    if arguments.compile:
        name = "inpaintkit native --compile"
        print(
            f"\ncompile time (first call minus the median): {first_call[name] - statistics.median(seconds[name]):.1f} s"
        )


if __name__ == "__main__":
    main()
