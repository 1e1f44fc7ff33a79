"""Issue 13's input items for the core and CLI: malformed EXIF (6), file names the file system refuses (8), a
quiet Python API (16) and a warning for a swapped image and mask (17)."""

from __future__ import annotations

import io
import logging
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from inpaintkit.errors import InputError
from inpaintkit.io import load_image_and_mask, open_image

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli

WIDTH, HEIGHT = 64, 48
PIXELS = gradient_image(WIDTH, HEIGHT, seed=70)
MASK = box_mask(WIDTH, HEIGHT, (16, 8, 48, 40))


def png_bytes(pixels: np.ndarray, exif: bytes | None = None) -> bytes:
    """A PNG, with an eXIf chunk holding `exif` (raw, as the PNG spec has it: TIFF data) when given."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = buffer.getvalue()
    if exif is None:
        return data
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + exif) & 0xFFFFFFFF)
    return data[:33] + chunk + data[33:]  # after the 8-byte signature and the 25-byte IHDR chunk


# -- 6. malformed EXIF -----------------------------------------------------------------------------------


def test_a_malformed_exif_block_is_one_sentence_from_a_file(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(PIXELS, exif=b"garbage!"))
    with pytest.raises(InputError, match="The image's EXIF metadata is malformed"):
        open_image(path, "image")


def test_a_malformed_exif_block_is_one_sentence_from_a_decoded_picture():
    # The service decodes uploads itself and hands Pillow images over: this path had no error handling.
    picture = Image.open(io.BytesIO(png_bytes(PIXELS, exif=b"garbage!")))
    picture.load()
    with pytest.raises(InputError, match="The mask's EXIF metadata is malformed"):
        load_image_and_mask(PIXELS, picture)


def test_a_malformed_webp_exif_block_is_one_sentence(tmp_path):
    path = tmp_path / "photo.webp"
    Image.fromarray(PIXELS).save(path, format="WEBP", exif=b"Exif\x00\x00garbage!")
    with pytest.raises(InputError, match="EXIF metadata is malformed"):
        open_image(path, "image")


def test_a_malformed_exif_block_is_exit_2_from_the_cli(tmp_path, tiny9, capsys):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(PIXELS, exif=b"garbage!"))
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    code, _, err = run_cli(
        ["run", "--image", image, "--mask", tmp_path / "mask.png", "--output", tmp_path / "o.png", "--model", tiny9],
        capsys,
    )
    assert_one_line_error(code, err, "EXIF metadata is malformed")


# -- 8. names the file system refuses ---------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path):
    Image.fromarray(PIXELS).save(tmp_path / "photo.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    return tmp_path / "photo.png", tmp_path / "mask.png"


@pytest.mark.parametrize(
    "output, num_images, phrase",
    [
        ("a" * 300 + ".png", 1, "File name too long"),  # the name itself
        ("a" * 300 + "/", 1, "File name too long"),  # a folder to create
        ("a" * 250 + ".png", 2, "is 256 bytes long; the file system"),  # NAME-1.png passes the limit
    ],
)
def test_an_output_name_too_long_is_one_sentence_before_the_model_loads(
    tmp_path, inputs, tiny9, capsys, monkeypatch, output, num_images, phrase
):
    def no_loading(*_, **__):
        raise AssertionError("the model must not load for a job whose outputs cannot be written")

    monkeypatch.setattr("inpaintkit.inpainter.Inpainter.from_pretrained", no_loading)
    image, mask = inputs
    arguments = ["run", "--image", image, "--mask", mask, "--model", tiny9, "--num-images", num_images]
    code, _, err = run_cli([*arguments, "--output", f"{tmp_path}/{output}"], capsys)
    assert_one_line_error(code, err, phrase)


def test_an_output_name_at_the_limit_is_written(tmp_path, inputs, tiny9, capsys):
    # The temporary file beside it has a longer name; it used to fail after the work was done.
    image, mask = inputs
    target = tmp_path / ("b" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 4) + ".png")
    arguments = ["run", "--image", image, "--mask", mask, "--model", tiny9, "--steps", "1", "--output", target]
    code, _, err = run_cli(arguments, capsys)
    assert code == 0, err
    assert target.is_file()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, where nothing can be created")
def test_make_tiny_model_into_an_unwritable_place_is_one_sentence(capsys):
    code, _, err = run_cli(["make-tiny-model", "/proc/inpaintkit-test/model"], capsys)
    assert_one_line_error(code, err, "Cannot write the model to /proc/inpaintkit-test/model")


# -- 16. the Python API is quiet -------------------------------------------------------------------------

API_SCRIPT = """
import sys
import numpy as np
import diffusers.utils.logging as diffusers_logging
from inpaintkit import Inpainter
inpainter = Inpainter.from_pretrained(sys.argv[1], device="cpu")
image = np.zeros((64, 64, 3), np.uint8)
mask = np.zeros((64, 64), np.uint8)
mask[8:40, 8:40] = 255
inpainter(image, mask, "x", steps=2, seed=1)
# the embedding application's own settings are as they were
print(diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled())
"""


def test_the_python_api_prints_no_library_chatter(tiny9):
    result = subprocess.run(
        [sys.executable, "-c", API_SCRIPT, str(tiny9)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no loading bars, no transformers/diffusers warnings
    assert result.stdout.split() == [str(logging.WARNING), "True"]


# -- 17. a swapped image and mask ------------------------------------------------------------------------


def test_a_swapped_image_and_mask_get_a_warning(caplog):
    photo = Image.fromarray(PIXELS)
    with caplog.at_level(logging.WARNING, logger="inpaintkit"):
        load_image_and_mask(Image.fromarray(MASK).convert("RGB"), photo)
    assert "were the image and the mask swapped?" in caplog.text


def test_an_anti_aliased_mask_given_as_the_image_still_warns(caplog):
    soft_edges = MASK.copy()
    soft_edges[8, 16:48] = 128  # one anti-aliased row: under 5% of the pixels
    with caplog.at_level(logging.WARNING, logger="inpaintkit"):
        load_image_and_mask(Image.fromarray(soft_edges).convert("RGB"), Image.fromarray(PIXELS))
    assert "swapped" in caplog.text


@pytest.mark.parametrize(
    "mask",
    [
        Image.fromarray(MASK),  # the usual: a greyscale mask
        Image.fromarray(np.stack([MASK, np.zeros_like(MASK), np.zeros_like(MASK)], axis=2)),  # red strokes
        Image.fromarray(PIXELS),  # a colour mask (strange) for a photo: the image is not a mask either
    ],
)
def test_the_right_order_gets_no_warning(caplog, mask):
    with caplog.at_level(logging.WARNING, logger="inpaintkit"):
        load_image_and_mask(Image.fromarray(PIXELS), mask)
    assert "swapped" not in caplog.text


# -- found by review: each a sentence where there was a crash, a hang or a silent loss ----------------------------


def test_a_jpeg_whose_exif_orientation_cannot_be_read_is_refused_like_png_and_webp(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(PIXELS).save(path, format="JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05")
    with pytest.raises(InputError, match="The image's EXIF metadata is malformed"):
        open_image(path, "image")


def test_a_mask_drawn_on_the_stored_pixels_of_a_turned_photo_is_explained(tmp_path):
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to show upright: the stored 64x48 shows as 48x64
    Image.fromarray(PIXELS).save(path, format="JPEG", exif=exif.tobytes())
    with pytest.raises(InputError, match="stored 64x48, turned upright by its EXIF orientation"):
        load_image_and_mask(path, MASK)


def test_a_huge_number_of_images_is_refused_before_any_work(tmp_path, inputs, tiny9, capsys):
    image, mask = inputs
    arguments = ["run", "--image", image, "--mask", mask, "--model", tiny9, "--output", tmp_path / "o.png"]
    code, _, err = run_cli([*arguments, "--num-images", str(2**32)], capsys)  # built 4 billion output names
    assert_one_line_error(code, err, "number of images must be from 1 to 10,000")
    from inpaintkit import InpaintSettings

    with pytest.raises(InputError, match="number of images"):
        InpaintSettings(num_images=10**18).with_seed()  # was ValueError: Upper bound must be positive


@pytest.mark.parametrize(
    "sides, phrase",
    [
        ({"right": 1.5}, "whole numbers of pixels, got --right 1.5"),
        ({"left": True}, "whole numbers of pixels, got --left True"),
        ({"right": 10**5, "top": 10**5}, "more than the 89,478,485 an image may have"),
        ({"right": 2**62}, "more than the 89,478,485"),
    ],
)
def test_outpaint_sizes_are_checked_in_one_sentence(sides, phrase):
    from inpaintkit.outpaint import expand_canvas

    with pytest.raises(InputError, match=phrase):
        expand_canvas(PIXELS, **sides)


def test_pndm_with_few_steps_runs_on_a_model_whose_config_does_not_say_skip_prk(sdxl4):
    calls = []
    handle = sdxl4.components.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        sdxl4(PIXELS, MASK, "x", steps=3, scheduler="pndm", guidance=1.0, seed=1)  # was a broadcasting traceback
    finally:
        handle.remove()
    assert len(calls) == 4  # PLMS: steps + 1 calls, not Runge-Kutta's doubled warm-up


def test_an_sdxl_prompt_too_long_is_warned_once(sdxl4, caplog):
    with caplog.at_level(logging.WARNING, logger="inpaintkit"):
        sdxl4(PIXELS, MASK, "a " * 100, steps=1, guidance=1.0, seed=1)
    assert caplog.text.count("The prompt is") == 1  # not once per text encoder
