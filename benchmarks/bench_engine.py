"""inpaintkit vs diffusers' SD and SDXL inpainting pipelines and FluxFillPipeline on the same components, side by side.

    python benchmarks/bench_engine.py --arch tiny --size 64 --steps 10 --device cpu
    python benchmarks/bench_engine.py --arch sd15 --size 512 --steps 50 --device cuda
    python benchmarks/bench_engine.py --arch sdxl --size 1024 --steps 50 --device cuda
    python benchmarks/bench_engine.py --arch flux --size 256 --steps 4 --repeats 3 --device cpu

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

`--arch flux` compares inpaintkit `native` (family flux-fill) with diffusers' FluxFillPipeline, each loading the
same random-weight diffusers folder (flux_model.py, written with FluxFillPipeline.save_pretrained): FLUX.1 Fill's
transformer at full width (hidden 3072 = 24 heads x 128, joint_attention_dim 4096, pooled 768, in_channels 384,
out 64, guidance embedding, rope axes (16, 56, 56)) but reduced depth, `--flux-blocks 1 2` by default (1 double-
and 2 single-stream blocks of FLUX.1's 19 and 38), FLUX.1's VAE and scheduler config, and reduced text encoders.
Same seed, steps, prompt, guidance 30 (embedded: one transformer call per step, no CFG batch), strength 1; no
negative prompt (Flux's guidance is distilled); inpaintkit with paste-back off, as the equivalence tests run it, so
that both return the same pixels: the script compares the warm-up's two outputs with the equivalence tests'
tolerance and prints the result. `--arch tiny-flux` runs the same code on the test suite's tiny Flux Fill model.

Why a reduced depth stands for FLUX.1 Fill's per-step cost: every double block has the same shapes, and so has every
single block, and each runs once per step on the same tokens (image tokens + 512 T5 tokens), so the transformer's
time per step is (embedders and output layer) + 19 x (one double block) + 38 x (one single block): linear in the
depth. Both tools call the very same transformer on the same inputs (checked: bit-identical inputs apart from the
masked-image latents, see RESULTS.md), so the transformer's share of a step costs them the same at any depth, and
what differs, the work outside the transformer, does not depend on the depth at all. The ratio of the per-step
costs at full depth is therefore closer to 1.0 than the reduced model's (the shared transformer time grows 19-fold
while the difference stays). The assumptions: the blocks' time does not depend on their weights (random weights
cost what trained ones cost), memory does not run out at full depth (12B parameters: 24 GB in bf16), and no
cross-block effect (caches, compilation) changes a block's cost with depth. The Flux table adds where each job's
time goes (the text encoders, VAE encoder, transformer calls and VAE decoder, timed with forward hooks, and the rest)
so the per-step part can be read apart from the once-per-job part.

The text encoders are reduced (a 1-layer CLIP at CLIP-L's width, a 1-layer narrow T5 at T5-XXL's output width
4096): they run once per job, not per step, and cost both tools the same. What that leaves out: CLIP ViT-L/14
(123M parameters, 77 tokens) and above all T5-v1.1-XXL (4.7B parameters on 512 tokens, about 4.8 TFLOP a job,
some 4% of one full-depth transformer step at 1024x1024), and their memory (9.5 GB for T5-XXL in bf16). So the
per-job ratio printed here is for the reduced encoders; with the real ones it moves further towards the
per-step ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import FLUX_ARCHES, centred_mask, machine, model_folder, picture, timed  # noqa: E402

from inpaintkit import Inpainter, __version__  # noqa: E402
from inpaintkit.acceleration import Acceleration, accelerate  # noqa: E402
from inpaintkit.models import Components  # noqa: E402
from inpaintkit.names import DTYPE_CHOICES  # noqa: E402
from inpaintkit.quiet import quiet_libraries  # noqa: E402

PROMPT, NEGATIVE, SEED, GUIDANCE = "a red bicycle", "blurry", 0, 7.5
SDXL_ARCHES = ("tiny-sdxl", "sdxl")
FLUX_GUIDANCE = 30.0  # FluxFillPipeline's default guidance_scale and inpaintkit's for flux-fill (embedded, no CFG)
# The equivalence tests' tolerance (tests/test_equivalence.py), on 0-255 pixels.
MEAN_TOLERANCE, MAX_TOLERANCE = 0.5, 8


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


def flux_diffusers_job(folder: Path, device: str, dtype: torch.dtype, size: int, steps: int) -> tuple[Any, Callable]:
    """diffusers' FluxFillPipeline loaded from the folder, and its job: the output image as a uint8 array."""
    from diffusers import FluxFillPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    with quiet_libraries():  # the loading bars
        pipeline = FluxFillPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
    pipeline.set_progress_bar_config(disable=True)
    image, mask = Image.fromarray(picture(size, size)), Image.fromarray(centred_mask(size, size, size // 2))

    def run() -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(SEED)
        result = pipeline(
            PROMPT,
            image=image,
            mask_image=mask,
            num_inference_steps=steps,
            guidance_scale=FLUX_GUIDANCE,
            strength=1.0,
            height=size,
            width=size,
            generator=generator,
        )
        return np.asarray(result.images[0])

    return pipeline, run


def flux_inpaintkit_job(inpainter: Inpainter, size: int, steps: int) -> Callable[[], np.ndarray]:
    """inpaintkit flux-fill `native` with paste-back off, so that its pixels are comparable with diffusers' (as in
    tests/test_equivalence_flow.py); no negative prompt (Flux's guidance is distilled)."""
    image, mask = picture(size, size), centred_mask(size, size, size // 2)

    def run() -> np.ndarray:
        result = inpainter(
            image, mask, PROMPT, method="native", steps=steps, guidance=FLUX_GUIDANCE, seed=SEED, paste_back=False
        )
        return np.asarray(result[0])

    return run


class Parts:
    """Seconds each job spends inside named modules (forward pre- and post-hooks: a few microseconds a call; CUDA
    events on a GPU, read after the job, so no host synchronisation is added inside the loop)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.spans: list[tuple[str, Any, Any]] = []  # (part, start, end) of the current job
        self.jobs: list[dict[str, list[float]]] = []  # per finished job: part -> every call's seconds

    def watch(self, modules: list[tuple[str, torch.nn.Module]]) -> None:
        for part, module in modules:
            module.register_forward_pre_hook(lambda *_, part=part: self.spans.append((part, self._now(), None)))
            module.register_forward_hook(lambda *_, part=part: self._end(part))

    def _now(self) -> Any:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _end(self, part: str) -> None:
        index = max(i for i, span in enumerate(self.spans) if span[0] == part and span[2] is None)
        self.spans[index] = (part, self.spans[index][1], self._now())

    def finish_job(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        calls: dict[str, list[float]] = {}
        for part, start, end in self.spans:
            elapsed = start.elapsed_time(end) / 1000 if self.device.type == "cuda" else end - start
            calls.setdefault(part, []).append(elapsed)
        self.jobs.append(calls)
        self.spans = []


def flux_parts(transformer, text_encoder, text_encoder_2, vae) -> list[tuple[str, torch.nn.Module]]:
    return [
        ("text encoders", text_encoder),
        ("text encoders", text_encoder_2),
        ("VAE encode", vae.encoder),
        ("transformer", transformer),
        ("VAE decode", vae.decoder),
    ]


def compare_outputs(ours: np.ndarray, theirs: np.ndarray) -> str:
    difference = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    mean, largest = float(difference.mean()), int(difference.max())
    equal = "identical" if largest == 0 else f"max |difference| {largest}/255, mean {mean:.4f}/255"
    within = mean <= MEAN_TOLERANCE and largest <= MAX_TOLERANCE
    return (
        f"{equal}: {'within' if within else 'OUTSIDE'} the equivalence tests' tolerance "
        f"(mean <= {MEAN_TOLERANCE}/255, max <= {MAX_TOLERANCE}/255)"
    )


def print_flux_parts(jobs: dict[str, Parts], seconds: dict[str, list[float]]) -> None:
    """Where each job's time goes (medians over the timed runs), and the transformer calls' ratio."""
    print(
        "\n| job | text encoders (once per job) | VAE encode | transformer calls x median s | transformer total | "
        "VAE decode | rest (outside these modules) |"
    )
    print("|---|---|---|---|---|---|---|")
    per_call = {}
    for name, parts in jobs.items():
        runs = parts.jobs[-len(seconds[name]) :]  # the timed runs, not the warm-up

        def median_total(part: str, runs=runs) -> float:
            return statistics.median(sum(run.get(part, [])) for run in runs)

        calls = [value for run in runs for value in run.get("transformer", [])]
        per_call[name] = statistics.median(calls)
        counted = {part: median_total(part) for part in ("text encoders", "VAE encode", "transformer", "VAE decode")}
        rest = statistics.median(
            total - sum(sum(values) for values in run.values()) for total, run in zip(seconds[name], runs)
        )
        print(
            f"| {name} | {counted['text encoders']:.3f} | {counted['VAE encode']:.3f} | "
            f"{len(calls) // len(runs)} x {per_call[name]:.3f} | {counted['transformer']:.3f} | "
            f"{counted['VAE decode']:.3f} | {rest:.3f} |"
        )
    ours, theirs = jobs
    print(f"\ntransformer call ratio inpaintkit/diffusers (median call): {per_call[ours] / per_call[theirs]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("tiny", "sd15", *SDXL_ARCHES, *FLUX_ARCHES), default="tiny")
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
    parser.add_argument(
        "--flux-blocks",
        type=int,
        nargs=2,
        default=(1, 2),
        metavar=("DOUBLE", "SINGLE"),
        help="--arch flux: the transformer's double- and single-stream blocks (FLUX.1 has 19 and 38)",
    )
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "inpaintkit-bench")
    arguments = parser.parse_args()

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    flux = arguments.arch in FLUX_ARCHES
    if flux and "native" not in arguments.methods:
        parser.error("the Flux arches are FLUX.1 Fill models: only the `native` pair (against FluxFillPipeline) runs")
    if flux and arguments.compile:
        parser.error("--compile is not wired for the Flux arches")
    share = arguments.arch in SDXL_ARCHES and device.type == "cpu"  # see the module's docstring
    jobs: dict[str, Callable[[], Any]] = {}
    pairs: list[tuple[str, str]] = []  # (inpaintkit job, the diffusers job it is compared with)
    parts: dict[str, Parts] = {}  # Flux: the time inside each model, per job
    for method, channels in (("native", 9), ("blend", 4)):
        if method not in arguments.methods or (flux and method != "native"):
            continue
        folder = model_folder(arguments.model_dir, arguments.arch, channels, tuple(arguments.flux_blocks))
        inpainter = Inpainter.from_pretrained(folder, device=arguments.device, dtype=arguments.dtype)
        components = inpainter.components
        size = arguments.size or inpainter.capabilities.native_size
        dtype = components.dtype
        if flux:
            pipeline, jobs["diffusers FluxFillPipeline"] = flux_diffusers_job(
                folder, arguments.device, dtype, size, arguments.steps
            )
            jobs["inpaintkit native"] = flux_inpaintkit_job(inpainter, size, arguments.steps)
            pairs.append(("inpaintkit native", "diffusers FluxFillPipeline"))
            for name, modules in (
                ("inpaintkit native", flux_parts(components.unet, components.text_encoder,
                                                 components.text_encoder_2, components.vae)),
                ("diffusers FluxFillPipeline", flux_parts(pipeline.transformer, pipeline.text_encoder,
                                                          pipeline.text_encoder_2, pipeline.vae)),
            ):  # fmt: skip
                parts[name] = Parts(device)
                parts[name].watch(modules)
            continue
        jobs[f"inpaintkit {method}"] = inpaintkit_job(inpainter, method, size, arguments.steps)
        theirs = f"diffusers ({channels}-channel UNet)"
        jobs[theirs] = diffusers_job(
            folder, arguments.device, components.dtype, size, arguments.steps, components if share else None
        )
        pairs.append((f"inpaintkit {method}", theirs))
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
    outputs: dict[str, Any] = {}
    for name, job in jobs.items():
        # warm-up: first-call allocations, kernel selection and compilation are not what we measure
        first_call[name] = timed(lambda job=job, name=name: outputs.__setitem__(name, job()), device)[0]
        if name in parts:
            parts[name].finish_job()
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    memory: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(arguments.repeats):
        for name, job in jobs.items():  # alternate, so drift hits every job alike
            elapsed, peak = timed(job, device)
            seconds[name].append(elapsed)
            memory[name].append(peak)
            if name in parts:
                parts[name].finish_job()

    memory_kind = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS of the process"
    print(
        f"# bench_engine, {time.strftime('%Y-%m-%d')}, inpaintkit {__version__}, torch {torch.__version__}, "
        f"diffusers {__import__('diffusers').__version__}, {machine(device)}, {torch.get_num_threads()} CPU threads"
    )
    if flux:
        transformer = inpainter.components.unet
        blocks = f"{len(transformer.transformer_blocks)} double + {len(transformer.single_transformer_blocks)} single"
        print(
            f"# arch {arguments.arch} (random weights; transformer {blocks} blocks, "
            f"{sum(p.numel() for p in transformer.parameters()) / 1e6:.0f}M parameters), {size}x{size}, "
            f"{arguments.steps} steps, guidance {FLUX_GUIDANCE} (embedded, no CFG), strength 1, paste-back off, "
            f"{str(dtype).removeprefix('torch.')}, median of {arguments.repeats} after a warm-up"
        )
    else:
        print(
            f"# arch {arguments.arch} (random weights), {size}x{size}, {arguments.steps} steps, guidance {GUIDANCE} "
            f"(CFG), {str(dtype).removeprefix('torch.')}, median of {arguments.repeats} after a warm-up"
            + (", diffusers given inpaintkit's UNet and text encoders (shared weights)" if share else "")
        )
    step_column = "s/image / steps" if flux else "s per UNet step"
    print(
        f"| job | median s/image | ratio inpaintkit/diffusers | {step_column} | peak memory MB ({memory_kind}) | "
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
    if flux:
        print_flux_parts(parts, seconds)
        ours, theirs = pairs[0]
        print(f"outputs (the warm-up's, paste-back off): {compare_outputs(outputs[ours], outputs[theirs])}")
    if arguments.compile:
        name = "inpaintkit native --compile"
        print(
            f"\ncompile time (first call minus the median): {first_call[name] - statistics.median(seconds[name]):.1f} s"
        )


if __name__ == "__main__":
    main()
