"""The speed options give the default path's images (within float rounding), or say in the metadata that they do not."""

from __future__ import annotations

import numpy as np
import pytest

from inpaintkit import Inpainter, InputError
from inpaintkit.acceleration import AUTO_TILING_PIXELS, Acceleration, accelerate

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli

JOB = dict(prompt="a red ball", steps=3, seed=5)


def job(inpainter: Inpainter, size: int = 64, **options) -> tuple[np.ndarray, dict]:
    image = gradient_image(size, size)
    mask = box_mask(size, size, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    result = inpainter(image, mask, **JOB, **options)[0]
    return np.asarray(result), result.info["inpaintkit"]


def assert_close(ours: np.ndarray, reference: np.ndarray) -> None:
    # fp32 on CPU: a reordered reduction moves a value by ~1e-6, so after 3 steps and decoding a pixel
    # may round to the neighbouring uint8 value; anything larger would be a real difference.
    difference = np.abs(ours.astype(int) - reference.astype(int))
    assert difference.max() <= 1 and difference.mean() <= 0.05, (difference.max(), difference.mean())


def test_fused_qkv_gives_the_default_images(tiny9, inpainter9):
    fused = Inpainter.from_pretrained(tiny9, device="cpu", fuse_qkv=True)
    ours, parameters = job(fused)
    assert parameters["fuse_qkv"] is True
    assert_close(ours, job(inpainter9)[0])


def test_compiled_unet_gives_the_default_images(tiny9, inpainter9):
    # The wiring of --compile with TorchDynamo's eager backend: Inductor's code generation takes about two
    # minutes for a UNet on this CPU; its speed and numerics are measured on a GPU in benchmarks/.
    compiled = Inpainter.from_pretrained(tiny9, device="cpu")
    accelerate(compiled.components, Acceleration(compile=True), compile_backend="eager")
    assert type(compiled.components.unet).__name__ == "OptimizedModule"
    ours, parameters = job(compiled)
    assert parameters["compile"] is True
    assert_close(ours, job(inpainter9)[0])


def test_auto_vae_tiling_is_off_below_its_threshold_and_recorded(inpainter9):
    _, parameters = job(inpainter9)
    assert parameters["vae_tiling"] is False
    assert Acceleration().tiles(1024, 1024) is False and Acceleration().tiles(1024, 1032) is True
    assert 1024 * 1024 == AUTO_TILING_PIXELS


def test_vae_tiling_on_a_large_image_keeps_the_background_and_says_so(tiny9, inpainter9):
    tiled = Inpainter.from_pretrained(tiny9, device="cpu", vae_tiling="on")
    size = 160  # the tiny VAE's tile is 64 px: this image is decoded in overlapping tiles
    ours, parameters = job(tiled, size=size)
    reference, reference_parameters = job(inpainter9, size=size)
    assert (parameters["vae_tiling"], reference_parameters["vae_tiling"]) == (True, False)
    hole = box_mask(size, size, (size // 4, size // 4, 3 * size // 4, 3 * size // 4)) > 0
    assert np.array_equal(ours[~hole], gradient_image(size, size)[~hole])  # paste-back still exact
    assert not np.array_equal(ours[hole], reference[hole])  # tiling does change the painted pixels: hence the record


def test_vae_tiling_on_an_image_within_one_tile_changes_nothing(tiny9, inpainter9):
    tiled = Inpainter.from_pretrained(tiny9, device="cpu", vae_tiling="on")
    assert np.array_equal(job(tiled)[0], job(inpainter9)[0])


def test_offload_without_a_gpu_is_one_sentence_before_loading(tmp_path, capsys):
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(gradient_image(32, 32)).save(image)
    Image.fromarray(box_mask(32, 32, (8, 8, 16, 16))).save(tmp_path / "mask.png")
    code, _, err = run_cli(
        [
            "run",
            "--image",
            image,
            "--mask",
            tmp_path / "mask.png",
            "--output",
            tmp_path / "out.png",
            "--model",
            tmp_path / "nowhere",
            "--device",
            "cpu",
            "--offload",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "--offload moves each model to the GPU only while it runs; it needs --device cuda")


def test_an_unknown_tiling_mode_is_refused():
    with pytest.raises(InputError, match="Unknown VAE tiling mode 'sometimes'"):
        Acceleration(vae_tiling="sometimes").check(__import__("torch").device("cpu"))
