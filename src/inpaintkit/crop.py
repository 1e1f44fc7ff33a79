"""Crop-to-mask ("only masked"): inpaint a window around the mask at the model's native size, then put it back.

A 4000x3000 photo with a small mask then costs what a native-size job costs, and the model sees the
masked region at the resolution it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import InputError


@dataclass(frozen=True)
class Window:
    """A pixel box in the full image (right and bottom exclusive) and the size the model works at."""

    left: int
    top: int
    right: int
    bottom: int
    work_width: int
    work_height: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def crop_window(region: np.ndarray, padding: int, native_size: int, multiple: int = 8) -> Window:
    """The window to inpaint: the region's bounding box plus `padding`, made square and kept inside the image.

    `region` (HxW, bool or float) is every pixel the job may change; pixels >= 0.5 count.
    """
    if padding < 0:
        raise InputError(f"Crop padding must be 0 or more pixels, got {padding}.")
    inside = np.asarray(region) >= 0.5
    if inside.ndim != 2:
        raise ValueError(f"The region must be a 2-D array, got shape {inside.shape}.")
    rows, columns = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if rows.size == 0:
        raise ValueError("The region is empty; there is nothing to crop to.")
    height, width = inside.shape
    box_width = int(columns[-1]) + 1 - int(columns[0]) + 2 * padding
    box_height = int(rows[-1]) + 1 - int(rows[0]) + 2 * padding
    # Square, because the native resolution is square: the content is then scaled without distortion.
    side = max(box_width, box_height)
    left, right = _place(int(columns[0]) - padding, box_width, side, width)
    top, bottom = _place(int(rows[0]) - padding, box_height, side, height)
    work_width, work_height = _work_size(right - left, bottom - top, native_size, multiple)
    return Window(left, top, right, bottom, work_width, work_height)


def _place(start: int, length: int, side: int, limit: int) -> tuple[int, int]:
    """Widen [start, start + length) to `side` around its centre, then fit it into [0, limit) on one axis."""
    if side >= limit:
        return 0, limit  # larger than the image along this axis: the only case where the window shrinks
    start -= (side - length) // 2
    # Near an edge, shift rather than shrink: the window keeps its size, so its scale matches a window
    # in the middle of the image, and it takes its missing context from the side that has some.
    start = min(max(start, 0), limit - side)
    return start, start + side


def _work_size(width: int, height: int, native_size: int, multiple: int) -> tuple[int, int]:
    """Scale (width, height) so the longer side is `native_size`, each side rounded to a multiple of `multiple`."""
    scale = native_size / max(width, height)
    # Multiples of the VAE's downsampling factor, so the latents cover the window with no padding.
    return tuple(max(multiple, multiple * math.floor(side * scale / multiple + 0.5)) for side in (width, height))


def crop_to_window(pixels: np.ndarray, mask: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Cut the window from an image (HxWx3 uint8) and its mask (HxW float), resized to the work size."""
    box = (slice(window.top, window.bottom), slice(window.left, window.right))
    size = (window.work_width, window.work_height)
    image = Image.fromarray(np.ascontiguousarray(pixels[box], dtype=np.uint8)).resize(size, Image.Resampling.LANCZOS)
    # Bilinear, not Lanczos: Lanczos rings around the mask's edges and the overshoot could cross 0.5.
    # Re-binarised because the model was trained on binary masks; at 0.5 a work pixel is repainted when
    # about half of what it covers is, so the edge stays where it was instead of snapping to one sample.
    return np.asarray(image, dtype=np.uint8), (crop_map(mask, window) >= 0.5).astype(np.float32)


def crop_map(values: np.ndarray, window: Window) -> np.ndarray:
    """Cut a float map in [0, 1] to the window and resize it bilinearly to the work size."""
    # A float32 array becomes a mode "F" image, so it is resampled in floats, not rounded to 8 bits.
    cut = np.ascontiguousarray(values[window.top : window.bottom, window.left : window.right], dtype=np.float32)
    resized = Image.fromarray(cut).resize((window.work_width, window.work_height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def paste_window(full: np.ndarray, work_result: np.ndarray, window: Window) -> np.ndarray:
    """A copy of `full` with the model's output (work size) resized back into the window; nothing else changes."""
    if work_result.shape[:2] != (window.work_height, window.work_width):
        raise ValueError(
            f"The result is {work_result.shape[1]}x{work_result.shape[0]} pixels but the window works at "
            f"{window.work_width}x{window.work_height}."
        )
    resized = Image.fromarray(np.ascontiguousarray(work_result, dtype=np.uint8)).resize(
        (window.width, window.height), Image.Resampling.LANCZOS
    )
    pasted = full.copy()
    pasted[window.top : window.bottom, window.left : window.right] = np.asarray(resized)
    return pasted
