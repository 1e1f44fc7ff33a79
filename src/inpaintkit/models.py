"""Loading a Stable Diffusion 1.x/2.x checkpoint and reading what it can do from its configs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .acceleration import Acceleration
from .devices import limit_cpu_threads, resolve_device, resolve_dtype
from .errors import InputError, first_line
from .names import DEFAULT_MODEL
from .quiet import quiet_libraries
from .tiny import is_untrained

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Capabilities:
    """What a checkpoint can do, read from its configs."""

    unet_in_channels: int  # 9 = dedicated inpainting UNet, 4 = ordinary text-to-image UNet
    prediction_type: str  # "epsilon" (SD 1.x, 2.x base) or "v_prediction" (SD 2.x 768)
    vae_scaling_factor: float
    vae_scale_factor: int  # pixels per latent cell along each side
    native_size: int  # the resolution the UNet was built for, in pixels
    untrained: bool  # written by `inpaintkit make-tiny-model`

    @property
    def inpainting_unet(self) -> bool:
        return self.unet_in_channels == 9

    def describe(self) -> dict[str, Any]:
        return {
            "unet_in_channels": self.unet_in_channels,
            "inpainting_unet": self.inpainting_unet,
            "prediction_type": self.prediction_type,
            "vae_scaling_factor": self.vae_scaling_factor,
            "vae_scale_factor": self.vae_scale_factor,
            "native_size": self.native_size,
            "untrained": self.untrained,
        }


@dataclass
class Components:
    """The loaded parts of a model, on one device and dtype."""

    name: str
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    capabilities: Capabilities
    acceleration: Acceleration = field(default_factory=Acceleration)  # set by acceleration.accelerate


def load_components(
    model: str | Path = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    config: str | Path | None = None,
) -> Components:
    """Load a hub id, a local diffusers folder or a single .safetensors/.ckpt file.

    `config` (a diffusers folder or hub id) supplies the component configs for a single file,
    which diffusers would otherwise fetch from the hub.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if torch_device.type == "cpu":
        limit_cpu_threads()
    with quiet_libraries():
        pipeline = _load_pipeline(str(model), torch_dtype, config)
    capabilities = read_capabilities(pipeline, str(model))
    for part in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
        part.to(torch_device)
        part.requires_grad_(False)
    return Components(
        name=str(model),
        unet=pipeline.unet,
        vae=pipeline.vae,
        text_encoder=pipeline.text_encoder,
        tokenizer=pipeline.tokenizer,
        scheduler_config=dict(pipeline.scheduler.config),
        device=torch_device,
        dtype=torch_dtype,
        capabilities=capabilities,
    )


def _load_pipeline(model: str, dtype: torch.dtype, config: str | Path | None):
    from diffusers import StableDiffusionInpaintPipeline

    no_extras = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    path = Path(model).expanduser()
    if path.is_file():
        return _load_single_file(path, dtype, config, no_extras)
    if path.is_dir():
        _check_diffusers_folder(path)
        return _call_loader(model, StableDiffusionInpaintPipeline.from_pretrained, str(path), dtype=dtype, **no_extras)
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES or model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        raise InputError(f"Model '{model}' is neither an existing file or folder nor a Hugging Face hub id.")
    return _call_loader(model, StableDiffusionInpaintPipeline.from_pretrained, model, dtype=dtype, **no_extras)


def _load_single_file(path: Path, dtype: torch.dtype, config: str | Path | None, extras: dict):
    """An original (LDM) Stable Diffusion checkpoint. Offline, `config` must name a local diffusers folder."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise InputError(
            f"Model file {path} is not a .safetensors or .ckpt checkpoint; pass one of those or a diffusers folder."
        )
    kwargs = dict(dtype=dtype, **extras)
    if config is not None and Path(config).is_dir():
        config_folder = Path(config)
        _check_diffusers_folder(config_folder)
        kwargs.update(config=str(config_folder), local_files_only=True)
        # diffusers builds the UNet from the config folder; the checkpoint says whether it is a 9-channel one.
        in_channels = _checkpoint_unet_in_channels(path)
        folder_in_channels = json.loads((config_folder / "unet" / "config.json").read_text(encoding="utf-8"))[
            "in_channels"
        ]
        if in_channels is not None and in_channels != folder_in_channels:
            kwargs["unet"] = _call_loader(
                str(path),
                UNet2DConditionModel.from_single_file,
                str(path),
                config=str(config_folder),
                subfolder="unet",
                in_channels=in_channels,
                local_files_only=True,
                dtype=dtype,
            )
    elif config is not None and Path(config).exists():
        raise InputError(
            f"--config {config} is a file; give a diffusers folder (or a hub id) with the component configs."
        )
    elif config is not None:
        kwargs["config"] = str(config)
    return _call_loader(str(path), StableDiffusionInpaintPipeline.from_single_file, str(path), **kwargs)


def _check_tokenizer_files(folder: Path) -> None:
    """Without them transformers silently invents a useless 2-token tokenizer (or fails deep inside)."""
    tokenizer = folder / "tokenizer"
    if (
        not ((tokenizer / "vocab.json").is_file() and (tokenizer / "merges.txt").is_file())
        and not (tokenizer / "tokenizer.json").is_file()
    ):
        raise InputError(f"Folder {folder} has no CLIP tokenizer files (tokenizer/vocab.json and merges.txt).")


def _checkpoint_unet_in_channels(path: Path) -> int | None:
    """The UNet's input channels, read from the first convolution's weight shape in an LDM checkpoint."""
    key = "model.diffusion_model.input_blocks.0.0.weight"
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return handle.get_slice(key).get_shape()[1] if key in handle.keys() else None
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        state_dict = checkpoint.get("state_dict", checkpoint)
        return state_dict[key].shape[1] if key in state_dict else None
    except Exception:  # unreadable: diffusers' own loader will name the problem
        return None


def _check_diffusers_folder(path: Path) -> None:
    index_path = path / "model_index.json"
    if not index_path.is_file():
        raise InputError(
            f"Model folder {path} is not a diffusers model (it has no model_index.json); pass a diffusers folder, "
            "a hub id or a .safetensors/.ckpt file."
        )
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"Model folder {path} has an unreadable model_index.json ({error}).") from None
    if "text_encoder_2" in index:
        raise InputError(
            f"Model folder {path} is an SDXL-style model (two text encoders); only SD 1.x/2.x are supported."
        )
    missing = [part for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (path / part).is_dir()]
    if missing:
        raise InputError(
            f"Model folder {path} lacks the component folder(s) {', '.join(missing)} that a Stable Diffusion model has."
        )
    _check_tokenizer_files(path)


def _call_loader(model: str, loader, *args, **kwargs):
    """Call a diffusers loader; turn what can go wrong into one sentence naming the model and what to do."""
    try:
        return loader(*args, **kwargs)
    except InputError:
        raise
    except Exception as error:  # diffusers raises OSError, ValueError, KeyError, safetensors errors...
        raise InputError(_loading_failure(model, error)) from None


def _loading_failure(model: str, error: Exception) -> str:
    from huggingface_hub.errors import LocalEntryNotFoundError

    text = str(error)
    if (
        isinstance(error, LocalEntryNotFoundError)
        or "not fully cached" in text
        or "outgoing traffic has been disabled" in text
        or "offline" in text.lower()
    ):
        if Path(model).suffix.lower() in SINGLE_FILE_SUFFIXES:
            return (
                f"Single-file model {model} needs its component configs from the hub, which cannot be reached; "
                "pass --config with a local diffusers folder of the same architecture."
            )
        head = Path(model).parts[0]
        if Path(head).is_dir():  # probably a mistyped local path rather than a hub id
            return (
                f"Model '{model}' is neither a folder here (there is a {head}/, but no {model}) "
                "nor a cached hub model; check the path."
            )
        return (
            f"Model '{model}' is not in the local Hugging Face cache and the hub cannot be reached; "
            f"download it on a connected machine (hf download {model}) or pass a local folder or .safetensors file "
            "with --model."
        )
    return f"Could not load model '{model}': {first_line(error)}."


def read_capabilities(pipeline, model: str) -> Capabilities:
    """Read the checkpoint's abilities from its configs; refuse what the engine cannot run."""
    unet_config, vae_config = pipeline.unet.config, pipeline.vae.config
    in_channels = int(unet_config.in_channels)
    if in_channels not in (4, 9):
        raise InputError(
            f"Model '{model}' has a UNet with {in_channels} input channels; only 4 (ordinary) or 9 (inpainting) are "
            "supported."
        )
    if getattr(unet_config, "time_cond_proj_dim", None) is not None:
        raise InputError(f"Model '{model}' is a guidance-distilled (LCM-style) UNet, which is not supported yet.")
    vae_scale_factor = 2 ** (len(vae_config.block_out_channels) - 1)
    sample_size = unet_config.sample_size
    sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
    return Capabilities(
        unet_in_channels=in_channels,
        prediction_type=str(pipeline.scheduler.config.get("prediction_type", "epsilon")),
        vae_scaling_factor=float(vae_config.scaling_factor),
        vae_scale_factor=vae_scale_factor,
        native_size=int(sample_size) * vae_scale_factor,
        untrained=Path(model).expanduser().is_dir() and is_untrained(Path(model).expanduser()),
    )
