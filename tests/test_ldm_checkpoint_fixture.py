"""The LDM single-file fixture round-trips: folder -> write_ldm_checkpoint -> from_single_file, offline.

`from_single_file` is given a folder holding only the component configs and the tokenizer (no weights),
so every weight that comes back must have come from the checkpoint file.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline
from safetensors.torch import load_file

from .ldm_checkpoint import write_ldm_checkpoint


def copy_configs(folder: Path, dest: Path) -> Path:
    """Copy a diffusers folder without its weights: model_index.json, component configs, tokenizer files."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".txt"):
            target = dest / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return dest


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Hub offline mode, an empty HF_HOME, and any attempt to open a connection fails loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def assert_same_weights(loaded: torch.nn.Module, reference: torch.nn.Module) -> None:
    loaded_state, reference_state = loaded.state_dict(), reference.state_dict()
    assert loaded_state.keys() == reference_state.keys()
    different = [key for key in reference_state if not torch.equal(loaded_state[key], reference_state[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("in_channels", [9, 4])
def test_ldm_checkpoint_loads_offline_with_identical_weights(request, offline, tmp_path, in_channels, suffix):
    folder = request.getfixturevalue(f"tiny{in_channels}")  # conftest's session fixtures tiny9 / tiny4
    reference = StableDiffusionInpaintPipeline.from_pretrained(folder, safety_checker=None)
    checkpoint = write_ldm_checkpoint(folder, tmp_path / f"tiny{in_channels}{suffix}")
    configs = copy_configs(folder, tmp_path / "configs")

    loaded = StableDiffusionInpaintPipeline.from_single_file(
        str(checkpoint), config=str(configs), local_files_only=True, safety_checker=None
    )

    assert loaded.unet.config.in_channels == in_channels
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(loaded, name), getattr(reference, name))
    assert loaded.tokenizer("a cat").input_ids == reference.tokenizer("a cat").input_ids


def test_ldm_checkpoint_uses_the_original_layout(tiny9, tmp_path):
    state = load_file(write_ldm_checkpoint(tiny9, tmp_path / "tiny9.safetensors"))

    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(key.startswith(prefixes) for key in state)
    assert state["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9
    assert state["model.diffusion_model.output_blocks.1.1.conv.weight"].ndim == 4  # the UNet's upsampler
    for name in ("q", "k", "v", "proj_out"):  # VAE mid-block attention: 1x1 convolutions, not linear layers
        assert state[f"first_stage_model.decoder.mid.attn_1.{name}.weight"].shape == (16, 16, 1, 1)
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in state
