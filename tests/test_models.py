"""Model loading: hub ids (from a local cache stand-in), single files, and capabilities read from configs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from inpaintkit import Inpainter, InpaintSettings
from inpaintkit.methods import resolve_method
from inpaintkit.tiny import make_tiny_model

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli, run_cli_subprocess
from .ldm_checkpoint import write_ldm_checkpoint

PIXELS, MASK = gradient_image(48, 32, seed=30), box_mask(48, 32, (10, 6, 36, 26))


def inpaint(inpainter, **options):
    return np.asarray(inpainter(PIXELS, MASK, "a vase", steps=3, seed=4, **options)[0])


def fake_hub_cache(hf_home, repo_id, model_folder):
    """Lay a model out as huggingface_hub caches a download: models--ORG--NAME/{refs/main, snapshots/SHA/...}."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


def test_hub_id_loads_from_the_local_cache(tmp_path, tiny9):
    fake_hub_cache(tmp_path / "hf", "inpaintkit-test/tiny-inpainting", tiny9)
    result = run_cli_subprocess(["info", "--model", "inpaintkit-test/tiny-inpainting"], tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["unet_in_channels"] == 9
    assert json.loads(result.stdout)["family"] == "sd"


def test_a_hub_model_of_another_family_is_named_from_its_cached_index(tmp_path, tiny9):
    kandinsky = tmp_path / "kandinsky"
    shutil.copytree(tiny9, kandinsky)
    index = json.loads((kandinsky / "model_index.json").read_text())
    (kandinsky / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyV22InpaintPipeline"}))
    fake_hub_cache(tmp_path / "hf", "inpaintkit-test/tiny-kandinsky", kandinsky)
    result = run_cli_subprocess(["info", "--model", "inpaintkit-test/tiny-kandinsky"], tmp_path / "hf")
    assert_one_line_error(result.returncode, result.stderr, "is of the Kandinsky family (KandinskyV22InpaintPipeline)")


@pytest.mark.parametrize(
    "key, phrase",
    [
        ("conditioner.embedders.1.model.ln_final.weight", "is a sd model but"),  # an SDXL file, an SD --config
        ("double_blocks.0.img_attn.qkv.weight", "is a Flux checkpoint in one file"),
        ("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "is a Stable Diffusion 3 checkpoint in one"),
        ("some.other.layer.weight", "Cannot tell which model family the checkpoint"),
    ],
)
def test_a_single_file_family_is_told_from_its_keys(tmp_path, tiny9, capsys, key, phrase):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(2)}, str(checkpoint))
    code, _, err = run_cli(["info", "--model", checkpoint, "--config", tiny9], capsys)
    assert_one_line_error(code, err, phrase)


def test_hub_id_not_cached_and_offline_is_one_sentence(tmp_path):
    result = run_cli_subprocess(
        ["info", "--model", "stable-diffusion-v1-5/stable-diffusion-inpainting"], tmp_path / "empty-hf"
    )
    assert_one_line_error(
        result.returncode,
        result.stderr,
        "'stable-diffusion-v1-5/stable-diffusion-inpainting' is not in the local Hugging Face cache",
    )
    assert "--model" in result.stderr


def test_capabilities_are_read_from_the_configs(tiny9, tiny4_vpred):
    nine = Inpainter.from_pretrained(tiny9, device="cpu").capabilities
    four = Inpainter.from_pretrained(tiny4_vpred, device="cpu").capabilities
    assert (nine.unet_in_channels, nine.inpainting_unet, nine.prediction_type) == (9, True, "epsilon")
    assert (four.unet_in_channels, four.inpainting_unet, four.prediction_type) == (4, False, "v_prediction")
    assert (nine.vae_scale_factor, nine.native_size, nine.vae_scaling_factor) == (8, 64, 0.18215)


def test_vae_scaling_factor_comes_from_the_config(tmp_path):
    """Change scaling_factor in the VAE config: the capability follows, and so do the pixels."""
    folder = make_tiny_model(tmp_path / "scaled", unet_in_channels=9)
    config_path = folder / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    reference = inpaint(Inpainter.from_pretrained(folder, device="cpu"), paste_back=False)
    config_path.write_text(json.dumps({**config, "scaling_factor": 0.5}))
    rescaled = Inpainter.from_pretrained(folder, device="cpu")
    assert rescaled.capabilities.vae_scaling_factor == 0.5
    assert not np.array_equal(inpaint(rescaled, paste_back=False), reference)


def test_auto_method_follows_the_unet(inpainter9, inpainter4):
    assert resolve_method("auto", inpainter9.capabilities, InpaintSettings()).name == "native"
    assert resolve_method("auto", inpainter4.capabilities, InpaintSettings()).name == "blend"
    assert inpainter4(PIXELS, MASK, "x", steps=2, seed=1)[0].info["inpaintkit"]["method"] == "blend"


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_gives_the_same_pixels_as_the_folder(suffix, tmp_path, tiny9):
    checkpoint = write_ldm_checkpoint(tiny9, tmp_path / f"tiny{suffix}")
    from_file = Inpainter.from_pretrained(checkpoint, device="cpu", config=tiny9)
    assert from_file.capabilities.unet_in_channels == 9
    assert np.array_equal(inpaint(from_file), inpaint(Inpainter.from_pretrained(tiny9, device="cpu")))


def test_single_file_unet_channels_come_from_the_checkpoint(tmp_path, tiny9, tiny4):
    """A 9-channel checkpoint with the configs of a 4-channel model still loads as an inpainting UNet."""
    checkpoint = write_ldm_checkpoint(tiny9, tmp_path / "tiny9.safetensors")
    from_file = Inpainter.from_pretrained(checkpoint, device="cpu", config=tiny4)
    assert from_file.capabilities.unet_in_channels == 9
    assert np.array_equal(inpaint(from_file), inpaint(Inpainter.from_pretrained(tiny9, device="cpu")))


def test_single_file_from_the_cli(tmp_path, tiny4, capsys):
    checkpoint = write_ldm_checkpoint(tiny4, tmp_path / "tiny4.safetensors")
    Image.fromarray(PIXELS).save(tmp_path / "in.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    code, out, err = run_cli(
        [
            "run",
            "--image",
            tmp_path / "in.png",
            "--mask",
            tmp_path / "mask.png",
            "--model",
            checkpoint,
            "--config",
            tiny4,
            "--steps",
            "2",
            "--output",
            tmp_path / "out.png",
        ],
        capsys,
    )
    assert code == 0, err
    assert (tmp_path / "out.png").is_file()


def test_single_file_without_config_offline_says_what_to_do(tmp_path, tiny9):
    checkpoint = write_ldm_checkpoint(tiny9, tmp_path / "tiny.safetensors")
    result = run_cli_subprocess(["info", "--model", checkpoint], tmp_path / "empty-hf")
    assert_one_line_error(result.returncode, result.stderr, "needs its component configs from the hub")
    assert "--config" in result.stderr


def test_single_file_that_is_not_a_checkpoint(tmp_path, tiny9, capsys):
    garbage = tmp_path / "weights.ckpt"
    garbage.write_bytes(os.urandom(4096))
    code, _, err = run_cli(["info", "--model", garbage, "--config", tiny9], capsys)
    assert_one_line_error(code, err, f"Could not load model '{garbage}'")


def test_single_file_with_a_model_file_of_another_kind(tmp_path, capsys):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00" * 64)
    code, _, err = run_cli(["info", "--model", weights], capsys)
    assert_one_line_error(code, err, "is not a .safetensors or .ckpt checkpoint")


def test_single_file_config_folder_without_tokenizer(tmp_path, tiny9, capsys):
    """transformers would otherwise invent a 2-token tokenizer and produce garbage silently."""
    checkpoint = write_ldm_checkpoint(tiny9, tmp_path / "tiny.safetensors")
    configs = tmp_path / "configs"
    shutil.copytree(tiny9, configs)
    for file in (configs / "tokenizer").iterdir():
        file.unlink()
    code, _, err = run_cli(["info", "--model", checkpoint, "--config", configs], capsys)
    assert_one_line_error(code, err, "has no CLIP tokenizer files")


def test_model_folder_with_an_empty_tokenizer_folder(tmp_path, tiny9, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny9, broken)
    for file in (broken / "tokenizer").iterdir():
        file.unlink()
    code, _, err = run_cli(["info", "--model", broken], capsys)
    assert_one_line_error(code, err, "has no CLIP tokenizer files")


def test_a_file_as_config_is_refused(tmp_path, tiny9, capsys):
    checkpoint = write_ldm_checkpoint(tiny9, tmp_path / "tiny.safetensors")
    not_a_folder = tmp_path / "config.png"
    not_a_folder.write_bytes(b"x")
    code, _, err = run_cli(["info", "--model", checkpoint, "--config", not_a_folder], capsys)
    assert_one_line_error(code, err, "is a file; give a diffusers folder")


def test_a_mistyped_local_path_is_not_blamed_on_the_hub(tmp_path):
    (tmp_path / "models").mkdir()
    result = run_cli_subprocess(["info", "--model", "models/tiny"], tmp_path / "empty-hf", cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "there is a models/, but no models/tiny")
