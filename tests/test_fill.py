"""fill_masked: known pixels untouched, holes of any size filled from their surroundings."""

from __future__ import annotations

import numpy as np
import pytest

from inpaintkit.errors import InputError
from inpaintkit.fill import FILLS, fill_masked

from .conftest import box_mask, gradient_image

SMOOTH_FILLS = ("blur", "telea", "ns")


def float_mask(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    return box_mask(width, height, box).astype(np.float32) / 255.0


def constant_with_hole(colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 64x48 image of one colour whose hole is black, so an unfilled hole pixel stands out."""
    mask = float_mask(64, 48, box)
    pixels = np.empty((48, 64, 3), dtype=np.uint8)
    pixels[:] = colour
    pixels[mask >= 0.5] = 0
    return pixels, mask


@pytest.mark.parametrize("how", FILLS)
def test_known_pixels_are_byte_identical_and_input_untouched(how):
    pixels = gradient_image(40, 32, seed=1)
    mask = float_mask(40, 32, (8, 6, 30, 24))
    mask[0:4, 0:4] = 0.49  # soft values below 0.5 count as known
    mask[26:30, 34:38] = 0.5  # and from 0.5 as hole
    before = pixels.copy()
    filled = fill_masked(pixels, mask, how)
    assert filled.shape == pixels.shape and filled.dtype == np.uint8
    known = mask < 0.5
    assert np.array_equal(filled[known], pixels[known])
    assert np.array_equal(pixels, before)
    assert not np.shares_memory(filled, pixels)


@pytest.mark.parametrize("how", FILLS)
def test_empty_mask_returns_an_unchanged_copy(how):
    pixels = gradient_image(24, 16, seed=2)
    filled = fill_masked(pixels, np.zeros((16, 24), dtype=np.float32), how)
    assert np.array_equal(filled, pixels)
    assert not np.shares_memory(filled, pixels)


@pytest.mark.parametrize("how", SMOOTH_FILLS)
@pytest.mark.parametrize("box", [(12, 8, 52, 40), (0, 0, 40, 48)], ids=["inside", "touching-edges"])
def test_large_hole_in_constant_image_is_filled_with_that_colour(how, box):
    # Every known pixel is the same colour, so any average of them is that colour; an unfilled
    # (black) pixel would be off by >= 60. Tolerances: the hole's mean within 3 levels and every
    # pixel within 8, because OpenCV's Telea rounds to uint8 as it marches inward and drifts (measured:
    # mean +2.3, max +6 on the edge-touching hole); blur and NS stay within 1.
    colour = np.array((200, 60, 90))
    pixels, mask = constant_with_hole(tuple(colour), box)
    filled = fill_masked(pixels, mask, how)
    hole = filled[mask >= 0.5].astype(int)
    assert np.abs(hole.mean(axis=0) - colour).max() <= 3
    assert np.abs(hole - colour).max() <= 8
    if how != "telea":
        assert np.abs(hole - colour).max() <= 1


@pytest.mark.parametrize("how", SMOOTH_FILLS)
def test_fill_follows_the_nearest_known_colours(how):
    # Left half red, right half blue, a 32 px hole across the boundary: the hole's left edge must be
    # mostly red and its right edge mostly blue, i.e. the fill is local, not one global average.
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (220, 20, 20)
    pixels[:, 32:] = (20, 20, 220)
    mask = float_mask(64, 32, (16, 4, 48, 28))
    pixels[mask >= 0.5] = 0
    filled = fill_masked(pixels, mask, how).astype(int)
    left, right = filled[4:28, 16], filled[4:28, 47]
    assert (left[:, 0] - left[:, 2]).min() > 60
    assert (right[:, 2] - right[:, 0]).min() > 60


def test_blur_follows_a_gradient_smoothly_across_a_large_hole():
    # A 40x40 hole in a ramp rising 4 levels per pixel. Across the hole, including its edges, each
    # step along the ramp must rise by 1 to 12 levels: monotone (no flat or reversed patch), and no
    # seam between pyramid scales (an averaging fill flattens the middle and so steepens the edges,
    # measured up to 10; a seam or an unfilled pixel would jump by tens). Across the ramp: nearly
    # flat (the pyramid's 2x sampling bows the fill a little, measured up to 5 per pixel).
    y, x = np.mgrid[0:64, 0:64]
    pixels = np.stack([x * 4, y * 4, np.full_like(x, 128)], axis=2).astype(np.uint8)
    mask = float_mask(64, 64, (12, 12, 52, 52))
    pixels[mask >= 0.5] = 0
    filled = fill_masked(pixels, mask, "blur").astype(int)[11:53, 11:53]  # the hole and one known pixel round it
    rises = np.concatenate([np.diff(filled[:, :, 0], axis=1).ravel(), np.diff(filled[:, :, 1], axis=0).ravel()])
    assert rises.min() >= 1 and rises.max() <= 12
    assert np.abs(np.diff(filled[:, :, 0], axis=0)).max() <= 6
    assert np.abs(np.diff(filled[:, :, 1], axis=1)).max() <= 6
    assert (filled[:, :, 2] == 128).all()


@pytest.mark.parametrize("how", SMOOTH_FILLS)
def test_all_masked_becomes_mid_grey(how):
    pixels = gradient_image(20, 12, seed=3)
    filled = fill_masked(pixels, np.ones((12, 20), dtype=np.float32), how)
    assert (filled == 127).all()


def test_noise_is_deterministic_per_seed_and_differs_across_seeds():
    pixels = gradient_image(32, 32, seed=4)
    mask = float_mask(32, 32, (4, 4, 28, 28))
    hole = mask >= 0.5
    first = fill_masked(pixels, mask, "noise", seed=7)
    assert np.array_equal(first, fill_masked(pixels, mask, "noise", seed=7))
    other = fill_masked(pixels, mask, "noise", seed=8)
    assert np.mean(first[hole] != other[hole]) > 0.9  # two uniform draws agree on 1/256 of values
    # Uniform over 0..255: standard deviation 73.9; the picture's own hole is far smoother.
    assert abs(first[hole].astype(float).std() - 73.9) < 5


def test_unknown_fill_is_one_sentence_listing_the_choices():
    pixels = gradient_image(8, 8)
    with pytest.raises(InputError) as caught:
        fill_masked(pixels, np.ones((8, 8), dtype=np.float32), "smear")
    message = str(caught.value)
    assert "'smear'" in message
    assert all(name in message for name in FILLS)
    assert message.endswith(".") and "\n" not in message


def test_grey_fills_the_hole_with_the_middle_grey_and_nothing_else():
    pixels = gradient_image(40, 32, seed=3)
    mask = float_mask(40, 32, (8, 6, 30, 24))
    filled = fill_masked(pixels, mask, "grey")
    assert (filled[mask >= 0.5] == 127).all()
    assert np.array_equal(filled[mask < 0.5], pixels[mask < 0.5])
