"""The crop path's pixel work is done only near the mask; every output pixel must be what the whole-image
computation gives. Each reference here is that straightforward computation over the whole image."""

from __future__ import annotations

import numpy as np
import pytest

from inpaintkit import Inpainter
from inpaintkit.color import match_color
from inpaintkit.crop import crop_map, crop_to_window, crop_window, paste_window
from inpaintkit.fill import FILLS, fill_masked, fill_window
from inpaintkit.finish import paste_back
from inpaintkit.io import load_image_and_mask
from inpaintkit.masks import binarize, feather, grow, mask_regions, soft_change_map
from inpaintkit.settings import InpaintSettings

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
    expected_box = (
        None if rows.size == 0 else (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
    )
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
            box = (
                slice(max(rows.min() - margin, 0), rows.max() + 1 + margin),
                slice(max(columns.min() - margin, 0), columns.max() + 1 + margin),
            )
        assert_identical(fill_window(pixels, mask, how, 5, box), fill_masked(pixels, mask, how, seed=5)[box])


# -- whole jobs -----------------------------------------------------------------------------------


def whole_image_crop_job(
    inpainter: Inpainter, pixels: np.ndarray, mask: np.ndarray, settings: InpaintSettings, engine_calls
):
    """The crop path with every map, fill and finishing step over the whole image.

    The model's outputs are the ones the job under test got; its inputs must be the same too."""
    method = inpainter.check(settings)
    repaint, weight, change = whole_image_maps(mask, settings.mask_grow, settings.mask_blur, method.soft_mask)
    filled = fill_masked(pixels, repaint, settings.fill, seed=settings.seed)
    window = crop_window(weight > 0, settings.crop_padding, inpainter.capabilities.native_size)
    work_pixels, work_repaint = crop_to_window(filled, repaint, window)
    (seen_pixels, seen_repaint, seen_change), outputs = engine_calls[0]
    assert_identical(seen_pixels, work_pixels)
    assert_identical(seen_repaint, work_repaint)
    if change is not None:
        assert_identical(seen_change, crop_map(change, window))
    images = []
    for output in outputs:
        generated = method.finish(settings, paste_window(pixels, output, window), pixels, repaint)
        if settings.color_match:
            generated = match_color(generated, pixels, repaint)
        images.append(paste_back(generated, pixels, weight) if settings.paste_back else generated)
    return images


@pytest.fixture
def engine_calls(monkeypatch):
    """Records what the engine was given and what it returned, for each job."""
    calls = []
    denoise_padded = Inpainter._denoise_padded

    def recording(self, pixels, repaint, change, *rest):
        outputs, tiled = denoise_padded(self, pixels, repaint, change, *rest)
        calls.append(((pixels, repaint, change), outputs))
        return outputs, tiled

    monkeypatch.setattr(Inpainter, "_denoise_padded", recording)
    return calls


JOBS = {
    "plain": ("middle", dict(crop_padding=16)),
    "blur grow colour": ("middle", dict(crop_padding=16, mask_blur=6, mask_grow=3, color_match=True)),
    "corner, no padding, colour": ("top-left corner", dict(crop_padding=0, mask_blur=5, color_match=True)),
    "edge, eroded": ("right edge", dict(crop_padding=8, mask_grow=-2, mask_blur=4)),
    "telea": ("speckle", dict(crop_padding=0, fill="telea", strength=0.6, mask_grow=2)),
    "ns": ("right edge", dict(crop_padding=4, fill="ns", strength=0.6)),
    "noise": ("speckle", dict(crop_padding=12, fill="noise", strength=0.6, color_match=True)),
    "blur fill": ("top-left corner", dict(crop_padding=12, fill="blur", strength=0.6)),
    "no paste-back": ("speckle", dict(crop_padding=6, paste_back=False, color_match=True, mask_blur=3)),
    "two images": ("middle", dict(crop_padding=10, num_images=2, mask_blur=4, color_match=True)),
    "soft": ("grey blobs", dict(crop_padding=10, method="soft", mask_blur=5, mask_grow=2)),
    "soft, no paste-back": (
        "grey blobs",
        dict(crop_padding=0, method="soft", mask_blur=4, paste_back=False, color_match=True),
    ),
    "bld pixel": ("middle", dict(crop_padding=8, method="bld", reconstruct="pixel", mask_blur=2, num_images=2)),
    "bld poisson": ("top-left corner", dict(crop_padding=0, method="bld", reconstruct="poisson")),
    "bld poisson, no paste-back": (
        "speckle",
        dict(crop_padding=5, method="bld", reconstruct="poisson", paste_back=False, color_match=True),
    ),
    "bld optimize": ("right edge", dict(crop_padding=8, method="bld", mask_blur=3)),
    "whole image masked": ("everything", dict(crop_padding=4, color_match=True, mask_blur=2)),
}


@pytest.mark.parametrize("job", list(JOBS))
def test_crop_job_equals_the_whole_image_computation(job, inpainter4, engine_calls):
    name, options = JOBS[job]
    pixels = gradient_image(WIDTH, HEIGHT, seed=31)
    settings = InpaintSettings.from_options(prompt="x", steps=2, seed=7, **options)
    outputs = inpainter4.run(pixels, MASKS[name], settings)
    expected = whole_image_crop_job(inpainter4, *load_image_and_mask(pixels, MASKS[name]), settings, engine_calls)
    assert len(outputs) == len(expected) == settings.num_images
    for output, reference in zip(outputs, expected):
        assert_identical(np.asarray(output), reference)


def test_native_crop_job_equals_the_whole_image_computation(inpainter9, engine_calls):
    pixels = gradient_image(WIDTH, HEIGHT, seed=32)
    settings = InpaintSettings.from_options(
        prompt="x", steps=2, seed=8, crop_padding=6, mask_blur=3, color_match=True, num_images=2
    )
    outputs = inpainter9.run(pixels, MASKS["speckle"], settings)
    expected = whole_image_crop_job(inpainter9, *load_image_and_mask(pixels, MASKS["speckle"]), settings, engine_calls)
    assert len(outputs) == len(expected) == settings.num_images
    for output, reference in zip(outputs, expected):
        assert_identical(np.asarray(output), reference)
