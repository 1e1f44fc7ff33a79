"""--vae replaces a checkpoint's VAE (issue 14): a diffusers VAE folder, or a model folder's vae/, checked against
the denoiser's latent channels."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from inpaintkit import Inpainter
from inpaintkit.errors import InputError

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli

PIXELS, MASK = gradient_image(64, 48, seed=90), box_mask(64, 48, (16, 8, 48, 40))


def inpaint(inpainter) -> np.ndarray:
    return np.asarray(inpainter(PIXELS, MASK, "x", steps=2, seed=3, paste_back=False)[0])


@pytest.fixture(scope="module")
def other_vae(tiny4, tmp_path_factory):
    """The tiny model's VAE with other weights and another scaling factor, as a VAE folder of its own."""
    from diffusers import AutoencoderKL

    folder = tmp_path_factory.mktemp("vae") / "vae"
    vae = AutoencoderKL.from_pretrained(tiny4 / "vae")
    with torch.no_grad():
        for parameter in vae.decoder.parameters():
            parameter.mul_(0.5)
    vae.register_to_config(scaling_factor=0.3)
    vae.save_pretrained(folder)
    return folder


def test_a_vae_folder_replaces_the_checkpoints_vae(tiny4, other_vae, inpainter4):
    replaced = Inpainter.from_pretrained(tiny4, device="cpu", vae=other_vae)
    assert replaced.capabilities.vae_scaling_factor == 0.3  # read from the replacement's config
    output = replaced(PIXELS, MASK, "x", steps=2, seed=3, paste_back=False)[0]
    assert output.info["inpaintkit"]["vae"] == str(other_vae)
    assert not np.array_equal(np.asarray(output), inpaint(inpainter4))


def test_a_model_folder_lends_its_vae_subfolder(tiny4, other_vae, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny4, model)
    shutil.rmtree(model / "vae")
    shutil.copytree(other_vae, model / "vae")
    borrowed = Inpainter.from_pretrained(tiny4, device="cpu", vae=model)
    direct = Inpainter.from_pretrained(tiny4, device="cpu", vae=other_vae)
    assert np.array_equal(inpaint(borrowed), inpaint(direct))


def test_a_vae_of_other_latent_channels_is_one_sentence(tiny4, tmp_path, capsys):
    from diffusers import AutoencoderKL

    folder = tmp_path / "vae16"
    config = json.loads((tiny4 / "vae" / "config.json").read_text())
    AutoencoderKL.from_config({**config, "latent_channels": 16}).save_pretrained(folder)  # a Flux/SD3-style VAE
    code, _, err = run_cli(["info", "--model", tiny4, "--vae", folder], capsys)
    assert_one_line_error(code, err, "has 16 latent channels but this model's denoiser works on 4")


@pytest.mark.parametrize("make, phrase", [("file", "is a file"), ("empty", "neither a config.json"), ("", "neither")])
def test_a_vae_that_is_not_a_vae_folder_is_one_sentence(tiny4, tmp_path, make, phrase):
    target = tmp_path / "thing"
    if make == "file":
        target.write_bytes(b"x")
    elif make == "empty":
        target.mkdir()
    else:
        target = "not a hub id!"
    with pytest.raises(InputError, match=phrase):
        Inpainter.from_pretrained(tiny4, device="cpu", vae=target)
