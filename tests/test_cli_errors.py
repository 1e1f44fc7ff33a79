"""Every bad input ends the CLI with exit code 2 and one sentence on stderr, never a traceback."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from PIL import Image

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, png_claiming_size, run_cli


@pytest.fixture()
def photo(tmp_path):
    """A valid 40x24 image and mask on disk."""
    image_path, mask_path = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(gradient_image(40, 24)).save(image_path)
    Image.fromarray(box_mask(40, 24, (8, 4, 24, 16))).save(mask_path)
    return image_path, mask_path


def run_args(image, mask, output, model, *extra):
    args = ["run", "--image", image, "--output", output, "--model", model, "--steps", "2", *extra]
    return args + (["--mask", mask] if mask is not None else [])


def truncated_png(path):
    buffer = io.BytesIO()
    Image.fromarray(gradient_image(64, 64)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


BAD_IMAGES = {
    "not an image": (lambda p: p.write_text("hello, I am text"), "not an image format Pillow can read"),
    "empty file": (lambda p: p.write_bytes(b""), "is empty"),
    "truncated": (truncated_png, "could not be decoded"),
    "bomb above twice the limit": (lambda p: p.write_bytes(png_claiming_size(20000, 20000)), "decompression bombs"),
    "bomb just above the limit": (lambda p: p.write_bytes(png_claiming_size(10000, 10000)), "decompression bombs"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
@pytest.mark.parametrize("role", ["image", "mask"])
def test_bad_image_files(case, role, photo, tmp_path, tiny9, capsys):
    write, phrase = BAD_IMAGES[case]
    bad = tmp_path / "bad.png"
    write(bad)
    image, mask = photo
    args = run_args(bad if role == "image" else image, bad if role == "mask" else mask, tmp_path / "out.png", tiny9)
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, phrase)
    assert f"The {role} file" in err
    assert not (tmp_path / "out.png").exists()


def test_missing_file(photo, tmp_path, tiny9, capsys):
    _, mask = photo
    code, _, err = run_cli(run_args(tmp_path / "nope.jpg", mask, tmp_path / "out.png", tiny9), capsys)
    assert_one_line_error(code, err, "does not exist")


def test_mask_of_another_size(photo, tmp_path, tiny9, capsys):
    image, _ = photo
    other = tmp_path / "small-mask.png"
    Image.fromarray(box_mask(24, 40, (0, 0, 8, 8))).save(other)
    code, _, err = run_cli(run_args(image, other, tmp_path / "out.png", tiny9), capsys)
    assert_one_line_error(code, err, "The mask is 24x40 pixels but the image is 40x24")


def test_no_mask_and_no_alpha(photo, tmp_path, tiny9, capsys):
    image, _ = photo
    code, _, err = run_cli(run_args(image, None, tmp_path / "out.png", tiny9), capsys)
    assert_one_line_error(code, err, "no alpha channel")


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (["--strength", "0"], "Strength must be in (0, 1], got 0.0"),
        (["--strength", "1.5"], "Strength must be in (0, 1], got 1.5"),
        (["--strength", "-0.2"], "Strength must be in (0, 1]"),
        (["--strength", "0.1", "--steps", "5"], "leaves no denoising step"),
        (["--steps", "0"], "Steps must be at least 1, got 0"),
        (["--num-images", "0"], "number of images must be from 1 to 10,000, got 0"),
        (["--guidance", "-1"], "Guidance must be between 0 and 100"),
        (["--mask-blur", "-3"], "Mask blur must be 0 or more"),
        (["--seed", "-1"], "Seed must be between 0 and"),
        (["--scheduler", "dpm3"], "argument --scheduler: invalid choice: 'dpm3'"),
        (["--method", "magic"], "argument --method: invalid choice: 'magic'"),
        (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
        (["--dtype", "fp8"], "argument --dtype: invalid choice: 'fp8'"),
        (["--device", "tpu"], "Unknown device 'tpu'"),
    ],
)
def test_bad_settings(extra, phrase, photo, tmp_path, tiny9, capsys):
    image, mask = photo
    # --steps 2 comes first in run_args, so a later --steps overrides it
    code, _, err = run_cli(run_args(image, mask, tmp_path / "out.png", tiny9, *extra), capsys)
    assert_one_line_error(code, err, phrase)


@pytest.mark.skipif(sys.modules["torch"].cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_asked_without_cuda(photo, tmp_path, tiny9, capsys):
    image, mask = photo
    code, _, err = run_cli(run_args(image, mask, tmp_path / "out.png", tiny9, "--device", "cuda"), capsys)
    assert_one_line_error(code, err, "sees no CUDA GPU")


def test_native_on_an_ordinary_checkpoint(photo, tmp_path, tiny4, capsys):
    image, mask = photo
    code, _, err = run_cli(run_args(image, mask, tmp_path / "out.png", tiny4, "--method", "native"), capsys)
    assert_one_line_error(code, err, "needs a dedicated inpainting checkpoint (SD's 9-channel UNet")


def test_existing_output_is_kept(photo, tmp_path, tiny9, capsys):
    image, mask = photo
    output = tmp_path / "out.png"
    output.write_bytes(b"earlier work")
    code, _, err = run_cli(run_args(image, mask, output, tiny9), capsys)
    assert_one_line_error(code, err, "already exists; pass --overwrite")
    assert output.read_bytes() == b"earlier work"


@pytest.mark.parametrize(
    "output, phrase",
    [
        ("out.jpg", "must end in .png"),
        ("missing-folder/out.png", "Output folder"),
    ],
)
def test_bad_output_paths(output, phrase, photo, tmp_path, tiny9, capsys):
    image, mask = photo
    code, _, err = run_cli(run_args(image, mask, tmp_path / output, tiny9), capsys)
    assert_one_line_error(code, err, phrase)


def test_folder_that_is_not_a_diffusers_model(photo, tmp_path, capsys):
    image, mask = photo
    not_a_model = tmp_path / "holiday-photos"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hi")
    code, _, err = run_cli(run_args(image, mask, tmp_path / "out.png", not_a_model), capsys)
    assert_one_line_error(code, err, "is not a diffusers model (it has no model_index.json)")


def broken_copy(model, tmp_path):
    import shutil

    return shutil.copytree(model, tmp_path / "broken")


def test_model_folder_with_a_missing_component(photo, tmp_path, tiny9, capsys):
    import shutil

    image, mask = photo
    broken = broken_copy(tiny9, tmp_path)
    shutil.rmtree(broken / "vae")
    code, _, err = run_cli(run_args(image, mask, tmp_path / "out.png", broken), capsys)
    assert_one_line_error(code, err, "lacks the component folder(s) vae")


def test_model_folder_with_corrupt_weights(photo, tmp_path, tiny9, capsys):
    image, mask = photo
    broken = broken_copy(tiny9, tmp_path)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 100)
    code, _, err = run_cli(run_args(image, mask, tmp_path / "out.png", broken), capsys)
    assert_one_line_error(code, err, f"Could not load model '{broken}'")


@pytest.mark.parametrize(
    "pipeline, family",
    [
        ("KolorsPipeline", "of the Kolors family"),
        ("StableDiffusionXLInpaintPipeline", "lacks the component folder(s) unet, vae, text_encoder, text_encoder_2"),
        ("FluxFillPipeline", "lacks the component folder(s) transformer, vae"),  # a flux-fill folder, told by its index
        ("StableDiffusion3Pipeline", "that a sd3 model has"),
        ("FluxKontextPipeline", "of the Flux Kontext family"),
        ("KandinskyV22InpaintPipeline", "of the Kandinsky family"),
        ("AudioLDMPipeline", "is a AudioLDMPipeline, not a model family inpaintkit runs"),
    ],
)
def test_a_family_not_supported_yet_is_named(photo, tmp_path, capsys, pipeline, family):
    image, mask = photo
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text(
        f'{{"_class_name": "{pipeline}", "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}}'
    )
    code, _, err = run_cli(run_args(image, mask, tmp_path / "out.png", folder), capsys)
    assert_one_line_error(code, err, family)


@pytest.mark.parametrize("model", ["not a hub id!", "./missing-folder", "weights.safetensors"])
def test_model_that_is_neither_path_nor_hub_id(model, photo, tmp_path, capsys):
    image, mask = photo
    code, _, err = run_cli(run_args(image, mask, tmp_path / "out.png", model), capsys)
    assert_one_line_error(code, err, "is neither an existing file or folder nor a Hugging Face hub id")


def test_make_tiny_model_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = run_cli(["make-tiny-model", tmp_path], capsys)
    assert_one_line_error(code, err, "already exists and is not an empty folder")
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_installed_entry_point_reports_without_traceback(tmp_path):
    """The real `inpaintkit` executable: exit code 2 and one line, as a user sees it."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inpaintkit.cli",
            "run",
            "--image",
            tmp_path / "none.png",
            "--mask",
            tmp_path / "m.png",
            "--output",
            tmp_path / "o.png",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result.returncode, result.stderr, "does not exist")


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (
            ["--method", "bld", "--mask-dilation-iterations", "-1"],
            "--mask-dilation-iterations must be 0 or more, got -1",
        ),
        (["--method", "bld", "--mask-dilation-iterations", "5", "--steps", "4"], "needs at least 6 steps to run"),
        (["--method", "bld", "--blend-start", "1.0"], "--blend-start must be in [0, 1), got 1.0"),
        (["--method", "bld", "--strength", "0.5"], "--strength does not apply"),
        (["--method", "bld", "--reconstruct", "magic"], "argument --reconstruct: invalid choice: 'magic'"),
        (
            ["--method", "repaint", "--jump-length", "20", "--steps", "10"],
            "--jump-length 20 is larger than the 10 steps that run",
        ),
        (["--method", "repaint", "--jump-n-sample", "0"], "--jump-n-sample must be from 1 to 100, got 0"),
        (["--method", "repaint", "--jump-length", "1", "--scheduler", "euler"], "use --scheduler ddim, not euler"),
        (["--method", "tdpaint", "--known-t", "1000"], "--known-t must be from 0 to 999, got 1000"),
        (["--method", "tdpaint", "--scheduler", "euler-a"], "needs a variance-preserving or flow-matching scheduler"),
        (["--method", "blend", "--jump-length", "3"], "--jump-length applies only to --method repaint, not blend"),
        (["--reconstruct", "pixel"], "--reconstruct applies only to --method bld, not native"),
        (["--crop-padding", "-3"], "Crop padding must be 0 or more pixels, got -3"),
        (["--fill", "sand"], "argument --fill: invalid choice: 'sand'"),
    ],
)
def test_bad_method_options(extra, phrase, photo, tmp_path, tiny9, capsys):
    image, mask = photo
    code, _, err = run_cli(run_args(image, mask, tmp_path / "out.png", tiny9, *extra), capsys)
    assert_one_line_error(code, err, phrase)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    "sides, phrase",
    [([], "Nothing to outpaint"), (["--left", "-4"], "Outpainting sizes must be 0 or more pixels, got --left -4")],
)
def test_bad_outpaint_sizes(sides, phrase, photo, tmp_path, tiny9, capsys):
    image, _ = photo
    args = ["outpaint", "--image", image, "--output", tmp_path / "out.png", "--model", tiny9, "--steps", "2", *sides]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, phrase)
