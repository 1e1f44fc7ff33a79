"""Colour matching of a generated region to the known pixels around it."""

from __future__ import annotations

import cv2
import numpy as np

from .masks import distance_to_mask

# Below this standard deviation (CIELAB units; one 8-bit RGB step moves L by about 0.4) a region is
# flat: there is no contrast to rescale, and dividing by it would blow up rounding noise.
FLAT_STD = 0.5

# The reference ring: the known pixels within this many pixels of the mask.
RING_PIXELS = 16


def to_lab(pixels: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB to float32 CIELAB (L in [0, 100], a and b roughly [-128, 127]).

    Float, not cv2's 8-bit LAB: that rounds L to 100/255 steps and a, b to whole units, and the
    round trip alone would shift colours by a level or two before any matching is done.
    """
    return cv2.cvtColor(pixels.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """Float32 CIELAB to HxWx3 uint8 RGB, out-of-gamut values clipped."""
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def ring_around(mask: np.ndarray, ring: int) -> np.ndarray:
    """HxW bool: the known pixels (mask < 0.5) within `ring` pixels (Euclidean) of the mask."""
    hole = mask >= 0.5
    if not hole.any():
        return np.zeros(mask.shape, dtype=bool)
    return ~hole & (distance_to_mask(hole.astype(np.float32)) <= ring)


def match_color(generated: np.ndarray, original: np.ndarray, mask: np.ndarray, ring: int = RING_PIXELS) -> np.ndarray:
    """Give the generated masked pixels the CIELAB mean and std of the original's ring around the mask.

    Reinhard et al. 2001, "Color Transfer between Images" (per-channel mean/std transfer), in CIELAB
    and with the ring as the reference. Pixels with mask < 0.5 are `generated`'s, byte for byte; an
    empty mask or an empty ring (everything masked) returns `generated` unchanged.
    """
    hole = mask >= 0.5
    reference = ring_around(mask, ring)
    if not hole.any() or not reference.any():
        return generated.copy()
    target = to_lab(original)[reference]
    source_lab = to_lab(generated)
    source = source_lab[hole]
    source_mean, source_std = source.mean(axis=0, dtype=np.float64), source.std(axis=0, dtype=np.float64)
    target_mean, target_std = target.mean(axis=0, dtype=np.float64), target.std(axis=0, dtype=np.float64)
    scale = np.where(source_std > FLAT_STD, target_std / np.maximum(source_std, FLAT_STD), 1.0)  # flat: shift only
    source_lab[hole] = ((source - source_mean) * scale + target_mean).astype(np.float32)
    return np.where(hole[:, :, None], from_lab(source_lab), generated)
