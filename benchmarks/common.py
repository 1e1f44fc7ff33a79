"""What the benchmark scripts share: the test picture, its mask, the random-weight model folders, timing one job and
naming the machine."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from flux_model import write_flux_fill_architecture
from sd15_model import write_sd15_architecture
from sdxl_model import write_sdxl_architecture

from inpaintkit.evaluation.measure import measured
from inpaintkit.tiny import make_tiny_model, make_tiny_sdxl_model
from inpaintkit.tiny_flow import make_tiny_flux

FLUX_ARCHES = ("tiny-flux", "flux")  # FLUX.1 Fill models (the masked image and mask as extra channels) only


def picture(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=2).astype(np.uint8)


def centred_mask(width: int, height: int, side: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    top, left = (height - side) // 2, (width - side) // 2
    mask[top : top + side, left : left + side] = 255
    return mask


def model_folder(root: Path, arch: str, channels: int = 9, flux_blocks: tuple[int, int] = (1, 2)) -> Path:
    """A random-weight model folder with `arch`'s architecture (timing does not depend on the weights). The Flux
    arches are FLUX.1 Fill models whatever `channels` says; `flux` has `flux_blocks` (double, single) blocks."""
    if arch == "flux":
        return write_flux_fill_architecture(root / "flux-fill-{}-{}".format(*flux_blocks), *flux_blocks)
    if arch == "tiny-flux":
        folder = root / "tiny-flux-fill"
        return folder if (folder / "model_index.json").is_file() else make_tiny_flux(folder, fill=True)
    folder = root / f"{arch}-{channels}"
    if arch == "sd15":
        return write_sd15_architecture(folder, unet_in_channels=channels)
    if arch == "sdxl":
        return write_sdxl_architecture(folder, unet_in_channels=channels)
    if not (folder / "model_index.json").is_file():
        (make_tiny_sdxl_model if arch == "tiny-sdxl" else make_tiny_model)(folder, unet_in_channels=channels)
    return folder


def timed(job: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """Seconds and peak memory in MB (nan where it cannot be measured) of one call of `job`."""
    with measured(device) as measurement:
        job()
    return measurement.seconds, measurement.peak_memory_mb or float("nan")


def machine(device: torch.device) -> str:
    """The GPU's name, or the CPU's, for a results table's header."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU"
