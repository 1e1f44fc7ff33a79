"""Single-file SDXL checkpoints (original SGM layout, as distributed on model sites) load offline with --config.

The files are written from the tiny SDXL folders by ldm_checkpoint_sdxl.py, the inverse of diffusers' single-file
conversion; the config folders hold no weights, so every weight that comes back came from the file.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from inpaintkit import Inpainter

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli, run_cli_subprocess
from .ldm_checkpoint_sdxl import write_sdxl_checkpoint
from .test_ldm_checkpoint_fixture import assert_same_weights, copy_configs

PIXELS, MASK = gradient_image(48, 32, seed=31), box_mask(48, 32, (10, 6, 36, 26))
MODULES = ("unet", "vae", "text_encoder", "text_encoder_2")


def inpaint(inpainter) -> np.ndarray:
    return np.asarray(inpainter(PIXELS, MASK, "a vase", steps=2, seed=5, paste_back=False)[0])


@pytest.fixture
def no_network(monkeypatch):
    """HF_HUB_OFFLINE is set by conftest; any attempt to open a connection fails loudly as well."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("in_channels, suffix", [(9, ".safetensors"), (4, ".safetensors"), (9, ".ckpt")])
def test_an_sdxl_file_loads_the_folders_weights_and_paints_its_pixels(
    request, no_network, tmp_path, in_channels, suffix
):
    folder = request.getfixturevalue(f"tiny_sdxl{in_channels}")
    reference = request.getfixturevalue(f"sdxl{in_channels}")  # the folder itself, loaded
    checkpoint = write_sdxl_checkpoint(folder, tmp_path / f"sdxl{in_channels}{suffix}")
    configs = copy_configs(folder, tmp_path / "configs")  # configs and tokenizers only: no weights

    loaded = Inpainter.from_pretrained(checkpoint, device="cpu", config=configs)

    assert (loaded.capabilities.family, loaded.capabilities.unet_in_channels) == ("sdxl", in_channels)
    for name in MODULES:
        assert_same_weights(getattr(loaded.components, name), getattr(reference.components, name))
    assert loaded.components.scheduler_config == reference.components.scheduler_config
    assert loaded.components.pipeline_config["force_zeros_for_empty_prompt"] is True
    assert np.array_equal(inpaint(loaded), inpaint(reference))


@pytest.mark.parametrize("in_channels, other", [(9, 4), (4, 9)])
def test_the_sdxl_unet_channels_come_from_the_file(request, no_network, tmp_path, in_channels, other):
    """A 9-channel file with a 4-channel model's configs still loads as an inpainting UNet, and vice versa."""
    checkpoint = write_sdxl_checkpoint(request.getfixturevalue(f"tiny_sdxl{in_channels}"), tmp_path / "m.safetensors")
    loaded = Inpainter.from_pretrained(checkpoint, device="cpu", config=request.getfixturevalue(f"tiny_sdxl{other}"))
    reference = request.getfixturevalue(f"sdxl{in_channels}")
    assert loaded.capabilities.unet_in_channels == in_channels
    assert_same_weights(loaded.components.unet, reference.components.unet)
    assert np.array_equal(inpaint(loaded), inpaint(reference))


def test_an_sdxl_file_from_the_cli(tmp_path, tiny_sdxl9, capsys):
    checkpoint = write_sdxl_checkpoint(tiny_sdxl9, tmp_path / "sdxl9.safetensors")
    Image.fromarray(PIXELS).save(tmp_path / "in.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    code, out, err = run_cli(["info", "--model", checkpoint, "--config", tiny_sdxl9], capsys)
    assert code == 0, err
    assert (json.loads(out)["family"], json.loads(out)["unet_in_channels"]) == ("sdxl", 9)
    inputs = ["--image", tmp_path / "in.png", "--mask", tmp_path / "mask.png", "--steps", "2"]
    code, _, err = run_cli(
        ["run", *inputs, "--model", checkpoint, "--config", tiny_sdxl9, "--output", tmp_path / "out.png"], capsys
    )
    assert code == 0, err
    assert Image.open(tmp_path / "out.png").size == (48, 32)


def test_an_sdxl_file_with_an_sd_config_folder_is_refused(tmp_path, tiny_sdxl9, tiny9, capsys):
    checkpoint = write_sdxl_checkpoint(tiny_sdxl9, tmp_path / "sdxl9.safetensors")
    code, _, err = run_cli(["info", "--model", checkpoint, "--config", tiny9], capsys)
    assert_one_line_error(code, err, "is a sd model but")
    assert "is a sdxl checkpoint; give a config folder of the same family" in err


def test_an_sdxl_file_without_config_offline_says_to_pass_config(tmp_path, tiny_sdxl9):
    checkpoint = write_sdxl_checkpoint(tiny_sdxl9, tmp_path / "sdxl9.safetensors")
    result = run_cli_subprocess(["info", "--model", checkpoint], tmp_path / "empty-hf")
    assert_one_line_error(result.returncode, result.stderr, "needs its component configs from the hub")
    assert "--config" in result.stderr


def test_the_sdxl_file_has_the_original_layout(tiny_sdxl9, tmp_path):
    state = load_file(write_sdxl_checkpoint(tiny_sdxl9, tmp_path / "sdxl9.safetensors"))
    folder_encoder_2 = load_file(tiny_sdxl9 / "text_encoder_2" / "model.safetensors")

    prefixes = {
        "model.diffusion_model.",
        "first_stage_model.",
        "conditioner.embedders.0.transformer.text_model.",
        "conditioner.embedders.1.model.",
    }
    assert {next(prefix for prefix in prefixes if key.startswith(prefix)) for key in state} == prefixes
    assert state["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9
    assert state["model.diffusion_model.label_emb.0.0.weight"].shape == (4 * 32, 6 * 8 + 32)  # time ids + pooled text
    assert "model.diffusion_model.label_emb.0.2.bias" in state
    open_clip = "conditioner.embedders.1.model."
    width = 48  # the tiny second encoder's width (the first's is 32, as SDXL's 1280 and 768 differ)
    assert state[open_clip + "transformer.resblocks.1.attn.in_proj_weight"].shape == (3 * width, width)  # q, k, v
    assert torch.equal(
        state[open_clip + "transformer.resblocks.1.attn.in_proj_bias"][width : 2 * width],
        folder_encoder_2["text_model.encoder.layers.1.self_attn.k_proj.bias"],
    )
    assert torch.equal(state[open_clip + "text_projection"], folder_encoder_2["text_projection.weight"].T)
    assert state[open_clip + "positional_embedding"].shape == (77, width)
    block = open_clip + "transformer.resblocks.0."
    assert {key.removeprefix(block) for key in state if key.startswith(block)} == {  # OpenCLIP's names, no others
        f"{part}.{kind}"
        for part in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj", "attn.out_proj")
        for kind in ("weight", "bias")
    } | {"attn.in_proj_weight", "attn.in_proj_bias"}
