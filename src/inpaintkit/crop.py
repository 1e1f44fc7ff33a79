"""Crop-to-mask ("only masked"): inpaint a window around the mask at the model's native size, then put it back.

A 4000x3000 photo with a small mask then costs what a native-size job costs, and the model sees the
masked region at the resolution it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from .errors import InputError
from .masks import Box, bounding_box, box_in_part


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

    @property
    def box(self) -> Box:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    def inside(self, part: Box) -> "Window":
        """The same window placed in the part of the image that `part` cuts out (which must hold it)."""
        rows, columns = box_in_part(self.box, part)
        return replace(self, left=columns.start, top=rows.start, right=columns.stop, bottom=rows.stop)


def crop_window(region: np.ndarray, padding: int, native_size: int, multiple: int = 8) -> Window:
    """The window to inpaint: the region's bounding box plus `padding`, made square and kept inside the image.

    `region` (HxW, bool or float) is every pixel the job may change; pixels >= 0.5 count.
    """
    inside = np.asarray(region) >= 0.5
    if inside.ndim != 2:
        raise ValueError(f"The region must be a 2-D array, got shape {inside.shape}.")
    box = bounding_box(inside)
    if box is None:
        raise ValueError("The region is empty; there is nothing to crop to.")
    return window_around(box, inside.shape, padding, native_size, multiple)


def window_around(box: Box, shape: tuple[int, ...], padding: int, native_size: int, multiple: int = 8) -> Window:
    """The window for a region whose bounding box is `box`, in an image of `shape` (height, width, ...)."""
    if padding < 0:
        raise InputError(f"Crop padding must be 0 or more pixels, got {padding}.")
    (rows, columns), (height, width) = box, shape[:2]
    box_width = columns.stop - columns.start + 2 * padding
    box_height = rows.stop - rows.start + 2 * padding
    # Square, because the native resolution is square: the content is then scaled without distortion.
    side = max(box_width, box_height)
    left, right = _place(columns.start - padding, box_width, side, width)
    top, bottom = _place(rows.start - padding, box_height, side, height)
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
    return resize_to_work(pixels[window.box], window), crop_mask(mask, window)


def resize_to_work(cut: np.ndarray, window: Window) -> np.ndarray:
    """The window's pixels (HxWx3 uint8, already cut out) resized to the work size."""
    size = (window.work_width, window.work_height)
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(cut, dtype=np.uint8)).resize(size, Image.Resampling.LANCZOS),
        dtype=np.uint8,
    )


def crop_mask(mask: np.ndarray, window: Window) -> np.ndarray:
    """Cut a binary mask (HxW float) to the window, resized to the work size and binary again."""
    # Bilinear, not Lanczos: Lanczos rings around the mask's edges and the overshoot could cross 0.5.
    # Re-binarised because the model was trained on binary masks; at 0.5 a work pixel is repainted when
    # about half of what it covers is, so the edge stays where it was instead of snapping to one sample.
    return (crop_map(mask, window) >= 0.5).astype(np.float32)


def crop_map(values: np.ndarray, window: Window) -> np.ndarray:
    """Cut a float map in [0, 1] to the window and resize it bilinearly to the work size."""
    # A float32 array becomes a mode "F" image, so it is resampled in floats, not rounded to 8 bits.
    cut = np.ascontiguousarray(values[window.box], dtype=np.float32)
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
    pasted[window.box] = np.asarray(resized)
    return pasted
