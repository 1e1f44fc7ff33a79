"""Loading a model (hub id, diffusers folder or single checkpoint file) through its family's pipeline, and reading
what it can do from its configs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from .acceleration import Acceleration
from .devices import limit_cpu_threads, resolve_device, resolve_dtype
from .errors import InputError, first_line
from .names import DEFAULT_MODEL
from .quiet import quiet_libraries
from .tiny import is_untrained

if TYPE_CHECKING:
    from .families import Family

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# Builds the denoiser the pipeline gets instead of loading its own, from the family and the model (quantized.py:
# --transformer), so the replaced one is never read.
DenoiserLoader = Callable[["Family", str], Any]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Capabilities:
    """What a checkpoint can do, read from its configs."""

    family: str  # the model family's name (families/)
    # The denoiser's input channels per latent cell (a Flux transformer's packed tokens counted per cell): more than
    # the latents' for a dedicated inpainting model (SD's 9, SD 3's 33, Flux Fill's 96), else the latents' own.
    unet_in_channels: int
    prediction_type: str  # "epsilon" (SD 1.x, 2.x base), "v_prediction" (SD 2.x 768) or "flow" (SD 3, Flux)
    vae_scaling_factor: float
    vae_scale_factor: int  # pixels per latent cell along each side
    native_size: int  # the resolution the UNet was built for, in pixels
    untrained: bool  # written by `inpaintkit make-tiny-model`
    # A guidance-distilled UNet (LCM) takes the guidance scale as an embedding of this size instead of a CFG batch
    guidance_embedding_dim: Optional[int] = None
    latent_channels: int = 4  # the VAE's (16 for SD 3 and Flux)
    patch_size: int = 1  # latent cells per side of one denoiser token (2 for SD 3 and Flux)
    guidance_embedded: bool = False  # a guidance-distilled Flux transformer takes the guidance scale as an input

    @property
    def inpainting_unet(self) -> bool:
        """The denoiser takes the mask and the masked image's latents (a dedicated inpainting checkpoint)."""
        return self.unet_in_channels > self.latent_channels

    @property
    def spatial_multiple(self) -> int:
        """Image sides the denoiser can take are multiples of this many pixels."""
        return self.vae_scale_factor * self.patch_size

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "unet_in_channels": self.unet_in_channels,
            "inpainting_unet": self.inpainting_unet,
            "prediction_type": self.prediction_type,
            "vae_scaling_factor": self.vae_scaling_factor,
            "vae_scale_factor": self.vae_scale_factor,
            "native_size": self.native_size,
            "untrained": self.untrained,
            "guidance_embedding_dim": self.guidance_embedding_dim,
            "latent_channels": self.latent_channels,
            "spatial_multiple": self.spatial_multiple,
            "guidance_embedded": self.guidance_embedded,
        }


@dataclass
class Components:
    """The loaded parts of a model, on one device and dtype."""

    name: str
    family: Family  # how the prompt, image and denoiser are called
    unet: Any  # the denoising network: a UNet, or SD 3's / Flux's transformer
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    capabilities: Capabilities
    acceleration: Acceleration = field(default_factory=Acceleration)  # set by acceleration.accelerate
    text_encoder_2: Optional[Any] = None  # a second text encoder and its tokenizer (SDXL, SD 3, Flux's T5)
    tokenizer_2: Optional[Any] = None
    text_encoder_3: Optional[Any] = None  # a third (SD 3's T5)
    tokenizer_3: Optional[Any] = None
    pipeline_config: dict[str, Any] = field(default_factory=dict)  # the pipeline's own options (model_index.json)
    vae_name: Optional[str] = None  # the --vae that replaced the checkpoint's own VAE, if one did
    denoiser_name: Optional[str] = None  # the --transformer that replaced the model's own, if one did
    method_weights: dict[str, Any] = field(default_factory=dict)  # a method's trained parts, by method name

    def text_modules(self) -> dict[str, Any]:
        """The text encoders, by attribute name, in the family's order (an SD 3 model may come without T5)."""
        modules = {name: getattr(self, name) for name in self.family.text_encoders}
        return {name: module for name, module in modules.items() if module is not None}


def load_components(
    model: str | Path = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    config: str | Path | None = None,
    vae: str | Path | None = None,
    denoiser_loader: Optional[DenoiserLoader] = None,
) -> Components:
    """Load a hub id, a local diffusers folder or a single .safetensors/.ckpt file.

    `config` (a diffusers folder or hub id) supplies the component configs for a single file,
    which diffusers would otherwise fetch from the hub. `vae` (a diffusers VAE folder or hub id, or a model
    folder with a vae/ subfolder) replaces the checkpoint's VAE, e.g. a fixed fp16 SDXL VAE. `denoiser_loader`
    builds the denoiser in place of the model's own (a quantized transformer).
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if torch_device.type == "cpu":
        limit_cpu_threads()
    with quiet_libraries():
        family, pipeline = _load_pipeline(str(model), torch_dtype, config, denoiser_loader)
        if vae is not None:
            pipeline.vae = _replacement_vae(str(vae), torch_dtype, pipeline.vae)
    capabilities = read_capabilities(pipeline, str(model), family)
    text = {name: getattr(pipeline, name) for name in family.text_encoders}
    denoiser = getattr(pipeline, family.denoiser)
    for part in (denoiser, pipeline.vae, *(module for module in text.values() if module is not None)):
        part.to(torch_device)
        part.requires_grad_(False)
    vae_dtype = family.vae_dtype(pipeline.vae.config, torch_dtype)
    if pipeline.vae.dtype != vae_dtype:
        with quiet_libraries():
            pipeline.vae.to(dtype=vae_dtype)
    tokenizers = {name: getattr(pipeline, name) for name in family.tokenizers}
    return Components(
        name=str(model),
        family=family,
        unet=denoiser,
        vae=pipeline.vae,
        **text,
        **tokenizers,
        scheduler_config=dict(pipeline.scheduler.config),
        pipeline_config=dict(pipeline.config),
        vae_name=None if vae is None else str(vae),
        device=torch_device,
        dtype=torch_dtype,
        capabilities=capabilities,
    )


def _load_pipeline(
    model: str, dtype: torch.dtype, config: str | Path | None, denoiser_loader: Optional[DenoiserLoader] = None
) -> tuple[Family, Any]:
    """The model's family and its diffusers pipeline, loaded without the parts inpainting does not use."""
    path = Path(model).expanduser()
    if path.is_file():
        return _load_single_file(path, dtype, config, denoiser_loader)
    if path.is_dir():
        family = _check_diffusers_folder(path)
        parts = {**unused_parts(family), **_replaced_denoiser(family, model, denoiser_loader)}
        if "text_encoder_3" in family.text_encoders and not (path / "text_encoder_3").is_dir():
            parts.update(text_encoder_3=None, tokenizer_3=None)  # SD 3 saved without T5: zeros in its place
        return family, _call_loader(model, pipeline_class(family).from_pretrained, str(path), dtype=dtype, **parts)
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES or model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        raise InputError(f"Model '{model}' is neither an existing file or folder nor a Hugging Face hub id.")
    family = _hub_model_family(model)
    loader = pipeline_class(family).from_pretrained
    parts = {**unused_parts(family), **_replaced_denoiser(family, model, denoiser_loader)}
    return family, _call_loader(model, loader, model, dtype=dtype, **parts)


def _replaced_denoiser(family: Family, model: str, denoiser_loader: Optional[DenoiserLoader]) -> dict[str, Any]:
    """The pipeline argument that hands it a denoiser built elsewhere, if one is."""
    return {} if denoiser_loader is None else {family.denoiser: denoiser_loader(family, model)}


def unused_parts(family: Family) -> dict[str, Any]:
    """The optional pipeline parts inpainting does not use, so they are not loaded (Family.unused_parts)."""
    return dict(family.unused_parts)


def _replacement_vae(vae: str, dtype: torch.dtype, original):
    """A diffusers AutoencoderKL from a folder (its own, or a model's vae/ subfolder) or a hub id, checked against
    the checkpoint's VAE: the denoiser works on its latent channels."""
    from diffusers import AutoencoderKL

    path = Path(vae).expanduser()
    if path.is_file():
        raise InputError(f"--vae {vae} is a file; give a diffusers VAE folder (with config.json) or a hub id.")
    if path.is_dir():
        subfolder = "vae" if (path / "vae" / "config.json").is_file() else None
        if subfolder is None and not (path / "config.json").is_file():
            raise InputError(
                f"--vae {vae} has neither a config.json nor a vae/ subfolder; give a diffusers VAE folder."
            )
        replacement = _call_loader(
            vae, AutoencoderKL.from_pretrained, str(path), subfolder=subfolder, torch_dtype=dtype
        )
    elif _HUB_ID.match(vae):
        replacement = _call_loader(vae, AutoencoderKL.from_pretrained, vae, torch_dtype=dtype)
    else:
        raise InputError(f"--vae {vae} is neither an existing folder nor a Hugging Face hub id.")
    wanted, given = original.config.latent_channels, replacement.config.latent_channels
    if given != wanted:
        raise InputError(
            f"--vae {vae} has {given} latent channels but this model's denoiser works on {wanted}; give a VAE made "
            "for this model's family."
        )
    return replacement


def pipeline_class(family: Family):
    import diffusers

    return getattr(diffusers, family.pipeline)


def _hub_model_family(model: str) -> Family:
    """The family from the hub model's model_index.json (cached, or a small download); when it cannot be read,
    Stable Diffusion, whose loader then says in one sentence what is missing."""
    from huggingface_hub import hf_hub_download

    from .families import FAMILIES, family_of_pipeline

    try:
        index = json.loads(Path(hf_hub_download(model, "model_index.json")).read_text(encoding="utf-8"))
    except Exception:  # not cached and offline, no such repo, not a diffusers repo: the loader explains
        return FAMILIES["sd"]
    return family_of_pipeline(str(index.get("_class_name", "")), model)


def _load_single_file(
    path: Path, dtype: torch.dtype, config: str | Path | None, denoiser_loader: Optional[DenoiserLoader] = None
) -> tuple[Family, Any]:
    """An original-layout checkpoint, its family told from its keys. Offline, `config` must name a local diffusers
    folder of the same architecture."""
    from diffusers import UNet2DConditionModel

    from .families import family_of_checkpoint

    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise InputError(
            f"Model file {path} is not a .safetensors or .ckpt checkpoint; pass one of those or a diffusers folder."
        )
    shapes = _checkpoint_shapes(path)
    family = family_of_checkpoint(shapes, str(path))
    kwargs = dict(dtype=dtype, **unused_parts(family), **_replaced_denoiser(family, str(path), denoiser_loader))
    if config is not None and Path(config).is_dir():
        config_folder = Path(config)
        config_family = _check_diffusers_folder(config_folder)
        if config_family is not family:
            raise InputError(
                f"--config {config} is a {config_family.name} model but {path} is a {family.name} checkpoint; give "
                "a config folder of the same family."
            )
        kwargs.update(config=str(config_folder), local_files_only=True)
        # diffusers builds the UNet from the config folder; the checkpoint says whether it is a 9-channel one.
        in_channels = shapes[UNET_INPUT_KEY][1] if UNET_INPUT_KEY in shapes else None
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
    return family, _call_loader(str(path), pipeline_class(family).from_single_file, str(path), **kwargs)


def _check_tokenizer_files(folder: Path) -> None:
    """Without them transformers silently invents a useless 2-token tokenizer (or fails deep inside)."""
    tokenizer = folder / "tokenizer"
    if (
        not ((tokenizer / "vocab.json").is_file() and (tokenizer / "merges.txt").is_file())
        and not (tokenizer / "tokenizer.json").is_file()
    ):
        raise InputError(f"Folder {folder} has no CLIP tokenizer files (tokenizer/vocab.json and merges.txt).")


UNET_INPUT_KEY = "model.diffusion_model.input_blocks.0.0.weight"  # its shape[1]: the UNet's input channels


def _checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name and shape in a checkpoint file, read once: the family is told from the names, the UNet's
    input channels from a shape (a .safetensors file's header only; a .ckpt memory-mapped)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
        return {
            key: tuple(value.shape)
            for key, value in state_dict.items()
            if isinstance(key, str) and hasattr(value, "shape")
        }
    except Exception as error:  # not a checkpoint at all
        raise InputError(f"Could not load model '{path}': {first_line(error)}.") from None


def _check_diffusers_folder(path: Path) -> Family:
    """The folder's family, once it is known to hold what that family's pipeline loads."""
    from .families import family_of_pipeline

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
    family = family_of_pipeline(str(index.get("_class_name", "")), str(path))
    missing = [part for part in family.component_folders if not (path / part).is_dir()]
    if missing:
        raise InputError(
            f"Model folder {path} lacks the component folder(s) {', '.join(missing)} that a {family.name} model has."
        )
    _check_tokenizer_files(path)
    return family


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


def read_capabilities(pipeline, model: str, family: Family) -> Capabilities:
    """Read the checkpoint's abilities from its configs; refuse what the engine cannot run."""
    denoiser_config, vae_config = getattr(pipeline, family.denoiser).config, pipeline.vae.config
    latent_channels = int(vae_config.latent_channels)
    vae_scale_factor = 2 ** (len(vae_config.block_out_channels) - 1)
    in_channels = family.spatial_input_channels(denoiser_config)
    accepted = (latent_channels, family.inpainting_channels(latent_channels, vae_scale_factor))
    if in_channels not in accepted:
        raise InputError(
            f"Model '{model}' has a {family.denoiser} with {in_channels} input channels per latent cell; a "
            f"{family.name} model has {accepted[0]} (ordinary) or {accepted[1]} (inpainting)."
        )
    return Capabilities(
        family=family.name,
        unet_in_channels=in_channels,
        prediction_type="flow"
        if family.flow_matching
        else str(pipeline.scheduler.config.get("prediction_type", "epsilon")),
        vae_scaling_factor=float(vae_config.scaling_factor),
        vae_scale_factor=vae_scale_factor,
        native_size=family.native_size(pipeline, vae_scale_factor),
        untrained=Path(model).expanduser().is_dir() and is_untrained(Path(model).expanduser()),
        guidance_embedding_dim=getattr(denoiser_config, "time_cond_proj_dim", None),
        latent_channels=latent_channels,
        patch_size=family.patch_size,
        guidance_embedded=bool(getattr(denoiser_config, "guidance_embeds", False)),
    )
