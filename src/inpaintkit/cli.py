"""`inpaintkit` command line: a thin layer over Inpainter. User errors end with exit code 2 and one line.

Building the parser must not import torch or diffusers (seconds): `--help` and argument errors answer at once.
Its choices and defaults come from light modules (names.py, schedulers, fill, ...); each command imports the
heavy parts it needs when it runs. tests/test_cli_startup.py checks this.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from . import __version__
from .errors import Cancelled, InputError, first_line
from .method_options import OPTIONS as METHOD_OPTIONS
from .model_arguments import add_model_arguments, add_speed_arguments, inpainter_from_arguments, warn_if_untrained
from .names import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_SEED,
    FILLS,
    FUSE_BLOCKS,
    KID_FEATURES,
    MAX_BATCH_IMAGES,
    METHOD_NAMES,
    METHOD_SUMMARIES,
    PIPE_IMAGES,
    PIPE_MASKS,
    TINY_FAMILIES,
)
from .presets import PRESET_NAMES
from .schedulers import SCHEDULER_NAMES, SPACINGS

if TYPE_CHECKING:
    from .settings import InpaintSettings

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
log = logging.getLogger("inpaintkit")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def batch_size(text: str) -> int:
    value = positive_int(text)
    if value > MAX_BATCH_IMAGES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BATCH_IMAGES}, got {value}")
    return value


def positive_number(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="inpaintkit", description="Text-guided image inpainting with latent diffusion models.")
    parser.add_argument("--version", action="version", version=f"inpaintkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    run = commands.add_parser(
        "run", help="inpaint an image", description="Repaint the masked region of an image to follow a prompt."
    )
    inputs = run.add_argument_group("inputs")
    inputs.add_argument("--image", required=True, type=Path, help="the image (any size; EXIF orientation is applied)")
    inputs.add_argument(
        "--mask", type=Path, help="white = repaint; omit to use the image's alpha (transparent = repaint)"
    )
    add_job_arguments(run)

    outpaint = commands.add_parser(
        "outpaint",
        help="extend an image beyond its borders",
        description="Grow the canvas and paint the new area to follow a prompt.",
    )
    inputs = outpaint.add_argument_group("inputs")
    inputs.add_argument("--image", required=True, type=Path, help="the image to extend")
    for side in ("left", "right", "top", "bottom"):
        inputs.add_argument(f"--{side}", type=int, default=0, metavar="PX", help=f"pixels to add on the {side}")
    inputs.add_argument(
        "--expand", type=int, metavar="PX", help="pixels to add on every side (adds to the per-side values)"
    )
    add_job_arguments(outpaint)

    tiny = commands.add_parser("make-tiny-model", help="write a small UNTRAINED model for offline smoke tests")
    tiny.add_argument("folder", type=Path, help="the folder to write (must not exist or be empty)")
    tiny.add_argument(
        "--channels",
        type=int,
        choices=(9, 4),
        help="9 = an inpainting model (SD's 9-channel UNet, SD 3's 33-channel transformer), 4 = an ordinary one "
        "(default: inpainting, except for flux; flux-fill is always inpainting)",
    )
    tiny.add_argument(
        "--prediction-type", choices=("epsilon", "v_prediction"), help="SD and SDXL only (default epsilon)"
    )
    tiny.add_argument(
        "--family",
        choices=TINY_FAMILIES,
        default="sd",
        help="sd (SD 1.x layout, PNDM), sdxl (two text encoders), sd3 (CLIP-L, CLIP-G, T5; flow), flux (T5 + CLIP; "
        "flow, guidance as an input) or flux-fill",
    )

    train = commands.add_parser(
        "train-latentpaint",
        help="train LatentPaint's propagation module for a model (--method latentpaint --latentpaint-weights FILE)",
        description=(
            "Train only LatentPaint's small propagation module, the model frozen, on random square crops of the "
            "images with random box masks; write it as a .safetensors file for --latentpaint-weights."
        ),
    )
    train.add_argument("images", type=Path, help="a folder of training images (.png, .jpg, .jpeg, .webp)")
    train.add_argument("--out", required=True, type=Path, help="the .safetensors file to write")
    train.add_argument("--steps", type=positive_int, default=1000, help="optimiser steps (default 1000)")
    train.add_argument("--batch-size", type=positive_int, default=1, help="images per step (default 1)")
    train.add_argument("--learning-rate", type=positive_number, default=1e-4, help="AdamW's (default 1e-4)")
    train.add_argument("--size", type=positive_int, help="crop side in pixels (default: the model's native size)")
    train.add_argument("--seed", type=int, default=0, help="crops, masks, timesteps and noise (default 0)")
    train.add_argument(
        "--fuse-blocks",
        choices=[blocks for blocks in FUSE_BLOCKS if blocks != "none"],
        default="all",
        help="the blocks to train a module for (default all: down, mid and up)",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_model_arguments(train)
    add_speed_arguments(train)

    bench = commands.add_parser(
        "bench",
        help="run several methods over a dataset and score them",
        description="Inpaint every sample with every method (same seed and settings), then score and report.",
    )
    bench.add_argument(
        "--pipeline",
        "--method",
        dest="pipeline",
        required=True,
        metavar="METHODS",
        help=f"comma-separated methods to compare, from: {', '.join(METHOD_SUMMARIES)}",
    )
    bench.add_argument(
        "--dst",
        required=True,
        type=Path,
        help="results folder: DST/METHOD/NAME.png, metrics.csv, summary.json, report.md, charts/, grids/",
    )
    bench.add_argument(
        "--metric", action="store_true", help="score the outputs (else only generate them, with grids and the report)"
    )
    bench.add_argument(
        "--overwrite",
        action="store_true",
        help="make every output again (by default a re-run resumes, skipping finished outputs)",
    )
    cluster = bench.add_argument_group("cluster (pip install 'inpaintkit[cluster]')")
    cluster.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="make the outputs on a Ray cluster: local (start one on this machine), auto or ray://HOST:10001 (join "
        "one; SRC and DST on a shared file system); scored here, with the same files as without --ray",
    )
    cluster.add_argument(
        "--ray-workers",
        type=positive_int,
        metavar="N",
        help="Ray actors making outputs, each with its own model (default: one per GPU of the cluster, or 2 on CPU)",
    )
    add_evaluation_arguments(bench)
    add_model_arguments(bench)
    add_speed_arguments(bench)
    add_settings_arguments(bench, seed_help=f"seed for every sample and method (default {DEFAULT_SEED})")

    metrics = commands.add_parser(
        "metrics",
        help="score existing outputs of any tool",
        description="Score predictions (PRED/METHOD/NAME.png, or PRED/NAME.png) against a dataset.",
    )
    metrics.add_argument(
        "--pred",
        required=True,
        type=Path,
        help="the predictions: PRED/METHOD/NAME.png for several methods, PRED/NAME.png for one",
    )
    metrics.add_argument(
        "--method", help="comma-separated method folders to score (default: every subfolder of --pred with images)"
    )
    metrics.add_argument(
        "--dst", type=Path, help="where metrics.csv, summary.json, report.md, charts/ and grids/ go (default: --pred)"
    )
    add_evaluation_arguments(metrics)
    metrics.add_argument(
        "--device",
        default="auto",
        help="where CLIP and the KID features run: auto (a CUDA GPU if there is one), cpu, cuda, cuda:N",
    )

    info = commands.add_parser("info", help="print what a model can do, read from its configs")
    add_model_arguments(info)

    # -- web UI (issue 6): arguments here, the app in ui.py ------------------------------------
    ui = commands.add_parser(
        "ui",
        help="open the web UI (paint the mask in the browser)",
        description="A Gradio app: upload an image, paint the mask, type a prompt, Run.",
    )
    add_model_arguments(ui)
    add_speed_arguments(ui)
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=port_number, default=7860, help="port (default 7860)")
    ui.add_argument(
        "--models-dir",
        metavar="DIR",
        help="checkpoints the Model dropdown offers (diffusers folders, .safetensors/.ckpt files), beside the local "
        "Hugging Face cache's pipelines",
    )
    ui.add_argument(
        "--max-queue",
        type=positive_int,
        default=8,
        metavar="N",
        help="jobs that may wait while one runs; more get 'busy, try again' (default 8)",
    )
    ui.add_argument(
        "--max-file-size", type=positive_int, default=50, metavar="MB", help="largest upload in megabytes (default 50)"
    )
    ui.add_argument(
        "--max-session-uploads",
        type=positive_int,
        default=1000,
        metavar="N",
        help="uploads (requests to the upload route) one browser session may make in any 2 hours (default 1000)",
    )
    ui.add_argument(
        "--max-session-mb",
        type=positive_int,
        default=2000,
        metavar="MB",
        help="megabytes one browser session may upload in any 2 hours (default 2000)",
    )
    # -- end web UI --

    # -- HTTP service (issue 7): arguments here, the app in server.py ---------------------------
    serve = commands.add_parser(
        "serve",
        help="run the HTTP inpainting service",
        description="A FastAPI service: POST /v1/inpaint with an image, a mask and settings.",
    )
    add_model_arguments(serve)
    add_speed_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    from .server.config import MIB, ServiceConfig  # the limits' defaults only: no web library is imported

    limits = serve.add_argument_group("limits")
    limits.add_argument(
        "--max-queue",
        type=int,
        default=ServiceConfig.max_queue,
        metavar="N",
        help=f"jobs that may wait for the model; one more is answered 429 (default {ServiceConfig.max_queue})",
    )
    limits.add_argument(
        "--max-pixels",
        type=int,
        default=ServiceConfig.max_pixels,
        metavar="N",
        help=(
            "largest image or mask, in pixels, read from its header before decoding (default "
            f"{ServiceConfig.max_pixels:,})"
        ),
    )
    limits.add_argument(
        "--max-body",
        type=positive_number,
        default=ServiceConfig.max_body / MIB,
        metavar="MIB",
        help=f"largest request body in MiB (default {ServiceConfig.max_body / MIB:g})",
    )
    limits.add_argument(
        "--max-images",
        type=int,
        default=ServiceConfig.max_images,
        metavar="N",
        help=f"largest num_images per request (default {ServiceConfig.max_images})",
    )
    limits.add_argument(
        "--max-steps",
        type=int,
        default=ServiceConfig.max_steps,
        metavar="N",
        help=(
            "largest denoiser (UNet) evaluations per request, over all its images, RePaint's revisits included "
            f"(default {ServiceConfig.max_steps})"
        ),
    )
    limits.add_argument(
        "--timeout",
        type=positive_number,
        default=ServiceConfig.timeout,
        metavar="S",
        help=(
            "seconds a request may take in all; then its job is cancelled between steps and it gets 504 (default "
            f"{ServiceConfig.timeout:g})"
        ),
    )
    serve.add_argument(
        "--api-key",
        help=(
            "require this key (X-API-Key header or Authorization: Bearer); default: the INPAINTKIT_API_KEY environment "
            "variable, else none"
        ),
    )
    serve.add_argument(
        "--models-dir",
        metavar="DIR",
        help="checkpoints clients may switch to (diffusers folders and .safetensors/.ckpt files), beside the local "
        "Hugging Face cache's pipelines: POST /v1/model, or A1111's options",
    )
    serve.add_argument(
        "--keep-models",
        type=positive_int,
        default=1,
        metavar="N",
        help="models kept in memory across switches, the loaded one included (default 1: the old one is freed first)",
    )
    serve.add_argument(
        "--api-auth",
        metavar="USER:PASS[,USER:PASS]",
        help="also accept HTTP Basic with these credentials on the AUTOMATIC1111 routes (/sdapi/v1/*), as A1111 does",
    )
    serve.add_argument(
        "--cors-allow-origins",
        metavar="ORIGINS",
        help="comma-separated origins a browser client may call from (e.g. openOutpaint served elsewhere)",
    )
    # -- end HTTP service --
    return parser


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags shared by run and outpaint; their names are InpaintSettings' fields."""
    parser.add_argument("--prompt", default="", help="what to paint in the masked region")
    add_model_arguments(parser)
    add_speed_arguments(parser)
    generation = add_settings_arguments(
        parser, seed_help="random seed (default: random, printed and stored); image k uses seed + k"
    )
    methods_help = "; ".join(f"{name}: {summary.rstrip('.')}" for name, summary in METHOD_SUMMARIES.items())
    generation.add_argument(
        "--method",
        default="auto",
        choices=METHOD_NAMES,
        help=f"auto picks native for 9-channel UNets, blend otherwise ({methods_help})",
    )
    generation.add_argument("--num-images", type=int, default=1, help="how many images to make (default 1)")
    generation.add_argument(
        "--batch-size",
        type=batch_size,
        default=4,
        help=f"images per UNet batch, at most {MAX_BATCH_IMAGES}; each batch is saved as it finishes (default 4)",
    )
    outputs = parser.add_argument_group("output")
    outputs.add_argument(
        "--output",
        required=True,
        help="a .png file, or a folder (ending in / it is created); in a folder images are named NAME-SEED.png",
    )
    outputs.add_argument("--overwrite", action="store_true", help="replace existing output files")
    outputs.add_argument("--quiet", action="store_true", help="no progress bar or messages, only errors")
    parser.add_argument(
        "--fuse-lora",
        action="store_true",
        help="merge the --lora weights into the model once, for every image of this run (faster UNet calls)",
    )


def add_settings_arguments(parser: argparse.ArgumentParser, seed_help: str) -> argparse._ArgumentGroup:
    """The settings of one job (InpaintSettings' fields) that run, outpaint and bench share; returns the generation
    group.
    """
    parser.add_argument("--negative-prompt", default="", help="what to steer away from")
    generation = parser.add_argument_group("generation")
    generation.add_argument(
        "--guidance",
        type=float,
        help="guidance scale (default: the model family's, 7.5 SD/SDXL, 7 SD 3, 3.5 Flux, 30 Flux Fill; <= 1 turns "
        "classifier-free guidance off; Flux takes it as an input, with no extra pass)",
    )
    generation.add_argument(
        "--true-cfg",
        type=float,
        help="Flux only: classifier-free guidance with --negative-prompt at this scale, above 1 (a second pass per "
        "step; default off)",
    )
    generation.add_argument("--steps", type=int, help="denoising steps (default 50)")
    generation.add_argument(
        "--strength", type=float, default=1.0, help="how far to noise the masked region, in (0, 1] (default 1)"
    )
    generation.add_argument("--seed", type=int, help=seed_help)
    generation.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="sampler (default: the model's own)")
    generation.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="a few-step recipe for what you left at its default: steps, guidance, scheduler, spacing (see README)",
    )
    generation.add_argument(
        "--spacing",
        choices=SPACINGS,
        help="timestep spacing (default: the model's config; trailing for Lightning, Hyper-SD and Turbo models)",
    )
    generation.add_argument(
        "--lora",
        dest="loras",
        action="append",
        default=[],
        metavar="SOURCE[:WEIGHT]",
        help="a LoRA (.safetensors file, folder or hub id; diffusers or Kohya/A1111 layout) and its weight (default "
        "1); repeat for several",
    )
    masking = parser.add_argument_group("mask, crop and finishing")
    masking.add_argument(
        "--mask-grow", type=int, default=0, metavar="PX", help="dilate the mask by PX pixels (negative erodes)"
    )
    masking.add_argument(
        "--mask-blur", type=int, default=0, metavar="PX", help="feather the paste-back over PX pixels outside the mask"
    )
    masking.add_argument(
        "--no-paste-back", dest="paste_back", action="store_false", help="keep the decoded pixels outside the mask too"
    )
    masking.add_argument(
        "--crop-padding",
        type=int,
        metavar="PX",
        help="inpaint only the mask's window plus PX pixels, at the model's native size",
    )
    masking.add_argument(
        "--fill",
        default="original",
        choices=FILLS,
        help="what the masked area starts as before noising (matters for strength < 1)",
    )
    masking.add_argument(
        "--color-match", action="store_true", help="match the new region's colour statistics to the pixels around it"
    )
    options = parser.add_argument_group("method options (each belongs to one method; unset = the method's default)")
    for option in METHOD_OPTIONS:  # declared once, in method_options.py
        options.add_argument(
            option.flag,
            type=option.kind,
            choices=option.choices or None,
            metavar=option.metavar,
            help=f"{option.method}: {option.help} (default {option.default})",
        )
    return generation


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the samples come from, and which networks the learned metrics use."""
    source = parser.add_argument_group("samples")
    source.add_argument(
        "--src",
        required=True,
        help=(
            "a folder (NAME.png + NAME.mask.png + NAME.txt [+ NAME.gt.png]), a prompts.jsonl/.csv listing, or "
            "pipe:SPLIT (the PIPE dataset)"
        ),
    )
    source.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N samples")
    source.add_argument(
        "--pipe-images",
        default=PIPE_IMAGES,
        metavar="SOURCE",
        help=f"PIPE images: hub id, local dataset folder or parquet file (default {PIPE_IMAGES})",
    )
    source.add_argument(
        "--pipe-masks",
        default=PIPE_MASKS,
        metavar="SOURCE",
        help=f"PIPE masks: hub id, local dataset folder or parquet file (default {PIPE_MASKS})",
    )
    learned = parser.add_argument_group("learned metrics")
    learned.add_argument(
        "--clip-model",
        default=DEFAULT_CLIP_MODEL,
        help=f"CLIP model for the CLIP score: hub id or local folder (default {DEFAULT_CLIP_MODEL})",
    )
    learned.add_argument(
        "--kid-features",
        default="inception",
        choices=KID_FEATURES,
        help=(
            "KID feature extractor: inception (FID's Inception-v3; its weights, about 96 MB, are downloaded once) or "
            "clip (the --clip-model's image tower)"
        ),
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages, only errors")


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        configure_logging(quiet=getattr(arguments, "quiet", False))
        return COMMANDS[arguments.command](arguments)
    except InputError as error:
        print(f"inpaintkit: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Cancelled):
        print("inpaintkit: interrupted; images already written are kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        print(
            "inpaintkit: error: out of memory; lower --num-images, use --crop-padding, a smaller image or --dtype "
            "fp16.",
            file=sys.stderr,
        )
        return EXIT_USAGE


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, or torch's out-of-memory error (a RuntimeError), without importing torch to ask."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")  # torch's error can only come from a job that has imported torch
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


def configure_logging(quiet: bool) -> None:
    """Our warnings as 'inpaintkit: warning: ...' lines; the libraries' chatter and loading bars off."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.ERROR if quiet else logging.INFO)
    log.propagate = False
    from .quiet import NOISY_MODULES, silence_libraries

    warnings.filterwarnings("ignore", module=NOISY_MODULES)
    silence_libraries()  # for the whole command: nothing to restore


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"inpaintkit: {level}{record.getMessage()}"


def command_run(arguments: argparse.Namespace) -> int:
    from .io import load_image_and_mask

    # Everything that can be checked without the model is checked first, so no work is wasted.
    settings = settings_from_arguments(arguments).with_seed()
    pixels, mask = load_image_and_mask(arguments.image, arguments.mask)
    return run_job(arguments, settings, pixels, mask)


def command_outpaint(arguments: argparse.Namespace) -> int:
    from .io import open_image, to_rgb_array
    from .outpaint import expand_canvas

    settings = settings_from_arguments(arguments).with_seed()
    extra = arguments.expand or 0
    sides = {side: getattr(arguments, side) + extra for side in ("left", "right", "top", "bottom")}
    canvas, mask = expand_canvas(to_rgb_array(open_image(arguments.image, "image")), **sides)
    return run_job(arguments, settings, canvas, mask)


def run_job(arguments: argparse.Namespace, settings: InpaintSettings, pixels, mask) -> int:
    """Load the model, inpaint, write the outputs: the part run and outpaint share."""
    from .io import save_png

    targets = output_paths(arguments.output, arguments.image, settings.seeds(), arguments.overwrite)
    inpainter = inpainter_from_arguments(arguments)
    # A method the checkpoint or scheduler cannot run fails before any work; the check sees one batch's settings.
    inpainter.check(replace(settings, num_images=min(settings.num_images, arguments.batch_size)))
    warn_if_untrained(inpainter, arguments.model)
    if not arguments.quiet:
        log.info(
            "seed %d%s",
            settings.seed,
            f" (images use {settings.seed}..{settings.seed + settings.num_images - 1})"
            if settings.num_images > 1
            else "",
        )
    # Image k has its own generator (seed + k), so chunks give the same images as one batch would,
    # and each chunk is saved before the next starts: an interruption loses at most one chunk.
    for first in range(0, settings.num_images, arguments.batch_size):
        count = min(arguments.batch_size, settings.num_images - first)
        chunk = replace(settings, seed=settings.seed + first, num_images=count)
        with ProgressBar(enabled=not arguments.quiet) as on_step:
            images = inpainter.run(pixels, mask, chunk, callback=on_step)
        for image, target in zip(images, targets[first : first + count]):
            save_png(image, target, image.info["inpaintkit"], overwrite=arguments.overwrite)
            print(f"{target}\tseed {image.info['inpaintkit']['seed']}", flush=True)
    return 0


def settings_from_arguments(arguments: argparse.Namespace) -> InpaintSettings:
    """The run flags are named after InpaintSettings' fields, so the CLI cannot drift from the API."""
    from .lora_specs import missing_local_files, parse_loras
    from .presets import with_preset
    from .settings import InpaintSettings

    values = {field.name: getattr(arguments, field.name) for field in fields(InpaintSettings)}
    # A preset fills what was not given (those flags default to None); the settings' defaults fill the rest.
    values = with_preset(getattr(arguments, "preset", None), values)
    settings = InpaintSettings(**{**values, "loras": tuple(values["loras"])})  # fmt: skip
    missing_local_files(parse_loras(settings.loras), getattr(arguments, "loras_dir", None))  # before the model loads
    return settings


def output_paths(output_argument: str, image: Path, seeds: list[int], overwrite: bool) -> list[Path]:
    """Where each image goes: the file itself for one image, NAME-k.png for several, NAME-SEED.png in a folder."""
    if not output_argument.strip():
        raise InputError("The output path is empty; give a .png file or a folder.")
    try:
        return _output_paths(Path(output_argument), output_argument.endswith(("/", "\\")), image, seeds, overwrite)
    except OSError as error:  # e.g. a folder name longer than the file system allows (ENAMETOOLONG)
        raise InputError(f"Cannot use the output {output_argument} ({error.strerror or error}).") from None


def _output_paths(output: Path, is_folder: bool, image: Path, seeds: list[int], overwrite: bool) -> list[Path]:
    from .io import check_writable

    if is_folder and not output.exists():
        try:
            output.mkdir(parents=True)
        except OSError as error:
            raise InputError(f"Cannot create the output folder {output} ({error.strerror or error}).") from None
    if output.is_dir():
        folder = output
        targets = [folder / f"{image.stem}-{seed}.png" for seed in seeds]
    else:
        folder = output.parent
        if output.suffix.lower() != ".png":
            raise InputError(
                f"Output {output} must end in .png (the settings are stored in PNG metadata) or be a folder."
            )
        targets = (
            [output] if len(seeds) == 1 else [output.with_name(f"{output.stem}-{k + 1}.png") for k in range(len(seeds))]
        )
    if not folder.is_dir():
        raise InputError(f"Output folder {folder} does not exist.")
    check_writable(folder, [target.name for target in targets])
    existing = [str(target) for target in targets if target.exists()]
    if existing and not overwrite:
        raise InputError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass --overwrite to replace."
        )
    return targets


class ProgressBar:
    """A tqdm bar on stderr when it is a terminal; yields the per-step callback."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None

    def __enter__(self):
        return self.on_step

    def on_step(self, step: int, total: int, latents) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="denoising", unit="step", file=sys.stderr, leave=False)
        self.bar.update(1)

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()


def tiny_model_maker(arguments: argparse.Namespace):
    """The maker of the asked-for tiny model, its options checked against its family."""
    from .tiny import make_tiny_model, make_tiny_sdxl_model
    from .tiny_flow import make_tiny_flux, make_tiny_sd3

    family, channels, prediction = arguments.family, arguments.channels, arguments.prediction_type
    if family in ("sd3", "flux", "flux-fill") and prediction not in (None, "epsilon"):
        raise InputError(f"--prediction-type is for sd and sdxl; a {family} model is flow-matching.")
    if family == "flux" and channels == 9:
        raise InputError("A flux model is an ordinary one; make an inpainting Flux with --family flux-fill.")
    if family == "flux-fill" and channels == 4:
        raise InputError("A flux-fill model is an inpainting one; make an ordinary Flux with --family flux.")
    inpainting = channels != 4
    makers = {
        "sd": lambda folder: make_tiny_model(
            folder, unet_in_channels=9 if inpainting else 4, prediction_type=prediction or "epsilon"
        ),
        "sdxl": lambda folder: make_tiny_sdxl_model(
            folder, unet_in_channels=9 if inpainting else 4, prediction_type=prediction or "epsilon"
        ),
        "sd3": lambda folder: make_tiny_sd3(folder, inpainting=inpainting),
        "flux": lambda folder: make_tiny_flux(folder),
        "flux-fill": lambda folder: make_tiny_flux(folder, fill=True),
    }
    return makers[family]


def command_make_tiny_model(arguments: argparse.Namespace) -> int:
    from .tiny import UNTRAINED_NOTE

    folder = arguments.folder
    try:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise InputError(f"{folder} already exists and is not an empty folder.")
        folder.mkdir(parents=True, exist_ok=True)
        tiny_model_maker(arguments)(folder)
    except OSError as error:  # an unwritable place (/proc/x), a full disk, a name too long
        raise InputError(f"Cannot write the model to {folder} ({error.strerror or first_line(error)}).") from None
    print(f"{folder}\t{UNTRAINED_NOTE}")
    return 0


def command_train_latentpaint(arguments: argparse.Namespace) -> int:
    from .io import atomic_file, check_writable
    from .methods.feature_fusion import block_groups, unet_architecture
    from .propagation_training import check_training, train_propagation, training_images

    out = arguments.out
    if out.suffix != ".safetensors":
        raise InputError(f"--out {out}: the propagation module is written as a .safetensors file.")
    if arguments.latentpaint_weights is not None:
        raise InputError("train-latentpaint trains a new module; --latentpaint-weights (continuing one) is not used.")
    if out.exists() and not arguments.overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it.")
    images = training_images(arguments.images)
    check_writable(out.parent, [out.name])
    inpainter = inpainter_from_arguments(arguments)
    components = inpainter.components
    size = arguments.size or components.capabilities.native_size
    check_training(components, size, arguments.steps, arguments.batch_size, arguments.learning_rate)
    warn_if_untrained(inpainter, arguments.model)
    every = max(1, arguments.steps // 20)

    def report(step: int, loss: float) -> None:
        if step % every == 0 or step == arguments.steps:
            log.info("step %d/%d: masked loss %.5f", step, arguments.steps, loss)

    trained = train_propagation(
        components,
        images,
        steps=arguments.steps,
        batch_size=arguments.batch_size,
        learning_rate=arguments.learning_rate,
        size=size,
        seed=arguments.seed,
        blocks=block_groups(arguments.fuse_blocks),
        on_step=report,
    )
    if trained.steps == 0:
        print("inpaintkit: interrupted before the first step; nothing written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    with atomic_file(out) as handle:
        architecture = unet_architecture(components.unet)
        handle.write(trained.modules.to_bytes(str(arguments.model), trained.steps, architecture))
    print(f"{out}\tpropagation for {len(trained.modules.blocks)} blocks, {trained.steps} steps")
    if trained.interrupted:
        print(f"inpaintkit: interrupted after step {trained.steps}; what was trained is saved.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def command_info(arguments: argparse.Namespace) -> int:
    from .methods.feature_fusion import require_unet, unet_architecture
    from .methods.propagation import load_propagation
    from .models import load_components

    components = load_components(
        arguments.model, device=arguments.device, dtype=arguments.dtype, config=arguments.config, vae=arguments.vae
    )
    description = {
        "model": arguments.model,
        "vae": components.vae_name,
        **components.capabilities.describe(),
        "device": str(components.device),
        "dtype": str(components.dtype).removeprefix("torch."),
    }
    if arguments.latentpaint_weights is not None:  # checked against the model, as `run` would
        require_unet(components)
        weights = load_propagation(arguments.latentpaint_weights, unet_architecture(components.unet))
        description["latentpaint_weights"] = {"file": weights.source, "blocks": list(weights.channels_by_block)}
    print(json.dumps(description, indent=2))
    return 0


def command_bench(arguments: argparse.Namespace) -> int:
    from .evaluation.commands import command_bench  # imports torch: not at the top, where the parser is built

    if arguments.ray is None:
        return command_bench(arguments)
    from .evaluation.cluster import ray_cluster  # imports Ray only here

    with ray_cluster(arguments.ray, quiet=arguments.quiet):
        return command_bench(arguments)


def command_metrics(arguments: argparse.Namespace) -> int:
    from .evaluation.commands import command_metrics

    return command_metrics(arguments)


def command_ui(arguments: argparse.Namespace) -> int:
    from .ui import launch

    return launch(arguments)


def command_serve(arguments: argparse.Namespace) -> int:
    from .server import serve

    return serve(arguments)


COMMANDS = {
    "run": command_run,
    "outpaint": command_outpaint,
    "make-tiny-model": command_make_tiny_model,
    "train-latentpaint": command_train_latentpaint,
    "info": command_info,
    "bench": command_bench,
    "metrics": command_metrics,
    "ui": command_ui,
    "serve": command_serve,
}


if __name__ == "__main__":
    sys.exit(main())
