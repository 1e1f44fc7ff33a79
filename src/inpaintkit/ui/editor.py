"""The job's image and mask from what the web UI holds: the editor's picture and strokes, and an uploaded mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from ..errors import InputError
from ..io import MAX_IMAGE_PIXELS, alpha_channel, load_image_and_mask, open_image, to_rgb_array

MASK_TINT = np.array([255, 0, 64], dtype=np.float32)  # the preview's colour for "repaint"


def job_image_and_mask(editor: Optional[dict[str, Any]], mask_file: Optional[str]) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 image, HxW float32 mask in [0, 1], 1 = repaint) from the editor's value and an optional mask file.

    The mask is the union (per-pixel maximum) of every painted pixel (any alpha above 0 on a layer counts
    fully) and the uploaded mask (white = repaint, grey levels kept for the soft method). With neither,
    an image with transparent pixels is repainted there, as the CLI does without --mask.
    """
    background = (editor or {}).get("background")
    if background is None:
        raise InputError("Upload an image first (drop it on the editor or click it).")
    if (
        background.width * background.height > MAX_IMAGE_PIXELS
    ):  # the editor decodes it; the CLI's bomb limit still holds
        raise InputError(
            f"The image is {background.width}x{background.height} pixels, more than the {MAX_IMAGE_PIXELS:,} allowed."
        )
    pixels = to_rgb_array(background)
    masks = [painted] if (painted := painted_mask(editor.get("layers") or [], background.size)).any() else []
    if mask_file:
        masks.append(load_image_and_mask(background, open_uploaded_mask(mask_file))[1])
    if not masks:
        alpha = alpha_channel(background)
        if alpha is None or alpha.min() == 255:
            raise InputError(
                "Nothing to repaint: paint over the image with the brush, or upload a mask (white = repaint)."
            )
        masks.append(1.0 - alpha.astype(np.float32) / 255.0)
    return pixels, np.maximum.reduce(masks).astype(np.float32)


def painted_mask(layers: list[Image.Image], size: tuple[int, int]) -> np.ndarray:
    """HxW float32: 1 wherever any layer has a stroke (alpha above 0, so soft brush edges count), else 0."""
    width, height = size
    painted = np.zeros((height, width), dtype=bool)
    for layer in layers:
        if layer.size != size:
            raise InputError(
                f"A painted layer is {layer.width}x{layer.height} pixels but the image is {width}x{height}; clear the "
                "mask and paint again."
            )
        alpha = alpha_channel(layer)
        if alpha is not None:
            painted |= alpha > 0
    return painted.astype(np.float32)


def open_uploaded_mask(path: str) -> Image.Image:
    """The uploaded mask file, checked by io.open_image; messages name the file, not the server's cache folder."""
    try:
        return open_image(path, "mask")
    except InputError as error:
        raise InputError(str(error).replace(str(path), Path(path).name)) from None


def mask_overlay(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the mask tinted over it (half strength where the mask is 1), for the preview."""
    weight = 0.5 * mask[..., None]
    return (pixels * (1.0 - weight) + MASK_TINT * weight + 0.5).astype(np.uint8)
