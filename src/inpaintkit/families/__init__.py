"""The model families inpaintkit runs, and how a model's family is told: from a diffusers folder's
model_index.json, or from a single checkpoint file's keys. A family it does not run yet is named in the
refusal, not mistaken for another."""

from __future__ import annotations

from typing import Iterable

from ..errors import InputError
from .base import Conditioning, Family
from .sd import StableDiffusion
from .sdxl import StableDiffusionXL

FAMILIES: dict[str, Family] = {family.name: family for family in (StableDiffusion(), StableDiffusionXL())}

# Families inpaintkit cannot run yet, by the start of their diffusers pipeline class names; checked before the
# supported ones, so StableDiffusionXL and StableDiffusion3 are not taken for StableDiffusion.
NOT_YET_SUPPORTED = {
    "StableDiffusion3": "Stable Diffusion 3",
    "Flux": "Flux",
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
SUPPORTED_PIPELINE_PREFIXES = {"StableDiffusionXL": "sdxl", "StableDiffusion": "sd"}  # the longer prefix first

# Keys that tell a single original-layout checkpoint's family, checked in order.
CHECKPOINT_SIGNATURES = (
    ("conditioner.embedders.1.", "sdxl", None),
    ("model.diffusion_model.joint_blocks.", None, "Stable Diffusion 3"),
    ("joint_blocks.", None, "Stable Diffusion 3"),
    ("double_blocks.", None, "Flux"),
    ("model.diffusion_model.double_blocks.", None, "Flux"),
    ("model.diffusion_model.input_blocks.", "sd", None),
)


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
    for prefix, name, unsupported in CHECKPOINT_SIGNATURES:
        if any(key.startswith(prefix) for key in keys):
            if unsupported is not None:
                raise not_supported(model, unsupported, "checkpoint")
            return FAMILIES[name]
    raise InputError(
        f"Cannot tell which model family the checkpoint {model} is (none of the tensor names of Stable Diffusion "
        "1.x/2.x or SDXL); pass a diffusers folder instead."
    )


def not_supported(model: str, family: str, what: str) -> InputError:
    return InputError(
        f"Model '{model}' is of the {family} family ({what}), which inpaintkit does not run yet; it runs "
        "Stable Diffusion 1.x/2.x and SDXL."
    )


__all__ = ["Conditioning", "FAMILIES", "Family", "family_of_checkpoint", "family_of_pipeline"]
