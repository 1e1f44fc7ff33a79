"""Speed and memory options for loaded components: compiled UNet, fused QKV, channels_last, VAE tiling, CPU offload.

Each option is off unless asked for, except two that cannot change what a user sees: channels_last
on CUDA (a memory layout) and VAE tiling above AUTO_TILING_PIXELS (without it the decoder alone
needs several GB there). Tiling does change pixels slightly (tiles are blended), so each output
records whether it was used (`vae_tiling` in its metadata), and `--vae-tiling off` turns it off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .errors import InputError
from .names import AUTO_TILING_PIXELS, TILING_MODES

log = logging.getLogger("inpaintkit")


@dataclass(frozen=True)
class Acceleration:
    compile: bool = False  # torch.compile the UNet (the first call of each image size compiles)
    vae_tiling: str = "auto"  # "auto" (above AUTO_TILING_PIXELS), "on" or "off"
    offload: bool = False  # keep models on the CPU, each moved to the GPU while it runs (accelerate hooks)
    fuse_qkv: bool = False  # one matmul for attention's query, key and value projections

    def check(self, device: torch.device) -> None:
        if self.vae_tiling not in TILING_MODES:
            raise InputError(f"Unknown VAE tiling mode '{self.vae_tiling}'; use {', '.join(TILING_MODES)}.")
        if self.offload and device.type != "cuda":
            raise InputError("--offload moves each model to the GPU only while it runs; it needs --device cuda.")

    def tiles(self, height: int, width: int) -> bool:
        """Whether the VAE works in tiles for an image of this size."""
        return self.vae_tiling == "on" or (self.vae_tiling == "auto" and height * width > AUTO_TILING_PIXELS)


def accelerate(components, acceleration: Acceleration, compile_backend: str = "inductor") -> None:
    """Apply the options to loaded components (in place) and remember them for the engine."""
    acceleration.check(components.device)
    if acceleration.fuse_qkv:
        components.unet.fuse_qkv_projections()
    if components.device.type == "cuda":  # convolutions prefer NHWC on tensor cores; same values
        components.unet.to(memory_format=torch.channels_last)
        components.vae.to(memory_format=torch.channels_last)
    if acceleration.offload:
        offload_to_cpu(components)
    if acceleration.compile:
        log.info("Compiling the UNet with torch.compile: the first image of each size takes longer.")
        components.unet = torch.compile(components.unet, backend=compile_backend)
    components.acceleration = acceleration


def offload_to_cpu(components) -> None:
    """diffusers' enable_model_cpu_offload, for our components: text encoder -> UNet -> VAE."""
    from accelerate import cpu_offload_with_hook

    hook = None
    for name in (*components.family.text_encoders, "unet", "vae"):
        _, hook = cpu_offload_with_hook(getattr(components, name), components.device, prev_module_hook=hook)


def set_vae_tiling(vae, on: bool) -> None:
    if on:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
