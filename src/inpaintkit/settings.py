"""The settings of one inpainting job, shared by every front end, validated in one place."""

from __future__ import annotations

import math
import numbers
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .errors import InputError
from .fill import FILLS
from .lora_specs import parse_loras
from .names import MAX_JOB_IMAGES, MAX_TEXT_LENGTH
from .schedulers import check_scheduler_name, check_spacing

MAX_SEED = 2**32 - 1
# Each setting's kind of value, read from its annotation below (FIELD_KINDS, OPTIONAL_FIELDS).
ANNOTATION_KINDS = {"str": "text", "float": "number", "int": "whole", "bool": "boolean", "tuple[str, ...]": "texts"}
KIND_CLASSES = {
    "text": str, "number": numbers.Real, "whole": numbers.Integral, "boolean": (bool, np.bool_), "texts": (list, tuple)
}  # fmt: skip
KIND_TYPES = {"text": str, "number": float, "whole": int, "boolean": bool, "texts": tuple}
KIND_NAMES = {
    "text": "text", "number": "a number", "whole": "a whole number", "boolean": "true or false",
    "texts": "a list of texts",
}  # fmt: skip


MAX_WHOLE = 2**63 - 1  # the largest int64

# Far above any useful scale (A1111 stops at 30); larger values overflow the latents into NaN.
MAX_GUIDANCE = 100.0


@dataclass
class InpaintSettings:
    prompt: str = ""
    negative_prompt: str = ""
    method: str = "auto"
    guidance: float | None = None  # None: the model family's default (families/: 7.5 SD, 7 SD 3, 3.5 Flux, 30 Fill)
    true_cfg: float | None = None  # Flux only: classifier-free guidance with the negative prompt, above 1 (None: off)
    steps: int = 50
    strength: float = 1.0
    seed: int | None = None  # None: a random seed, stored in each output's metadata
    num_images: int = 1
    scheduler: str = "default"
    spacing: str = "default"  # timestep spacing: the model's, leading, linspace or trailing
    mask_grow: int = 0
    mask_blur: int = 0
    paste_back: bool = True
    crop_padding: int | None = None  # None: inpaint the whole image; PX: only the mask's window plus PX
    fill: str = "original"  # what the masked area starts as before it is encoded (matters for strength < 1)
    color_match: bool = False
    loras: tuple[str, ...] = ()  # each SOURCE[:WEIGHT] (lora_specs.py), switched on for this job only
    # Method options: None means the method's own default. Each belongs to one method (methods/*.py).
    blend_start: float | None = None
    mask_dilation_iterations: int | None = None
    reconstruct: str | None = None
    jump_length: int | None = None
    jump_n_sample: int | None = None
    known_t: int | None = None
    fuse_blocks: str | None = None
    fuse_until: float | None = None
    propagation: float | None = None
    lanpaint_steps: int | None = None
    lanpaint_lambda: float | None = None
    lanpaint_step_size: float | None = None
    lanpaint_beta: float | None = None

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("prompt", "negative_prompt"):
            if len(getattr(self, name)) > MAX_TEXT_LENGTH:
                raise InputError(
                    f"The {name.replace('_', ' ')} is {len(getattr(self, name)):,} characters long; "
                    f"the limit is {MAX_TEXT_LENGTH:,}."
                )
        if not 0.0 < self.strength <= 1.0:
            raise InputError(f"Strength must be in (0, 1], got {self.strength}.")
        if self.steps < 1:
            raise InputError(f"Steps must be at least 1, got {self.steps}.")
        for name, label in (("guidance", "Guidance"), ("true_cfg", "True CFG")):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_GUIDANCE:
                raise InputError(f"{label} must be between 0 and {MAX_GUIDANCE:g}, got {value}.")
        if not 1 <= self.num_images <= MAX_JOB_IMAGES:
            raise InputError(f"The number of images must be from 1 to {MAX_JOB_IMAGES:,}, got {self.num_images}.")
        if self.mask_blur < 0:
            raise InputError(f"Mask blur must be 0 or more pixels, got {self.mask_blur}.")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"Seed must be between 0 and {MAX_SEED}, got {self.seed}.")
        if self.seed is not None and self.seed + self.num_images - 1 > MAX_SEED:
            raise InputError(f"Seed {self.seed} plus {self.num_images} images runs past the largest seed {MAX_SEED}.")
        if self.crop_padding is not None and self.crop_padding < 0:
            raise InputError(f"Crop padding must be 0 or more pixels, got {self.crop_padding}.")
        if self.fill not in FILLS:
            raise InputError(f"Unknown fill '{self.fill}'; choose one of: {', '.join(FILLS)}.")
        check_scheduler_name(self.scheduler)
        check_spacing(self.spacing)
        parse_loras(self.loras)

    def _check_types(self) -> None:
        """API callers can pass anything: each field must have its kind of value (numpy scalars included), finite."""
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None and field.name in OPTIONAL_FIELDS:
                continue
            kind = FIELD_KINDS[field.name]
            accepted = isinstance(value, KIND_CLASSES[kind]) and (
                kind == "boolean" or not isinstance(value, (bool, np.bool_))
            )
            if not accepted:
                raise InputError(f"Setting {field.name} must be {KIND_NAMES[kind]}, got {value!r}.")
            if kind in ("number", "whole") and isinstance(value, numbers.Integral) and abs(int(value)) > MAX_WHOLE:
                # Python ints are unbounded; beyond int64 torch and numpy cannot take them, nor float() past 1e308.
                raise InputError(
                    f"Setting {field.name} is far outside any useful range (a whole number of more than 19 digits)."
                )
            value = KIND_TYPES[kind](value)
            if kind == "number" and not math.isfinite(value):
                raise InputError(f"Setting {field.name} must be a finite number, got {value!r}.")
            if kind == "text" and not _is_unicode(value):
                raise InputError(f"Setting {field.name} is not valid Unicode text (it holds a lone surrogate).")
            if kind == "texts" and not all(isinstance(item, str) and _is_unicode(item) for item in value):
                raise InputError(f"Setting {field.name} must be a list of texts, got {list(value)!r:.200}.")
            setattr(self, field.name, value)

    @classmethod
    def from_options(cls, **options: Any) -> "InpaintSettings":
        """Build from keyword options, naming any unknown one."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"Unknown setting(s) {', '.join(unknown)}; known settings are {', '.join(sorted(known))}.")
        return cls(**options)

    def with_seed(self) -> "InpaintSettings":
        """A copy whose seed is fixed: the given one, or a fresh random one."""
        seed = self.seed if self.seed is not None else secrets.randbelow(MAX_SEED - self.num_images + 2)
        return InpaintSettings(**{**asdict(self), "seed": seed})

    def seeds(self) -> list[int]:
        """Image k of a job uses seed + k, so each image can be reproduced on its own."""
        assert self.seed is not None, "call with_seed() first"
        return [self.seed + k for k in range(self.num_images)]

    def as_dict(self) -> dict[str, Any]:
        """Every setting, lists as lists (JSON's, the metadata's and the service's form)."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}


# Annotations are strings here (`from __future__ import annotations`): "int", "int | None", ...
FIELD_KINDS = {field.name: ANNOTATION_KINDS[field.type.removesuffix(" | None")] for field in fields(InpaintSettings)}
OPTIONAL_FIELDS = {field.name for field in fields(InpaintSettings) if field.type.endswith(" | None")}


def _is_unicode(text: str) -> bool:
    """False for strings with lone surrogates (e.g. from broken JSON), which the tokenizer cannot read."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
