"""Shared fixtures: tiny random-weight models written as real diffusers folders, and test pictures."""

from __future__ import annotations

import os

import numpy as np
import pytest

# No test may reach a model hub: fail fast instead of trying.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Tiny models: one thread per test worker is fastest, and avoids two workers fighting over 2 cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def fp32_on_every_cpu():
    """`--dtype auto` is bf16 on CPUs with bf16 instructions and fp32 elsewhere; the suite pins fp32 so its
    results do not depend on the CPU CI lands on. test_devices.py tests both answers, and the tests that
    start `inpaintkit` in a subprocess run the real default."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("inpaintkit.devices.cpu_has_fast_bf16", lambda: False)
        yield


@pytest.fixture(scope="session")
def tiny9(tmp_path_factory):
    """A 9-channel (dedicated inpainting) tiny model folder."""
    from inpaintkit.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny9", unet_in_channels=9)


@pytest.fixture(scope="session")
def tiny4(tmp_path_factory):
    """A 4-channel (ordinary text-to-image) tiny model folder."""
    from inpaintkit.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny4", unet_in_channels=4)


@pytest.fixture(scope="session")
def tiny4_vpred(tmp_path_factory):
    """A 4-channel tiny model whose scheduler predicts v (as SD 2.x 768 does)."""
    from inpaintkit.tiny import make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny4v", unet_in_channels=4, prediction_type="v_prediction"
    )


@pytest.fixture(scope="session")
def inpainter9(tiny9):
    from inpaintkit import Inpainter

    return Inpainter.from_pretrained(tiny9, device="cpu")


@pytest.fixture(scope="session")
def inpainter4(tiny4):
    from inpaintkit import Inpainter

    return Inpainter.from_pretrained(tiny4, device="cpu")


def gradient_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB test picture: smooth gradients plus a little texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    picture = (
        np.stack([x / max(width - 1, 1), y / max(height - 1, 1), (x + y) / max(width + height - 2, 1)], axis=2) * 200
    )
    picture += rng.integers(0, 56, size=picture.shape)
    return picture.astype(np.uint8)


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """HxW uint8 mask, 255 inside box = (left, top, right, bottom)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    return mask


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A small untrained CLIP model + processor folder, for the CLIP score and KID code paths."""
    from inpaintkit.tiny import make_tiny_clip_model

    return make_tiny_clip_model(tmp_path_factory.mktemp("models") / "clip")


@pytest.fixture(scope="session")
def tiny_sdxl9(tmp_path_factory):
    """A 9-channel (inpainting) tiny SDXL model folder: two text encoders, Euler, force_zeros_for_empty_prompt."""
    from inpaintkit.tiny import make_tiny_sdxl_model

    return make_tiny_sdxl_model(tmp_path_factory.mktemp("models") / "sdxl9", unet_in_channels=9)


@pytest.fixture(scope="session")
def tiny_sdxl4(tmp_path_factory):
    """A 4-channel (base) tiny SDXL model folder."""
    from inpaintkit.tiny import make_tiny_sdxl_model

    return make_tiny_sdxl_model(tmp_path_factory.mktemp("models") / "sdxl4", unet_in_channels=4)


@pytest.fixture(scope="session")
def sdxl9(tiny_sdxl9):
    from inpaintkit import Inpainter

    return Inpainter.from_pretrained(tiny_sdxl9, device="cpu")


@pytest.fixture(scope="session")
def sdxl4(tiny_sdxl4):
    from inpaintkit import Inpainter

    return Inpainter.from_pretrained(tiny_sdxl4, device="cpu")


@pytest.fixture(scope="session")
def tiny_flux_fill(tmp_path_factory):
    """A tiny Flux.1 Fill folder: masked-image latents and the 8x8 mask beside the latents, guidance embedded."""
    from inpaintkit.tiny_flow import make_tiny_flux

    return make_tiny_flux(tmp_path_factory.mktemp("models") / "flux_fill", fill=True)


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory):
    """A tiny ordinary Flux.1 (dev-like, guidance embedded) folder, for blending."""
    from inpaintkit.tiny_flow import make_tiny_flux

    return make_tiny_flux(tmp_path_factory.mktemp("models") / "flux")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory):
    """A tiny 16-channel Stable Diffusion 3 folder (CLIP-L, CLIP-G, T5)."""
    from inpaintkit.tiny_flow import make_tiny_sd3

    return make_tiny_sd3(tmp_path_factory.mktemp("models") / "sd3")


@pytest.fixture(scope="session")
def tiny_sd3_inpainting(tmp_path_factory):
    """A tiny 33-channel (inpainting) Stable Diffusion 3 folder."""
    from inpaintkit.tiny_flow import make_tiny_sd3

    return make_tiny_sd3(tmp_path_factory.mktemp("models") / "sd3i", inpainting=True)


@pytest.fixture(scope="session")
def flux(tiny_flux):
    from inpaintkit import Inpainter

    return Inpainter.from_pretrained(tiny_flux, device="cpu")


@pytest.fixture(scope="session")
def flux_fill(tiny_flux_fill):
    from inpaintkit import Inpainter

    return Inpainter.from_pretrained(tiny_flux_fill, device="cpu")


@pytest.fixture(scope="session")
def sd3(tiny_sd3):
    from inpaintkit import Inpainter

    return Inpainter.from_pretrained(tiny_sd3, device="cpu")
