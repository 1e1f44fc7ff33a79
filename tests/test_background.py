"""Paste-back: every pixel outside the grown mask and its blur band is the input's, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from inpaintkit.masks import binarize, feather, grow

from .conftest import box_mask, gradient_image
from .helpers import distance_to_nearest

WIDTH, HEIGHT = 64, 48


@pytest.mark.parametrize(
    "fixture, method", [("inpainter9", "native"), ("inpainter4", "blend"), ("inpainter9", "blend")]
)
@pytest.mark.parametrize("grow_px, blur_px", [(0, 0), (3, 0), (0, 4), (2, 5), (-2, 3)])
def test_outside_mask_and_band_is_identical(request, fixture, method, grow_px, blur_px):
    inpainter = request.getfixturevalue(fixture)
    pixels = gradient_image(WIDTH, HEIGHT, seed=21)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[12:30, 20:44] = 255
    mask[35:40, 5:9] = 255  # a second, small region
    options = dict(method=method, steps=3, seed=5, mask_grow=grow_px, mask_blur=blur_px)
    pasted = np.asarray(inpainter(pixels, mask, "a boat", **options)[0]).astype(int)
    raw = np.asarray(inpainter(pixels, mask, "a boat", paste_back=False, **options)[0]).astype(int)

    # The grown mask and band computed here by brute force, independently of inpaintkit.masks.
    if grow_px >= 0:
        grown = distance_to_nearest(mask > 0) <= grow_px
    else:
        grown = distance_to_nearest(mask == 0) > -grow_px
    outside_band = distance_to_nearest(grown) >= blur_px + 1

    assert np.array_equal(pasted[outside_band], pixels[outside_band])
    assert np.array_equal(pasted[grown], raw[grown])  # inside the grown mask: what the model made
    band = ~grown & ~outside_band
    low, high = np.minimum(raw, pixels)[band], np.maximum(raw, pixels)[band]
    assert np.all((pasted[band] >= low) & (pasted[band] <= high))  # the band only mixes the two
    if blur_px:
        assert np.any((pasted[band] != pixels[band]) & (pasted[band] != raw[band]))  # and it does mix


def test_without_paste_back_the_background_changes(inpainter9):
    """The VAE round trip alters unmasked pixels: this is why paste-back is on by default."""
    pixels = gradient_image(WIDTH, HEIGHT, seed=22)
    mask = box_mask(WIDTH, HEIGHT, (20, 12, 44, 30))
    raw = np.asarray(inpainter9(pixels, mask, "x", steps=2, seed=1, paste_back=False)[0])
    assert not np.array_equal(raw[mask == 0], pixels[mask == 0])


def test_grow_and_erode_match_a_disk():
    mask = binarize(box_mask(30, 20, (10, 5, 20, 15)) / 255.0)
    grown = grow(mask, 3)
    assert np.array_equal(grown > 0, distance_to_nearest(mask > 0) <= 3)
    eroded = grow(mask, -2)
    assert np.array_equal(eroded > 0, box_mask(30, 20, (12, 7, 18, 13)) > 0)


def test_feather_is_one_on_the_mask_and_zero_beyond_the_band():
    mask = binarize(box_mask(30, 20, (10, 5, 20, 15)) / 255.0)
    weight = feather(mask, 4)
    distance = distance_to_nearest(mask > 0)
    assert np.all(weight[mask > 0] == 1.0)
    assert np.all(weight[distance >= 5] == 0.0)
    ring = (distance > 0) & (distance < 5)
    assert np.all((weight[ring] > 0) & (weight[ring] < 1))
    # decreasing with distance
    order = np.argsort(distance[ring])
    assert np.all(np.diff(weight[ring][order]) <= 1e-6)
