"""What the masked region starts as before it is encoded; it shows through when strength < 1."""

from __future__ import annotations

import cv2
import numpy as np

from .errors import InputError
from .masks import Box, box_in_part, expand_box
from .names import FILLS

# Telea/NS neighbourhood in pixels. OpenCV's examples use 3; 5 smooths a little more. Anything
# finer does not matter: the fill is noised and encoded at 1/8 resolution (one latent cell = 8 px).
INPAINT_RADIUS = 5

# What a hole becomes when no pixel is known (the whole image is masked): the middle of the range.
MID_GREY = 127

# How far from the hole cv2.inpaint reads: each filled pixel averages the known pixels within a radius of
# it, with gradients taken a pixel or two further. Measured, radius + 2 already fills identically; 3x is spare.
INPAINT_REACH = 3 * INPAINT_RADIUS


def fill_masked(pixels: np.ndarray, mask: np.ndarray, how: str, seed: int = 0) -> np.ndarray:
    """A new HxWx3 uint8 image: pixels where mask < 0.5 byte for byte, the rest filled `how`.

    `original` keeps the image, `telea`/`ns` are OpenCV's inpainting, `blur` a smooth average of
    the known pixels around each hole pixel, `noise` uniform random colours drawn with `seed`, `grey` the middle of
    the range (no content at all: AUTOMATIC1111's "latent nothing" in pixels).
    """
    if how not in FILLS:
        raise InputError(f"Unknown fill '{how}'; choose one of: {', '.join(FILLS)}.")
    hole = mask >= 0.5
    if how == "original" or not hole.any():
        return pixels.copy()
    if how == "noise":
        return np.where(hole[:, :, None], noise_image(pixels.shape, seed), pixels)
    if how == "grey":
        return np.where(hole[:, :, None], np.uint8(MID_GREY), pixels)
    if hole.all():
        return np.full_like(pixels, MID_GREY)
    if how == "blur":
        filled = pull_push(pixels, ~hole)
    else:
        flag = cv2.INPAINT_TELEA if how == "telea" else cv2.INPAINT_NS
        filled = cv2.inpaint(np.ascontiguousarray(pixels), hole.astype(np.uint8) * 255, INPAINT_RADIUS, flag)
    return np.where(hole[:, :, None], filled, pixels)  # known pixels exactly as given, whatever OpenCV did


def fill_window(pixels: np.ndarray, mask: np.ndarray, how: str, seed: int, box: Box) -> np.ndarray:
    """`fill_masked(pixels, mask, how, seed)[box]` for a box that holds every pixel of the hole, filling little more.

    `original`, `telea` and `ns` look only near the hole, so they run on the box and its surroundings; a `noise`
    pixel depends on the image size and `blur` averages the whole image, so those still draw or pull everything.
    """
    if how == "noise":
        noise = noise_image(pixels.shape, seed)[box]  # the whole draw, so each pixel gets the colour it always had
        return np.where(mask[box][:, :, None] >= 0.5, noise, pixels[box])
    if how in ("blur", "grey"):
        return fill_masked(pixels, mask, how, seed)[box]
    context = expand_box(box, INPAINT_REACH, mask.shape)
    return fill_masked(pixels[context], mask[context], how, seed)[box_in_part(box, context)]


def noise_image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform random uint8 colours, drawn for the whole image: a pixel's colour depends only on the seed and the
    size.
    """
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


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
