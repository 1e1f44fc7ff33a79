"""The settings of one inpainting job, shared by every front end, validated in one place."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import InputError
from .fill import FILLS
from .schedulers import check_scheduler_name

MAX_SEED = 2**32 - 1


@dataclass
class InpaintSettings:
    prompt: str = ""
    negative_prompt: str = ""
    method: str = "auto"
    guidance: float = 7.5
    steps: int = 50
    strength: float = 1.0
    seed: int | None = None  # None: a random seed, stored in each output's metadata
    num_images: int = 1
    scheduler: str = "default"
    mask_grow: int = 0
    mask_blur: int = 0
    paste_back: bool = True
    crop_padding: int | None = None  # None: inpaint the whole image; PX: only the mask's window plus PX
    fill: str = "original"  # what the masked area starts as before it is encoded (matters for strength < 1)
    color_match: bool = False
    # Method options: None means the method's own default. Each belongs to one method (methods/*.py).
    blend_start: float | None = None
    mask_dilation_iterations: int | None = None
    reconstruct: str | None = None
    jump_length: int | None = None
    jump_n_sample: int | None = None
    known_t: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise InputError("The prompt and negative prompt must be text.")
        if not 0.0 < self.strength <= 1.0:
            raise InputError(f"Strength must be in (0, 1], got {self.strength}.")
        if self.steps < 1:
            raise InputError(f"Steps must be at least 1, got {self.steps}.")
        if int(self.steps * self.strength) < 1:
            raise InputError(
                f"Strength {self.strength} with {self.steps} steps leaves no denoising step; raise the strength or the steps."
            )
        if self.guidance < 0:
            raise InputError(f"Guidance must be 0 or more, got {self.guidance}.")
        if self.num_images < 1:
            raise InputError(f"The number of images must be at least 1, got {self.num_images}.")
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
        return asdict(self)
