"""Pure functions on masks. A mask is HxW float32 in [0, 1]; 1 = repaint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage

Box = tuple[slice, slice]  # rows, columns (start and stop set): `array[box]` is the part of an image it covers


@dataclass
class MaskRegions:
    """The masks one job derives from the user's mask."""

    repaint: np.ndarray  # binary: what the model may change (drives latent blending and a 9-channel UNet)
    weight: np.ndarray  # paste-back weight in [0, 1]: exactly 0 where the input is kept byte for byte
    box: Optional[Box]  # the bounding box of weight > 0; every map is 0 outside it (None: the maps are all 0)
    change: Optional[np.ndarray] = None  # soft methods only: per-pixel strength in [0, 1]


def mask_regions(mask: np.ndarray, grow_pixels: int, blur_pixels: int, soft: bool) -> MaskRegions:
    """Binary methods: binarise, grow, feather the paste-back. Soft methods: keep the grey levels."""
    support = bounding_box(mask > 0 if soft else mask >= 0.5)
    if support is None:
        repaint, weight = np.zeros(mask.shape, dtype=np.float32), np.zeros(mask.shape, dtype=np.float32)
        return MaskRegions(repaint=repaint, weight=weight, box=None, change=weight if soft else None)
    # Every map is 0 farther than grow + blur + 1 pixels from the mask (and erosion needs a pixel of what lies
    # outside it), so the maps are computed on that part of the mask only: a small mask on a big photo is cheap.
    reach = expand_box(support, abs(grow_pixels) + blur_pixels + 2, mask.shape)
    repaint, weight, change = _maps(mask[reach], grow_pixels, blur_pixels, soft)
    nonzero = bounding_box(weight > 0)
    return MaskRegions(
        repaint=_embedded(repaint, reach, mask.shape),
        weight=_embedded(weight, reach, mask.shape),
        box=None if nonzero is None else box_from_part(nonzero, reach),
        change=None if change is None else _embedded(change, reach, mask.shape),
    )


def _maps(
    mask: np.ndarray, grow_pixels: int, blur_pixels: int, soft: bool
) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(repaint, weight, change) as MaskRegions describes them."""
    if soft:
        change = soft_change_map(mask, grow_pixels, blur_pixels)
        return (change > 0).astype(np.float32), change, change
    repaint = grow(binarize(mask), grow_pixels)
    return repaint, feather(repaint, blur_pixels), None


def _embedded(part: np.ndarray, box: Box, shape: tuple[int, ...]) -> np.ndarray:
    full = np.zeros(shape, dtype=part.dtype)
    full[box] = part
    return full


def bounding_box(inside: np.ndarray) -> Optional[Box]:
    """The smallest box holding every True pixel of an HxW bool array; None when there is none."""
    rows = np.flatnonzero(inside.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(inside[rows[0] : rows[-1] + 1].any(axis=0))  # only the rows that can hold one
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)


def expand_box(box: Box, pixels: int, shape: tuple[int, ...]) -> Box:
    """`box` grown by `pixels` on every side, cut to an image of `shape` (height, width, ...)."""
    rows, columns = box
    return (
        slice(max(rows.start - pixels, 0), min(rows.stop + pixels, shape[0])),
        slice(max(columns.start - pixels, 0), min(columns.stop + pixels, shape[1])),
    )


def union_box(first: Box, second: Box) -> Box:
    """The smallest box holding both."""
    return tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(first, second))


def box_in_part(box: Box, part: Box) -> Box:
    """A box of the whole image, given in the array that `part` cuts out of it (which must hold the box)."""
    return tuple(slice(inner.start - outer.start, inner.stop - outer.start) for inner, outer in zip(box, part))


def box_from_part(box: Box, part: Box) -> Box:
    """A box of the array that `part` cuts out of an image, given in the whole image."""
    return tuple(slice(inner.start + outer.start, inner.stop + outer.start) for inner, outer in zip(box, part))


def grey_disk_morphology(mask: np.ndarray, radius: int, dilate: bool) -> np.ndarray:
    """Grey dilation (max) or erosion (min) over the disk x^2 + y^2 <= radius^2; mode="nearest" at the border.

    scipy's grey_dilation costs the disk's area per pixel (a 300-pixel radius ran out of memory on a
    240x180 mask); one distance transform per grey level costs about 50 disk pixels' worth (measured on
    500x500). Both are exact, so the cheaper is used. Pixels beyond the border ("nearest") add nothing
    to a disk centred inside the image, so the distance transforms can ignore them.
    """
    levels = np.unique(mask) if dilate else np.unique(mask)[::-1]
    if len(levels) * 50 >= np.pi * radius * radius:
        y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        morphology = ndimage.grey_dilation if dilate else ndimage.grey_erosion
        return morphology(mask, footprint=x * x + y * y <= radius * radius, mode="nearest")
    result = np.full(mask.shape, levels[0], dtype=mask.dtype)
    for level in levels[1:]:  # each level overwrites the ones before it where it reaches
        beyond_level = mask < level if dilate else mask > level
        result[ndimage.distance_transform_edt(beyond_level) <= radius] = level
    return result


def soft_change_map(mask: np.ndarray, grow_pixels: int, blur_pixels: int) -> np.ndarray:
    """The grayscale mask grown with a disk; outside it, each edge value ramps smoothly to 0 over `blur_pixels`."""
    if grow_pixels:
        mask = grey_disk_morphology(mask, abs(grow_pixels), dilate=grow_pixels > 0)
    outside = mask <= 0
    if blur_pixels <= 0 or outside.all():
        return mask.astype(np.float32)
    distance, (rows, columns) = ndimage.distance_transform_edt(outside, return_indices=True)
    edge_value = mask[rows, columns]  # the value of the nearest pixel that may change
    return np.where(outside, edge_value * smooth_ramp(distance, blur_pixels), mask).astype(np.float32)


def binarize(mask: np.ndarray) -> np.ndarray:
    """White (>= 0.5, i.e. >= 128 of 255) becomes 1, everything else 0."""
    return (mask >= 0.5).astype(np.float32)


def distance_to_mask(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance in pixels from each pixel to the nearest masked pixel (0 on the mask)."""
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float64)
    return ndimage.distance_transform_edt(mask < 0.5)


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate a binary mask by a disk of `pixels` radius; a negative radius erodes it."""
    if pixels == 0 or not mask.any():
        return mask.copy()
    if pixels > 0:
        return (distance_to_mask(mask) <= pixels).astype(np.float32)
    distance_to_outside = ndimage.distance_transform_edt(mask >= 0.5)
    return (distance_to_outside > -pixels).astype(np.float32)


def feather(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Paste-back weights: 1 on the mask, a smooth ramp to 0 over `pixels` outside it, then exactly 0.

    A pixel gets a non-zero weight only when it lies less than pixels + 1 from the mask.
    """
    if pixels <= 0:
        return mask.copy()
    return smooth_ramp(distance_to_mask(mask), pixels)


def smooth_ramp(distance: np.ndarray, pixels: int) -> np.ndarray:
    """1 at distance 0 falling to exactly 0 at pixels + 1, along a smoothstep (no visible kink at either end)."""
    ramp = np.clip(1.0 - distance / (pixels + 1), 0.0, 1.0)
    return (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)


def pad_to_multiple(array: np.ndarray, multiple: int, mode: str) -> np.ndarray:
    """Pad the bottom and right edges so height and width are multiples of `multiple`."""
    height, width = array.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return array
    padding = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, padding, mode=mode)
