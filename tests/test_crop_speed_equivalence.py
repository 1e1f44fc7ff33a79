"""The crop path's pixel work is done only near the mask; every output pixel must be what the whole-image
computation gives. Each reference here is that straightforward computation over the whole image."""

from __future__ import annotations

import numpy as np
import pytest

from inpaintkit.fill import FILLS, fill_masked, fill_window
from inpaintkit.masks import binarize, feather, grow, mask_regions, soft_change_map

from .conftest import box_mask, gradient_image

WIDTH, HEIGHT = 240, 180


def disk(centre: tuple[int, int], radius: float, value: int = 255) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.where(np.hypot(x - centre[0], y - centre[1]) < radius, value, 0).astype(np.uint8)


def grey_blobs() -> np.ndarray:
    """Grey levels, two blobs, one cut by the bottom edge: equidistant edge pixels of different values."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    cone = np.clip(255 * (1.3 - np.hypot(x - 70, y - 170) / 25), 0, 255)
    return np.maximum(cone, disk((170, 60), 7, value=140)).astype(np.uint8)


def speckle() -> np.ndarray:
    rng = np.random.default_rng(11)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    for _ in range(5):
        mask |= disk((int(rng.integers(60, 180)), int(rng.integers(50, 130))), float(rng.integers(3, 12)))
    return mask


MASKS = {
    "middle": box_mask(WIDTH, HEIGHT, (100, 70, 140, 100)),
    "top-left corner": box_mask(WIDTH, HEIGHT, (0, 0, 30, 24)),
    "right edge": box_mask(WIDTH, HEIGHT, (215, 80, 240, 120)),
    "one pixel": box_mask(WIDTH, HEIGHT, (120, 90, 121, 91)),
    "speckle": speckle(),
    "grey blobs": grey_blobs(),
    "everything": np.full((HEIGHT, WIDTH), 255, np.uint8),
    "nothing": np.zeros((HEIGHT, WIDTH), np.uint8),
}


def as_mask(name: str) -> np.ndarray:
    return MASKS[name].astype(np.float32) / 255.0


def whole_image_maps(mask: np.ndarray, grow_pixels: int, blur_pixels: int, soft: bool):
    """(repaint, weight, change), every map computed over the whole image."""
    if soft:
        change = soft_change_map(mask, grow_pixels, blur_pixels)
        return (change > 0).astype(np.float32), change, change
    repaint = grow(binarize(mask), grow_pixels)
    return repaint, feather(repaint, blur_pixels), None


def assert_identical(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert np.array_equal(actual, expected)


# -- the maps -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MASKS))
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
@pytest.mark.parametrize("grow_pixels, blur_pixels", [(0, 0), (0, 6), (4, 3), (-2, 5), (-30, 2), (25, 0), (7, 40)])
def test_mask_regions_equal_the_whole_image_maps(name, soft, grow_pixels, blur_pixels):
    mask = as_mask(name)
    regions = mask_regions(mask, grow_pixels, blur_pixels, soft)
    repaint, weight, change = whole_image_maps(mask, grow_pixels, blur_pixels, soft)
    assert_identical(regions.repaint, repaint)
    assert_identical(regions.weight, weight)
    assert (regions.change is None) == (change is None)
    if change is not None:
        assert_identical(regions.change, change)
    rows, columns = np.nonzero(weight > 0)
    expected_box = None if rows.size == 0 else (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
    assert regions.box == expected_box


# -- the fill -------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", FILLS)
@pytest.mark.parametrize("name", ["middle", "top-left corner", "right edge", "speckle", "everything", "nothing"])
def test_fill_window_is_the_whole_image_fill_cut_to_the_box(how, name):
    pixels, mask = gradient_image(WIDTH, HEIGHT, seed=21), as_mask(name)
    rows, columns = np.nonzero(mask >= 0.5)
    # The box only just holds the hole (padding 0) or is larger; near an edge it is cut by the image.
    for margin in (0, 9):
        if rows.size == 0:
            box = (slice(50, 80), slice(60, 100))
        else:
            box = (slice(max(rows.min() - margin, 0), rows.max() + 1 + margin), slice(max(columns.min() - margin, 0), columns.max() + 1 + margin))
        assert_identical(fill_window(pixels, mask, how, 5, box), fill_masked(pixels, mask, how, seed=5)[box])
