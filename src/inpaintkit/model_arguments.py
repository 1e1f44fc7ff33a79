"""The model arguments every front end shares (run, outpaint, bench, metrics' loaders, info, ui, serve): the flags, the
Inpainter they name, and the warning for an untrained model.

cli.py builds its parser with them; the web UI, the service and bench load their model through them, so no front
end imports cli.py or another front end. Importing this module loads no torch (the parser must build at once).
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Callable, Optional

from .names import AUTO_TILING_PIXELS, DEFAULT_MODEL, DTYPE_CHOICES, TILING_MODES

if TYPE_CHECKING:
    from .catalog import ModelCatalog
    from .inpainter import Inpainter

log = logging.getLogger("inpaintkit")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub id, local diffusers folder or .safetensors/.ckpt file (default {DEFAULT_MODEL})",
    )
    group.add_argument(
        "--config", help="for a single-file model: a diffusers folder or hub id with the component configs"
    )
    group.add_argument(
        "--vae", help="replace the checkpoint's VAE: a diffusers VAE folder or hub id (e.g. an fp16-safe SDXL VAE)"
    )
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    group.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPE_CHOICES,
        help="auto: fp16 on CUDA; on a CPU bf16 where it has bf16 instructions (AVX-512 BF16, AMX), else fp32",
    )
    group.add_argument(
        "--transformer",
        metavar="FILE_OR_FOLDER",
        help="replace a Flux or SD 3 model's transformer: a .gguf file (quantized, e.g. Q8_0/Q4_K), a .safetensors "
        "file or a diffusers folder (e.g. saved in NF4 with bitsandbytes: CUDA only); the rest comes from --model",
    )
    group.add_argument(
        "--loras-dir",
        metavar="DIR",
        help="a folder of LoRA .safetensors files: jobs name their LoRAs by file name in it (ui and serve: only those)",
    )
    group.add_argument(
        "--latentpaint-weights",
        metavar="FILE",
        help="a trained LatentPaint propagation module for this model (inpaintkit train-latentpaint)",
    )


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """Speed and memory options (acceleration.py); none changes pixels beyond float rounding except VAE tiling."""
    group = parser.add_argument_group("speed and memory")
    group.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet (the first image of each size compiles: slow once, faster after)",
    )
    group.add_argument(
        "--vae-tiling",
        default="auto",
        choices=TILING_MODES,
        help=f"decode/encode in tiles: auto = above {AUTO_TILING_PIXELS // 2**20} megapixel (recorded in the metadata)",
    )
    group.add_argument(
        "--offload",
        action="store_true",
        help="keep models in CPU memory and move each to the GPU while it runs (small GPUs; CUDA only)",
    )
    group.add_argument(
        "--fuse-qkv", action="store_true", help="fuse attention's query/key/value projections into one matmul"
    )
    # A flag of its own rather than a value for --offload: `--offload` takes none today, and an optional value would
    # swallow the positional argument after it (train-latentpaint --offload IMAGES); diffusers names the two apart.
    group.add_argument(
        "--sequential-offload",
        action="store_true",
        help="keep every layer in CPU memory and copy it to the GPU for its own call: the least GPU memory, much "
        "slower than --offload (very small GPUs; CUDA only)",
    )
    group.add_argument(
        "--fp8-weights",
        action="store_true",
        help="store the denoiser's weights in fp8 (e4m3), each layer upcast to --dtype for its call (norm and "
        "modulation layers stay in --dtype: FLUX.1's transformer 14 GiB instead of 22); pixels change slightly",
    )


def inpainter_from_arguments(arguments: argparse.Namespace) -> Inpainter:
    """Load the model the way the arguments say (model, device, dtype, config and the speed options)."""
    from .errors import InputError
    from .inpainter import Inpainter

    if getattr(arguments, "fuse_lora", False) and not arguments.loras:
        raise InputError("--fuse-lora merges the --lora weights into the model; give at least one --lora.")
    inpainter = Inpainter.from_pretrained(
        arguments.model,
        device=arguments.device,
        dtype=arguments.dtype,
        config=arguments.config,
        vae=arguments.vae,
        compile=arguments.compile,
        vae_tiling=arguments.vae_tiling,
        offload=arguments.offload,
        fuse_qkv=arguments.fuse_qkv,
        sequential_offload=getattr(arguments, "sequential_offload", False),
        fp8_weights=getattr(arguments, "fp8_weights", False),
        transformer=getattr(arguments, "transformer", None),
        latentpaint_weights=arguments.latentpaint_weights,
        lora_root=arguments.loras_dir,
        fuse_loras=tuple(arguments.loras) if getattr(arguments, "fuse_lora", False) else (),
    )
    preset = getattr(arguments, "preset", None)
    if preset and inpainter.components.family.flow_matching:  # said by its own name, not by a flag it set
        raise InputError(
            f"--preset {preset} is a recipe for an SD or SDXL few-step model; this "
            f"{inpainter.components.family.name} model is flow-matching: set --steps and --guidance instead."
        )
    return inpainter


def warn_if_untrained(inpainter: Inpainter, model) -> None:
    """Every front end says it once its own checks have passed (so a refused job stays one line)."""
    if inpainter.capabilities.untrained:
        log.warning("Model %s is UNTRAINED (random weights, made by make-tiny-model): its outputs are noise.", model)


def model_switching(
    arguments: argparse.Namespace,
) -> tuple[Optional[ModelCatalog], Optional[Callable[[str], Inpainter]]]:
    """What `ui` and `serve` may switch to (their --models-dir, and the Hugging Face cache's pipelines) and how a
    switched-to model loads; (None, None) without --models-dir. Checked before the start model loads."""
    from pathlib import Path

    from .catalog import ModelCatalog
    from .errors import InputError

    models_dir = getattr(arguments, "models_dir", None)
    if models_dir is None:
        return None, None
    if not Path(models_dir).is_dir():
        raise InputError(f"--models-dir {models_dir} is not a folder.")

    def load_other(source: str) -> Inpainter:
        """The start's device, dtype, speed options and --loras-dir; not what belongs to the start model alone (its
        --vae, --transformer, --config, --latentpaint-weights and fused LoRAs), unless the start model is the one
        coming back (a switch back, or the reload after a failed switch)."""
        if source == str(arguments.model):  # on a small card, the start's quantized --transformer above all
            start = inpainter_from_arguments(arguments)
            warn_if_untrained(start, source)
            return start
        own = {
            "model": source,
            "vae": None,
            "transformer": None,
            "config": None,
            "latentpaint_weights": None,
            "loras": [],
            "fuse_lora": False,
        }
        other = inpainter_from_arguments(argparse.Namespace(**{**vars(arguments), **own}))
        warn_if_untrained(other, source)
        return other

    return ModelCatalog(Path(models_dir), extra=(str(arguments.model),)), load_other
