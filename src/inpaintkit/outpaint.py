"""Outpainting: a larger canvas whose new border is the region to paint."""

from __future__ import annotations

import numbers

import numpy as np

from .errors import InputError
from .io import MAX_IMAGE_PIXELS


def expand_canvas(
    pixels: np.ndarray, *, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The image placed on a canvas grown by the given pixels, and the mask of the new area (1 = paint).

    The new area is pre-filled by repeating the edge pixels outwards, a neutral start for strength < 1
    that --fill can replace.
    """
    sides = {"left": left, "right": right, "top": top, "bottom": bottom}
    for name, value in sides.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InputError(f"Outpainting sizes must be whole numbers of pixels, got --{name} {value!r}.")
    sides = {name: int(value) for name, value in sides.items()}
    negative = [f"--{name} {value}" for name, value in sides.items() if value < 0]
    if negative:
        raise InputError(f"Outpainting sizes must be 0 or more pixels, got {', '.join(negative)}.")
    if not any(sides.values()):
        raise InputError("Nothing to outpaint: give --left, --right, --top, --bottom or --expand in pixels.")
    height, width = pixels.shape[0] + sides["top"] + sides["bottom"], pixels.shape[1] + sides["left"] + sides["right"]
    if height * width > MAX_IMAGE_PIXELS:  # the canvas is an image like any other: the same limit
        raise InputError(
            f"The outpainted canvas would be {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} an image "
            "may have; add less on each side."
        )
    padding = ((sides["top"], sides["bottom"]), (sides["left"], sides["right"]))
    canvas = np.pad(pixels, padding + ((0, 0),), mode="edge")
    mask = np.pad(np.zeros(pixels.shape[:2], np.float32), padding, constant_values=1.0)
    return canvas, mask
