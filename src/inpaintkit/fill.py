"""What the masked region starts as before it is encoded; it shows through when strength < 1."""

from __future__ import annotations

import cv2
import numpy as np

from .errors import InputError
from .names import FILLS


# Telea/NS neighbourhood in pixels. OpenCV's examples use 3; 5 smooths a little more. Anything
# finer does not matter: the fill is noised and encoded at 1/8 resolution (one latent cell = 8 px).
INPAINT_RADIUS = 5

# What a hole becomes when no pixel is known (the whole image is masked): the middle of the range.
MID_GREY = 127


def fill_masked(pixels: np.ndarray, mask: np.ndarray, how: str, seed: int = 0) -> np.ndarray:
    """A new HxWx3 uint8 image: pixels where mask < 0.5 byte for byte, the rest filled `how`.

    `original` keeps the image, `telea`/`ns` are OpenCV's inpainting, `blur` a smooth average of
    the known pixels around each hole pixel, `noise` uniform random colours drawn with `seed`.
    """
    if how not in FILLS:
        raise InputError(f"Unknown fill '{how}'; choose one of: {', '.join(FILLS)}.")
    hole = mask >= 0.5
    if how == "original" or not hole.any():
        return pixels.copy()
    if how == "noise":
        # Drawn for the whole image, so a pixel's colour depends only on the seed and the image size.
        noise = np.random.default_rng(seed).integers(0, 256, size=pixels.shape, dtype=np.uint8)
        return np.where(hole[:, :, None], noise, pixels)
    if hole.all():
        return np.full_like(pixels, MID_GREY)
    if how == "blur":
        filled = pull_push(pixels, ~hole)
    else:
        flag = cv2.INPAINT_TELEA if how == "telea" else cv2.INPAINT_NS
        filled = cv2.inpaint(np.ascontiguousarray(pixels), hole.astype(np.uint8) * 255, INPAINT_RADIUS, flag)
    return np.where(hole[:, :, None], filled, pixels)  # known pixels exactly as given, whatever OpenCV did


def pull_push(pixels: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill unknown pixels with a smooth, local average of the known ones, however large the hole.

    Pull-push (Gortler et al. 1996, "The Lumigraph"): normalized convolution over a Gaussian
    pyramid. Pull: blur and halve the known colours (premultiplied by the known weight) and the
    weight down to 1x1. Push: from the coarsest level up, each level keeps its own average where its
    weight is 1 and takes the upsampled coarser estimate where it is 0, blending in between, so each
    hole pixel gets the finest scale at which known pixels reach it, with no seams between scales.
    `known` must hold at least one True.
    """
    weight = known.astype(np.float32)
    colour = pixels.astype(np.float32) * weight[:, :, None]
    pyramid = [(colour, weight)]
    while colour.shape[0] > 1 or colour.shape[1] > 1:
        colour, weight = cv2.pyrDown(colour), cv2.pyrDown(weight)
        pyramid.append((colour.reshape(weight.shape + (3,)), weight))
    # Coarsest level: the mean of every known pixel (no division by a possibly tiny weight).
    estimate = np.broadcast_to(pixels[known].mean(axis=0, dtype=np.float64), pyramid[-1][0].shape).astype(np.float32)
    for colour, weight in reversed(pyramid[:-1]):
        height, width = weight.shape
        coarse = cv2.pyrUp(estimate, dstsize=(width, height)).reshape(height, width, 3)
        estimate = colour + (1.0 - np.clip(weight, 0.0, 1.0))[:, :, None] * coarse
    return np.clip(np.round(estimate), 0, 255).astype(np.uint8)
