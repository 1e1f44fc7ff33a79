"""The model families inpaintkit runs, and how a model's family is told: from a diffusers folder's
model_index.json, or from a single checkpoint file's keys. A family it does not run yet is named in the
refusal, not mistaken for another."""

from __future__ import annotations

from typing import Iterable

from ..errors import InputError
from .base import Conditioning, Family
from .flux import Flux, FluxFill
from .sd import StableDiffusion
from .sd3 import StableDiffusion3
from .sdxl import StableDiffusionXL

FAMILIES: dict[str, Family] = {
    family.name: family for family in (StableDiffusion(), StableDiffusionXL(), StableDiffusion3(), Flux(), FluxFill())
}

# Families inpaintkit cannot run yet, by the start of their diffusers pipeline class names; checked before the
# supported ones, so a Flux Kontext or Control model is not taken for Flux.
NOT_YET_SUPPORTED = {
    "FluxKontext": "Flux Kontext",
    "FluxControl": "Flux Control (Canny/Depth)",
    "FluxPriorRedux": "Flux Redux",
    "Flux2": "Flux.2",
    "Kandinsky": "Kandinsky",
    "PixArt": "PixArt",
    "Sana": "Sana",
    "HunyuanDiT": "Hunyuan-DiT",
    "Lumina": "Lumina",
    "AuraFlow": "AuraFlow",
    "Wuerstchen": "Wuerstchen",
    "StableCascade": "Stable Cascade",
    "IF": "DeepFloyd IF",
    "Kolors": "Kolors",
    "CogView": "CogView",
    "QwenImage": "Qwen-Image",
    "Chroma": "Chroma",
}
# The longer prefix first: StableDiffusionXL and StableDiffusion3 are not StableDiffusion, FluxFill is not Flux.
SUPPORTED_PIPELINE_PREFIXES = {
    "StableDiffusionXL": "sdxl",
    "StableDiffusion3": "sd3",
    "StableDiffusion": "sd",
    "FluxFill": "flux-fill",
    "Flux": "flux",
}

# Keys that tell a single original-layout checkpoint's family, checked in order.
CHECKPOINT_SIGNATURES = (
    ("conditioner.embedders.1.", "sdxl"),
    ("model.diffusion_model.joint_blocks.", "sd3"),
    ("joint_blocks.", "sd3"),
    ("double_blocks.", "flux"),
    ("model.diffusion_model.double_blocks.", "flux"),
    ("model.diffusion_model.input_blocks.", "sd"),
)
# The families whose single files are told but not loaded (only their diffusers folders are), as users name them.
FOLDER_ONLY = {"sd3": "Stable Diffusion 3", "flux": "Flux"}


def family_of_pipeline(class_name: str, model: str) -> Family:
    """The family of a diffusers pipeline class name (model_index.json's `_class_name`)."""
    for prefix in NOT_YET_SUPPORTED:
        if class_name.startswith(prefix):
            raise not_supported(model, NOT_YET_SUPPORTED[prefix], class_name)
    for prefix, name in SUPPORTED_PIPELINE_PREFIXES.items():
        if class_name.startswith(prefix):
            return FAMILIES[name]
    raise InputError(
        f"Model '{model}' is a {class_name or 'pipeline of an unknown kind'}, not a model family inpaintkit runs "
        f"({', '.join(FAMILIES)})."
    )


def family_of_checkpoint(keys: Iterable[str], model: str) -> Family:
    """The family of a single original-layout checkpoint, from its tensor names."""
    keys = list(keys)
    for prefix, name in CHECKPOINT_SIGNATURES:
        if any(key.startswith(prefix) for key in keys):
            if name in FOLDER_ONLY:
                raise InputError(
                    f"Model '{model}' is a {FOLDER_ONLY[name]} checkpoint in one file, which inpaintkit loads only "
                    "as a diffusers folder; pass the folder (a quantized transformer file goes to --transformer)."
                )
            return FAMILIES[name]
    raise InputError(
        f"Cannot tell which model family the checkpoint {model} is (none of the tensor names of Stable Diffusion "
        "1.x/2.x, SDXL, SD 3 or Flux); pass a diffusers folder instead."
    )


def not_supported(model: str, family: str, what: str) -> InputError:
    return InputError(
        f"Model '{model}' is of the {family} family ({what}), which inpaintkit does not run yet; it runs "
        "Stable Diffusion 1.x/2.x, SDXL, Stable Diffusion 3, Flux.1 and Flux.1 Fill."
    )


__all__ = ["Conditioning", "FAMILIES", "Family", "family_of_checkpoint", "family_of_pipeline"]
