"""Few-step sampling (LCM, LCM-LoRA, TCD) against a standard 30-step CFG job: seconds per image as a ratio (issue 19).

    python benchmarks/bench_few_step.py --arch tiny --repeats 5 --threads 1
    python benchmarks/bench_few_step.py --arch sd15 --size 256 --repeats 2 --device cpu
    python benchmarks/bench_few_step.py --arch sdxl --size 256 --repeats 1 --device cpu
    python benchmarks/bench_few_step.py --arch sd15 --size 512 --repeats 5 --device cuda
    python benchmarks/bench_few_step.py --arch sdxl --size 1024 --repeats 5 --device cuda

In one process, on one random-weight model of the architecture (4-channel UNet, method `blend`), alternating job
by job:
  (a) the reference: 30 steps, guidance 7.5 (classifier-free guidance: one UNet call on batch 2 per step, so 60
      UNet evaluations), DPM++ 2M (one UNet call per step; the SD default, PNDM, makes steps + 1);
  (b) `--preset lcm-lora`: 4 steps, the LCM scheduler, guidance 1 (no CFG batch: 4 evaluations), which is how an
      LCM-LoRA runs on an ordinary UNet (the LoRA's own cost is not here: fused, it costs nothing per call);
  (c) `--preset tcd`: 4 steps, the TCD scheduler, guidance 1 (4 evaluations);
  (d) `--preset lcm` on an LCM-distilled UNet: the same UNet with `time_cond_proj_dim=256` (one extra 256-in linear
      layer for the guidance embedding; every other weight is shared with the reference's UNet, so it costs no
      second copy), 4 steps, guidance 8 given as an embedding (one call on batch 1 per step: 4 evaluations).
Same seed, image, mask, prompt and negative prompt for every job. The weights are random: what this measures is
the cost of the network calls and of the work around them (text encoding, VAE, scheduler), not image quality,
which only trained weights can show (the published references are printed under the table).

Each job first runs once at 2 steps (a warm-up: first-call allocations and kernel selection, for batch 1 and 2),
then `--repeats` times, the jobs alternating so that drift hits every job alike. Prints, per job: median seconds
per image, the ratio to the reference and its inverse (the speed-up), the UNet calls per image and the batch of
each call (counted with a forward pre-hook on the UNet during the first timed run), the UNet evaluations per
image (calls x batch) with the reference's evaluations divided by the job's (the speed-up if the UNet were all
the cost: 60 / 4 = 15x), and peak memory (RSS on CPU, torch.cuda.max_memory_allocated on GPU).
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
from inpaintkit.names import DTYPE_CHOICES  # noqa: E402
from inpaintkit.presets import PRESETS  # noqa: E402

PROMPT, NEGATIVE, SEED = "a red bicycle", "blurry", 0
REFERENCE = "30 steps, CFG 7.5, dpm++2m"
LCM_DISTILLED = "lcm (distilled UNet), 4 steps, guidance 8 embedded"
# job name -> the settings given to the Inpainter (the method is blend for all)
JOBS: dict[str, dict[str, Any]] = {
    REFERENCE: {"steps": 30, "guidance": 7.5, "scheduler": "dpm++2m"},
    "lcm-lora, 4 steps, guidance 1 (no CFG)": dict(PRESETS["lcm-lora"]),
    "tcd, 4 steps, guidance 1 (no CFG)": dict(PRESETS["tcd"]),
    LCM_DISTILLED: dict(PRESETS["lcm"]),
}
GUIDANCE_EMBEDDING_DIM = 256  # LCM-Dreamshaper-v7's and lcm-sdxl's time_cond_proj_dim

# What each few-step method's paper reports about quality, as found in the stored copies of the papers (see the
# RESULTS.md section for the pages each line was read from). Printed under every table.
REFERENCES = """\
Quality is not measured here: the weights are random, so only the cost per network call is. Published references
(numbers only where a stored copy of the source could be read; "no number found" otherwise):
- LCM (Luo et al. 2023, arXiv 2310.04378): distilled from SD with guidance w folded in; evaluated on
  LAION-5B-Aesthetics at 1, 2, 4 and 8 steps against DDIM, DPM-Solver(++) and Guided-Distill; the paper reports
  state-of-the-art few-step FID/CLIP there (a 768 px 2-4-step LCM in 32 A100 GPU hours). No number found.
- LCM-LoRA (Luo et al. 2023, arXiv 2311.05556): LCM distillation as a LoRA for SD 1.5, SSD-1B and SDXL, pluggable
  into fine-tuned models without training; a technical report. No number found.
- TCD (Zheng et al. 2024, arXiv 2402.19159): reports better image quality than LCM at low NFE and more detail than
  the teacher at high NFE. No number found.
- SDXL-Lightning (Lin et al. 2024, arXiv 2402.13929): progressive + adversarial distillation of SDXL, 1-8 steps at
  1024 px, reported as the new state of the art there. No number found.
- Hyper-SD (Ren et al. 2024, arXiv 2404.13686): 1-8 steps for SD 1.5 and SDXL; reports Hyper-SDXL above
  SDXL-Lightning by +0.68 CLIP score and +0.51 aesthetic score at 1 step.
- SDXL-Turbo / ADD (Sauer et al. 2023, arXiv 2311.17042): reports beating LCM and GANs at 1 step and reaching
  SDXL's quality in 4 steps (human preference studies). No number found.
- One third-party table with a single protocol (SIM, Luo et al. 2024, arXiv 2410.16794; aesthetic score /
  ImageReward / PickScore): SD 1.5 25 steps 5.26 / 0.18 / 0.217; SD1.5-LCM 4 steps 5.66 / -0.37 / 0.212;
  SD1.5-TCD 4 steps 5.45 / -0.15 / 0.214; SDXL 25 steps 5.54 / 0.87 / 0.229; SDXL-LCM 4 steps 5.42 / 0.48 / 0.224;
  SDXL-TCD 4 steps 5.42 / 0.67 / 0.226; SDXL-Lightning 4 steps 5.63 / 0.72 / 0.229; Hyper-SDXL 4 steps
  5.74 / 0.93 / 0.232; SDXL-Turbo 1 step 5.33 / 0.78 / 0.228.
"""


def job(inpainter: Inpainter, settings: dict[str, Any], size: int) -> Callable[[int | None], None]:
    image, mask = picture(size, size), centred_mask(size, size, size // 2)

    def run(steps: int | None = None) -> None:
        options = {**settings, "steps": steps or settings["steps"]}
        # A guidance-distilled UNet makes no unconditional pass: a negative prompt is refused there, not dropped.
        negative = "" if inpainter.capabilities.guidance_embedding_dim else NEGATIVE
        inpainter(image, mask, PROMPT, negative_prompt=negative, method="blend", seed=SEED, **options)

    return run


def lcm_distilled(inpainter: Inpainter) -> Inpainter:
    """The same model with an LCM-distilled UNet: the UNet's config with time_cond_proj_dim set, sharing every weight
    with the given UNet (built on the meta device, then given the same tensors) plus a random 256-in linear layer."""
    from diffusers import UNet2DConditionModel

    components = inpainter.components
    unet = components.unet
    config = {**unet.config, "time_cond_proj_dim": GUIDANCE_EMBEDDING_DIM}
    with torch.device("meta"):
        distilled = UNet2DConditionModel.from_config(config)
    missing, unexpected = distilled.load_state_dict(unet.state_dict(), strict=False, assign=True)
    assert not unexpected and all(name.startswith("time_embedding.cond_proj.") for name in missing), missing
    projection = distilled.time_embedding.cond_proj  # nn.Linear(256, time embedding width, bias=False)
    torch.manual_seed(0)
    distilled.time_embedding.cond_proj = torch.nn.Linear(
        projection.in_features, projection.out_features, bias=projection.bias is not None
    ).to(components.device, components.dtype)
    for name, tensor in (*distilled.named_parameters(), *distilled.named_buffers()):
        assert not tensor.is_meta, name
    distilled.eval().requires_grad_(False)
    capabilities = replace(components.capabilities, guidance_embedding_dim=GUIDANCE_EMBEDDING_DIM)
    return Inpainter(replace(components, unet=distilled, capabilities=capabilities))


class Calls:
    """The UNets' calls inside `counting`, by batch size, and each call's seconds (CUDA events on a GPU, so that the
    timing adds no host synchronisation inside the loop; read after the job)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.batches: Counter = Counter()
        self.spans: list[tuple[int, Any, Any]] = []  # (batch, start, end)

    def _now(self) -> Any:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def started(self, module, args, kwargs) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.batches[sample.shape[0]] += 1
        self.spans.append((sample.shape[0], self._now(), None))

    def ended(self, module, args, kwargs, output) -> None:
        batch, start, _ = self.spans[-1]
        self.spans[-1] = (batch, start, self._now())

    def seconds_per_call(self) -> dict[int, float]:
        """Median seconds of one call, by batch size."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        by_batch: dict[int, list[float]] = {}
        for batch, start, end in self.spans:
            elapsed = start.elapsed_time(end) / 1000 if self.device.type == "cuda" else end - start
            by_batch.setdefault(batch, []).append(elapsed)
        return {batch: statistics.median(values) for batch, values in sorted(by_batch.items())}


@contextlib.contextmanager
def counting(unets: list[torch.nn.Module], device: torch.device) -> Iterator[Calls]:
    """The UNets' calls inside (forward pre- and post-hooks: a few microseconds a call)."""
    calls = Calls(device)
    handles = [unet.register_forward_pre_hook(calls.started, with_kwargs=True) for unet in unets]
    handles += [unet.register_forward_hook(calls.ended, with_kwargs=True) for unet in unets]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("tiny", "sd15", "tiny-sdxl", "sdxl"), default="tiny")
    parser.add_argument("--size", type=int, help="image side in pixels (default: the model's native size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument(
        "--jobs", nargs="+", choices=tuple(JOBS)[1:], default=list(JOBS)[1:], help="the jobs beside the reference"
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
    distilled = lcm_distilled(inpainter) if LCM_DISTILLED in arguments.jobs else None
    jobs: dict[str, Callable[[int | None], None]] = {}
    for name in (REFERENCE, *arguments.jobs):
        jobs[name] = job(distilled if name == LCM_DISTILLED else inpainter, JOBS[name], size)
    unets = [components.unet] + ([distilled.components.unet] if distilled else [])

    # Warm-up: first-call allocations and kernel selection are not what we measure; 2 steps meet every shape.
    for run in jobs.values():
        run(2)
    calls: dict[str, Calls] = {}
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    memory: dict[str, list[float]] = {name: [] for name in jobs}
    for repeat in range(arguments.repeats):
        for name, run in jobs.items():  # alternate, so drift hits every job alike
            with counting(unets, device) if repeat == 0 else contextlib.nullcontext(Calls(device)) as counted:
                elapsed, peak = timed(run, device)
            calls.setdefault(name, counted)
            seconds[name].append(elapsed)
            memory[name].append(peak)
            print(f"# {name}: {elapsed:.3f} s", file=sys.stderr, flush=True)

    memory_kind = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS of the process"
    print(
        f"# bench_few_step, {time.strftime('%Y-%m-%d')}, inpaintkit {__version__}, torch {torch.__version__}, "
        f"diffusers {__import__('diffusers').__version__}, {machine(device)}, {torch.get_num_threads()} CPU threads"
    )
    print(
        f"# arch {arguments.arch} (random weights, 4-channel UNet, method blend), {size}x{size}, "
        f"{str(components.dtype).removeprefix('torch.')}, median of {arguments.repeats} after a 2-step warm-up"
    )
    print(
        "| job | median s/image | ratio to reference | speed-up | UNet calls per image (x batch) | s per UNet call "
        f"(batch) | UNet evaluations | evaluation ratio | peak memory MB ({memory_kind}) | every run (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    reference = statistics.median(seconds[REFERENCE])
    reference_evaluations = sum(batch * count for batch, count in calls[REFERENCE].batches.items())
    for name in jobs:
        median = statistics.median(seconds[name])
        counted = calls[name].batches
        batches = " + ".join(f"{count} x {batch}" for batch, count in sorted(counted.items()))
        per_call = ", ".join(f"x{batch}: {value:.3f}" for batch, value in calls[name].seconds_per_call().items())
        evaluations = sum(batch * count for batch, count in counted.items())
        runs = ", ".join(f"{value:.3f}" for value in seconds[name])
        print(
            f"| {name} | {median:.3f} | {median / reference:.3f} | {reference / median:.1f}x | {batches} | {per_call} "
            f"| {evaluations} | {reference_evaluations / evaluations:.1f}x | {max(memory[name]):.0f} | {runs} |"
        )
    print()
    print(REFERENCES, end="")


if __name__ == "__main__":
    main()
