"""Awkward but valid inputs: image modes, EXIF orientation, sizes that are not multiples of 8, alpha masks.

Each runs end to end on the tiny model; the property checked is that the output has the input's
size and that every pixel outside the mask is the input's pixel, converted as documented.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inpaintkit.io import load_image_and_mask

from .conftest import box_mask, gradient_image


def run_tiny(inpainter, image, mask=None, **options):
    return np.asarray(inpainter(image, mask, "a cat", steps=2, seed=1, **options)[0])


def assert_background_kept(output, expected_rgb, mask):
    outside = np.asarray(mask) < 128
    assert output.shape == expected_rgb.shape
    assert np.array_equal(output[outside], expected_rgb[outside])


def rgb(width=40, height=24):
    return gradient_image(width, height, seed=11)


MODES = {
    # mode: (make the image from RGB pixels, the RGB pixels inpaintkit must see)
    "RGBA": (lambda p: Image.fromarray(p).convert("RGBA"), lambda p: p),
    "P": (
        lambda p: Image.fromarray(p).quantize(64),
        lambda p: np.asarray(Image.fromarray(p).quantize(64).convert("RGB")),
    ),
    "L": (
        lambda p: Image.fromarray(p).convert("L"),
        lambda p: np.repeat(np.asarray(Image.fromarray(p).convert("L"))[..., None], 3, 2),
    ),
    "LA": (
        lambda p: Image.fromarray(p).convert("LA"),
        lambda p: np.repeat(np.asarray(Image.fromarray(p).convert("L"))[..., None], 3, 2),
    ),
    "CMYK": (
        lambda p: Image.fromarray(p).convert("CMYK"),
        lambda p: np.asarray(Image.fromarray(p).convert("CMYK").convert("RGB")),
    ),
    "I;16": (
        lambda p: Image.fromarray(p[..., 0].astype(np.uint16) * 257),
        lambda p: np.repeat(p[..., :1], 3, 2),  # 16-bit v -> round(v / 257): exactly the 8-bit value back
    ),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_image_modes_are_converted(mode, tmp_path, inpainter9):
    make, expected = MODES[mode]
    pixels = rgb()
    mask = box_mask(40, 24, (10, 5, 30, 20))
    path = tmp_path / ("image.tiff" if mode in ("CMYK", "I;16") else "image.png")
    picture = make(pixels)
    picture.save(path)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    with Image.open(path) as reopened:
        assert reopened.mode == mode  # the file really is in that mode
    output = run_tiny(inpainter9, path, tmp_path / "mask.png")
    assert_background_kept(output, expected(pixels), mask)


@pytest.mark.parametrize("mask_mode", ["1", "L", "RGB", "RGBA", "I;16"])
def test_mask_modes(mask_mode, inpainter9):
    mask = box_mask(40, 24, (10, 5, 30, 20))
    if mask_mode == "I;16":
        mask_image = Image.fromarray(mask.astype(np.uint16) * 257)
    else:
        mask_image = Image.fromarray(mask).convert(mask_mode)
    output = run_tiny(inpainter9, rgb(), mask_image, paste_back=True)
    assert_background_kept(output, rgb(), mask)
    assert not np.array_equal(output[mask > 0], rgb()[mask > 0])  # the masked region was repainted


def test_exif_orientation_is_applied(tmp_path, inpainter9):
    """A JPEG stored 40x24 with orientation 6 (rotate 90 clockwise) is a 24x40 picture."""
    stored = Image.fromarray(rgb(40, 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    stored.save(path, exif=exif, quality=95)
    upright = np.asarray(Image.open(path).transpose(Image.Transpose.ROTATE_270))
    assert upright.shape == (40, 24, 3)
    mask = box_mask(24, 40, (4, 10, 20, 30))  # drawn on the upright picture
    output = run_tiny(inpainter9, path, Image.fromarray(mask))
    assert_background_kept(output, upright, mask)


@pytest.mark.parametrize("width, height", [(37, 29), (5, 3), (130, 9), (1, 1)])
def test_sizes_that_are_not_multiples_of_eight(width, height, inpainter9):
    pixels = gradient_image(width, height, seed=2)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 3 : height // 3 + max(height // 2, 1), width // 4 : width // 4 + max(width // 2, 1)] = 255
    output = run_tiny(inpainter9, pixels, mask)
    assert output.shape == (height, width, 3)
    assert_background_kept(output, pixels, mask)


def test_alpha_channel_is_the_mask(inpainter9):
    """Without a mask, transparent pixels are repainted and opaque ones kept."""
    pixels = rgb()
    alpha = np.full((24, 40), 255, np.uint8)
    alpha[6:18, 12:28] = 0
    rgba = Image.fromarray(np.dstack([pixels, alpha]), mode="RGBA")
    output = run_tiny(inpainter9, rgba)
    transparent_is_mask = 255 - alpha
    assert_background_kept(output, pixels, transparent_is_mask)
    assert not np.array_equal(output[alpha == 0], pixels[alpha == 0])


def test_grey_mask_values_are_binarised_at_128():
    mask = np.array([[0, 127, 128, 255]], np.uint8)
    _, values = load_image_and_mask(np.zeros((1, 4, 3), np.uint8), mask)
    from inpaintkit.masks import binarize

    assert binarize(values).tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_empty_mask_returns_the_input_with_a_warning(inpainter9, caplog):
    pixels = rgb()
    with caplog.at_level("WARNING", logger="inpaintkit"):
        outputs = inpainter9(pixels, np.zeros((24, 40), np.uint8), "anything", num_images=2, seed=3)
    assert [np.array_equal(np.asarray(each), pixels) for each in outputs] == [True, True]
    assert "mask is empty" in caplog.text


def test_mask_eroded_to_nothing_returns_the_input(inpainter9, caplog):
    pixels = rgb()
    with caplog.at_level("WARNING", logger="inpaintkit"):
        output = run_tiny(inpainter9, pixels, box_mask(40, 24, (10, 10, 13, 13)), mask_grow=-3)
    assert np.array_equal(output, pixels)
    assert "after --mask-grow" in caplog.text


@pytest.mark.parametrize(
    "mask",
    [
        np.pad(np.ones((4, 4), bool), 2),  # True = repaint
        np.pad(np.ones((4, 4), np.float32), 2),  # floats in [0, 1]
        np.pad(np.full((4, 4), 255, np.int64), 2),  # integers as 8-bit values
        np.pad(np.full((4, 4), 65535, np.uint16), 2),  # 16-bit
    ],
    ids=["bool", "float", "int64", "uint16"],
)
def test_mask_arrays_of_any_dtype(mask):
    _, values = load_image_and_mask(np.zeros((8, 8, 3), np.uint8), mask)
    from inpaintkit.masks import binarize

    assert np.array_equal(binarize(values), np.pad(np.ones((4, 4), np.float32), 2))


def test_uint8_arrays_load_exactly_as_the_same_pictures_in_png_files(tmp_path):
    """uint8 arrays skip Pillow (a speed path); they must give the values the files give."""
    pixels = np.asfortranarray(gradient_image(40, 24, seed=5))  # not C-contiguous: still copied correctly
    mask = (np.arange(24 * 40).reshape(24, 40) % 256).astype(np.uint8)  # every grey level, not just 0 and 255
    Image.fromarray(np.ascontiguousarray(pixels)).save(tmp_path / "image.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    from_arrays = load_image_and_mask(pixels, mask)
    from_files = load_image_and_mask(tmp_path / "image.png", tmp_path / "mask.png")
    for ours, reference in zip(from_arrays, from_files):
        assert ours.dtype == reference.dtype and ours.flags.c_contiguous and ours.flags.writeable
        assert np.array_equal(ours, reference)
    assert not np.shares_memory(from_arrays[0], pixels)  # the caller's array is never written to


def test_an_rgb_array_without_a_mask_is_one_sentence():
    from inpaintkit import InputError

    with pytest.raises(
        InputError, match="No mask was given and the image has no alpha channel to use as one; pass a mask."
    ):
        load_image_and_mask(rgb(), None)


def test_rgba_mask_marks_only_its_opaque_strokes(inpainter9):
    """A mask painted on a transparent layer: the colour hidden under transparent pixels must not count."""
    stroke = box_mask(40, 24, (10, 5, 30, 20))
    white_everywhere = np.full((24, 40, 3), 255, np.uint8)
    mask_layer = Image.fromarray(np.dstack([white_everywhere, stroke]), mode="RGBA")
    output = run_tiny(inpainter9, rgb(), mask_layer)
    assert_background_kept(output, rgb(), stroke)


@pytest.mark.parametrize(
    "options, phrase",
    [
        ({"steps": 2.5}, "Setting steps must be a whole number, got 2.5"),
        ({"steps": "3"}, "Setting steps must be a whole number, got '3'"),
        ({"guidance": "7"}, "Setting guidance must be a number"),
        ({"paste_back": "no"}, "Setting paste_back must be true or false"),
        ({"guidance": float("nan")}, "must be a finite number"),
        ({"seed": 1.5}, "Setting seed must be a whole number"),
        ({"steps": 5000}, "at most the model's 1000 training timesteps"),
        # PNDM (the tiny model's default) and DDIM count from timestep 1: 1000 steps would start at 1000.
        ({"steps": 1000}, "1000 steps with PNDMScheduler would start past the model's last training timestep (999)"),
        ({"steps": 1000, "scheduler": "ddim"}, "with DDIMScheduler would start past"),
        ({"guidance": 1e300}, "Guidance must be between 0 and 100, got 1e+300"),
        # Python ints are unbounded: float() of this one overflows, and torch cannot hold it.
        ({"guidance": 10**400}, "Setting guidance is far outside any useful range"),
        ({"steps": 10**30}, "Setting steps is far outside any useful range"),
    ],
)
def test_api_rejects_wrong_types_with_one_sentence(inpainter9, options, phrase):
    from inpaintkit import InputError

    with pytest.raises(InputError) as caught:
        inpainter9(rgb(), box_mask(40, 24, (10, 5, 30, 20)), "x", **options)
    assert phrase in str(caught.value)


def test_api_accepts_numpy_scalars(inpainter9):
    output = inpainter9(
        rgb(), box_mask(40, 24, (10, 5, 30, 20)), "x", steps=np.int64(2), guidance=np.float32(3.0), seed=np.uint32(4)
    )
    assert output[0].info["inpaintkit"]["steps"] == 2 and output[0].info["inpaintkit"]["seed"] == 4


def test_a_mask_grow_far_beyond_the_image_is_cheap_and_covers_it(inpainter9):
    """soft grows grey levels with a disk: a radius of a million pixels must not allocate a million-pixel disk."""
    output = inpainter9(
        rgb(), box_mask(40, 24, (10, 5, 30, 20)), "x", method="soft", mask_grow=1_000_000, steps=2, seed=1
    )
    assert output[0].size == (40, 24)
    assert not np.array_equal(np.asarray(output[0]), rgb())  # everything was repaintable
