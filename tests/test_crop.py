"""Crop-to-mask: the window around the mask, its work size, and cutting out and pasting back."""

from __future__ import annotations

import numpy as np
import pytest

from inpaintkit.crop import Window, crop_to_window, crop_window, paste_window
from inpaintkit.errors import InputError

from .conftest import box_mask, gradient_image


def region(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """HxW float32 mask in [0, 1], 1 inside box = (left, top, right, bottom)."""
    return box_mask(width, height, box).astype(np.float32) / 255.0


def inside_image(window: Window, width: int, height: int) -> bool:
    return 0 <= window.left < window.right <= width and 0 <= window.top < window.bottom <= height


@pytest.mark.parametrize(
    "box",
    [(150, 120, 190, 140), (10, 10, 20, 290), (0, 0, 400, 5), (390, 295, 400, 300), (200, 150, 201, 151)],
)
def test_window_contains_region_plus_padding(box):
    padding = 16
    window = crop_window(region(400, 300, box), padding, native_size=512)
    left, top, right, bottom = box
    assert inside_image(window, 400, 300)
    # The padding is cut only where the image ends.
    assert window.left <= max(left - padding, 0) and window.top <= max(top - padding, 0)
    assert window.right >= min(right + padding, 400) and window.bottom >= min(bottom + padding, 300)


def test_region_is_read_at_half_and_accepts_bool():
    soft = region(400, 300, (150, 120, 190, 140))
    soft[0:10, 0:10] = 0.49  # below 0.5: not part of the region, so it must not pull the window to the corner
    window = crop_window(soft, 8, native_size=512)
    assert window == crop_window(soft >= 0.5, 8, native_size=512)
    assert window.left > 100 and window.top > 80


@pytest.mark.parametrize(
    "box, padding, expected",
    [
        # wide 40x20 box + 2*10 padding = 60x40 -> 60x60, widened by 10 above and below
        ((170, 140, 210, 160), 10, (160, 120, 220, 180)),
        # tall 20x40 box + 2*10 padding = 40x60 -> 60x60, widened by 10 left and right
        ((190, 130, 210, 170), 10, (170, 120, 230, 180)),
        # no padding; odd difference (31x10): the spare pixel goes right/bottom
        ((100, 100, 131, 110), 0, (100, 90, 131, 121)),
    ],
)
def test_square_around_the_centre_when_it_fits(box, padding, expected):
    window = crop_window(region(400, 300, box), padding, native_size=512)
    assert (window.left, window.top, window.right, window.bottom) == expected
    assert window.width == window.height


# A 40x40 box with 30 px padding is a 100x100 window in the middle of a 400x300 image.
MIDDLE = (180, 130, 220, 170)
EDGES = {
    "left": ((0, 130, 40, 170), (0, None)),
    "right": ((360, 130, 400, 170), (300, None)),
    "top": ((180, 0, 220, 40), (None, 0)),
    "bottom": ((180, 260, 220, 300), (None, 200)),
    "near-left": ((5, 130, 45, 170), (0, None)),
    "top-left": ((0, 0, 40, 40), (0, 0)),
    "top-right": ((360, 0, 400, 40), (300, 0)),
    "bottom-left": ((0, 260, 40, 300), (0, 200)),
    "bottom-right": ((360, 260, 400, 300), (300, 200)),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_shifted_not_shrunk_at_edges_and_corners(name):
    box, (expected_left, expected_top) = EDGES[name]
    middle = crop_window(region(400, 300, MIDDLE), 30, native_size=512)
    window = crop_window(region(400, 300, box), 30, native_size=512)
    assert (middle.width, middle.height) == (100, 100)
    assert (window.width, window.height) == (middle.width, middle.height)
    assert (window.work_width, window.work_height) == (middle.work_width, middle.work_height)
    assert inside_image(window, 400, 300)
    if expected_left is not None:
        assert window.left == expected_left
    else:
        assert (window.left, window.right) == (150, 250)  # the other axis stays centred
    if expected_top is not None:
        assert window.top == expected_top
    else:
        assert (window.top, window.bottom) == (100, 200)


def test_clamped_only_along_the_axis_where_the_square_is_larger_than_the_image():
    # 1000x300 image, a 40x260 region: with 32 px padding the box is 104x324, the square 324x324.
    window = crop_window(region(1000, 300, (480, 20, 520, 280)), 32, native_size=512)
    assert (window.top, window.bottom) == (0, 300)  # 324 > 300: clamped to the image
    assert (window.left, window.right) == (338, 662)  # 324 <= 1000: kept at the square's size, centred
    assert window.work_width == 512
    assert window.work_height == 472  # 300 * 512 / 324 = 474.1, rounded to a multiple of 8


def test_a_square_exactly_the_image_size_is_not_clamped_or_shifted_off():
    window = crop_window(region(300, 300, (100, 100, 200, 200)), 100, native_size=64)
    assert (window.left, window.top, window.right, window.bottom) == (0, 0, 300, 300)
    assert (window.work_width, window.work_height) == (64, 64)


@pytest.mark.parametrize(
    "size, box, padding, native",
    [
        ((400, 300), (190, 140, 210, 160), 4, 512),  # 28x28: upscaled
        ((4000, 3000), (100, 100, 2900, 2800), 0, 512),  # 2800x2800: downscaled
        ((1000, 300), (480, 20, 520, 280), 32, 512),  # clamped: 324x300
        ((300, 1000), (20, 480, 280, 520), 32, 512),  # clamped the other way: 300x324
        ((2000, 90), (0, 10, 2000, 80), 0, 512),  # 2000x90 rectangle
        ((1000, 300), (480, 20, 520, 280), 32, 64),  # the tiny model's native size
        ((130, 50), (0, 0, 130, 50), 7, 64),  # the whole image
    ],
)
def test_work_size_longer_side_is_native_and_aspect_is_kept(size, box, padding, native):
    window = crop_window(region(*size, box), padding, native_size=native)
    longer, shorter = sorted((window.work_width, window.work_height), reverse=True)
    assert longer == native
    assert window.work_width % 8 == 0 and window.work_height % 8 == 0
    scale = native / max(window.width, window.height)
    assert abs(window.work_width - window.width * scale) <= 4  # rounding to the nearest multiple of 8
    assert abs(window.work_height - window.height * scale) <= 4
    assert (window.work_width >= window.work_height) == (window.width >= window.height)


def test_work_size_is_at_least_one_multiple():
    window = crop_window(region(4000, 10, (0, 0, 4000, 10)), 0, native_size=512)
    assert (window.width, window.height) == (4000, 10)
    assert (window.work_width, window.work_height) == (512, 8)  # 10 * 512 / 4000 = 1.3 would round to 0


def test_other_multiple():
    window = crop_window(region(1000, 300, (480, 20, 520, 280)), 32, native_size=512, multiple=64)
    assert (window.work_width, window.work_height) == (512, 448)  # 474.1 -> nearest multiple of 64


def test_negative_padding_is_an_input_error():
    with pytest.raises(InputError) as raised:
        crop_window(region(100, 100, (10, 10, 20, 20)), -3, native_size=64)
    assert str(raised.value) == "Crop padding must be 0 or more pixels, got -3."


def test_empty_region_is_a_programming_error_not_an_input_error():
    with pytest.raises(ValueError) as raised:
        crop_window(np.zeros((50, 60), dtype=np.float32), 8, native_size=64)
    assert not isinstance(raised.value, InputError)


def test_large_photo_small_mask_works_at_native_size():
    mask = region(4000, 3000, (1800, 1300, 2056, 1556))  # 256x256
    window = crop_window(mask, 32, native_size=512)
    assert (window.left, window.top, window.right, window.bottom) == (1768, 1268, 2088, 1588)
    assert (window.work_width, window.work_height) == (512, 512)
    pixels = np.zeros((3000, 4000, 3), dtype=np.uint8)
    work_image, work_mask = crop_to_window(pixels, mask, window)
    assert work_image.shape == (512, 512, 3) and work_mask.shape == (512, 512)


def test_crop_to_window_shapes_types_and_binary_mask():
    pixels = gradient_image(1000, 300, seed=3)
    mask = region(1000, 300, (480, 20, 520, 280))
    window = crop_window(mask, 32, native_size=64)  # 324x300 -> 64x56: downscaled, non-square
    work_image, work_mask = crop_to_window(pixels, mask, window)
    assert work_image.shape == (56, 64, 3) and work_image.dtype == np.uint8
    assert work_mask.shape == (56, 64) and work_mask.dtype == np.float32
    assert set(np.unique(work_mask)) <= {0.0, 1.0}
    # The mask keeps its place and size: 40/324 of the width, 260/300 of the height.
    columns = np.flatnonzero(work_mask.any(axis=0))
    rows = np.flatnonzero(work_mask.any(axis=1))
    assert abs(columns.size - 40 * 64 / 324) <= 1 and abs(rows.size - 260 * 56 / 300) <= 1
    assert abs((columns[0] + columns[-1] + 1) / 2 - 32) <= 1


@pytest.mark.parametrize("density, expected", [(0.9, 1.0), (0.1, 0.0)])
def test_downscaled_mask_follows_coverage_not_single_samples(density, expected):
    # A fine speckle, 4x downscaled: each work pixel covers ~16 source pixels, about `density` of them
    # repaint. Bilinear + 0.5 gives every work pixel the majority's value; nearest would copy the speckle.
    mask = (np.random.default_rng(9).random((256, 256)) < density).astype(np.float32)
    window = crop_window(mask, 0, native_size=64)
    assert (window.width, window.height, window.work_width, window.work_height) == (256, 256, 64, 64)
    _, work_mask = crop_to_window(np.zeros((256, 256, 3), dtype=np.uint8), mask, window)
    assert np.all(work_mask == expected)


def test_crop_to_window_at_work_size_is_an_exact_cut():
    pixels = gradient_image(200, 150, seed=4)
    mask = region(200, 150, (60, 40, 100, 80))
    window = crop_window(mask, 12, native_size=64)
    assert (window.width, window.height) == (64, 64)
    work_image, work_mask = crop_to_window(pixels, mask, window)
    assert np.array_equal(work_image, pixels[28:92, 48:112])
    assert np.array_equal(work_mask, mask[28:92, 48:112])


def test_crop_to_window_upscales_the_image_smoothly():
    pixels = gradient_image(400, 300, seed=5)
    mask = region(400, 300, (190, 140, 210, 160))
    window = crop_window(mask, 6, native_size=512)  # 32x32 -> 512x512
    work_image, _ = crop_to_window(pixels, mask, window)
    # Each source pixel becomes a 16x16 block; Lanczos' average over a block stays close to it.
    blocks = work_image.astype(np.float32).reshape(32, 16, 32, 16, 3).mean(axis=(1, 3))
    source = pixels[window.top : window.bottom, window.left : window.right].astype(np.float32)
    assert np.abs(blocks - source).mean() < 6


def test_paste_window_changes_only_the_window():
    full = gradient_image(400, 300, seed=6)
    window = crop_window(region(400, 300, (360, 10, 390, 50)), 20, native_size=64)
    result = np.random.default_rng(0).integers(0, 256, size=(window.work_height, window.work_width, 3), dtype=np.uint8)
    before = full.copy()
    pasted = paste_window(full, result, window)
    assert np.array_equal(full, before)  # the input is not modified
    assert pasted.shape == full.shape and pasted.dtype == np.uint8
    outside = np.ones((300, 400), dtype=bool)
    outside[window.top : window.bottom, window.left : window.right] = False
    assert np.array_equal(pasted[outside], full[outside])
    assert not np.array_equal(pasted[~outside], full[~outside])


def test_crop_then_paste_round_trip_puts_pixels_back_in_place():
    # Non-square window (clamped), downscaled then upscaled: a swapped width/height or an offset shows.
    full = gradient_image(1000, 300, seed=7)
    mask = region(1000, 300, (480, 20, 520, 280))
    window = crop_window(mask, 32, native_size=256)
    work_image, _ = crop_to_window(full, mask, window)
    pasted = paste_window(full, work_image, window)
    inside = (slice(window.top, window.bottom), slice(window.left, window.right))
    difference = np.abs(pasted[inside].astype(np.int16) - full[inside].astype(np.int16))
    assert difference.mean() < 16  # the texture is lost at the lower resolution, the gradients are not
    smooth = lambda image: image.astype(np.float32).reshape(30, 10, 81, 4, 3).mean(axis=(1, 3))  # noqa: E731
    assert np.abs(smooth(pasted[inside]) - smooth(full[inside])).max() < 6


def test_paste_window_at_work_size_is_exact():
    full = gradient_image(200, 150, seed=8)
    window = crop_window(region(200, 150, (60, 40, 100, 80)), 12, native_size=64)
    result = np.full((64, 64, 3), 17, dtype=np.uint8)
    pasted = paste_window(full, result, window)
    assert np.array_equal(pasted[28:92, 48:112], result)


def test_paste_window_refuses_a_result_of_another_size():
    window = Window(0, 0, 64, 32, 64, 32)
    with pytest.raises(ValueError):
        paste_window(np.zeros((40, 80, 3), dtype=np.uint8), np.zeros((64, 32, 3), dtype=np.uint8), window)
