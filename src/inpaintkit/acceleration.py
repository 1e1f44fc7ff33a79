"""Speed and memory options for loaded components: compiled UNet, fused QKV, channels_last, VAE tiling, CPU offload
(whole models or layer by layer), fp8 storage of the denoiser's weights.

Each option is off unless asked for, except two that cannot change what a user sees: channels_last
on CUDA (a memory layout) and VAE tiling above AUTO_TILING_PIXELS (without it the decoder alone
needs several GB there). Tiling does change pixels slightly (tiles are blended), so each output
records whether it was used (`vae_tiling` in its metadata), and `--vae-tiling off` turns it off. fp8 weights change
pixels too (each weight rounded to 3 mantissa bits), and are recorded the same way (`fp8_weights`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .errors import InputError, first_line
from .names import AUTO_TILING_PIXELS, TILING_MODES

log = logging.getLogger("inpaintkit")


@dataclass(frozen=True)
class Acceleration:
    compile: bool = False  # torch.compile the UNet (the first call of each image size compiles)
    vae_tiling: str = "auto"  # "auto" (above AUTO_TILING_PIXELS), "on" or "off"
    offload: bool = False  # keep models on the CPU, each moved to the GPU while it runs (accelerate hooks)
    fuse_qkv: bool = False  # one matmul for attention's query, key and value projections
    # Every layer's weights stay in CPU memory and are copied to the GPU for that layer's call alone (accelerate
    # hooks): the GPU holds one layer and the activations, at the cost of a host-to-GPU copy of all weights per step.
    sequential_offload: bool = False
    # The denoiser's weights stored in fp8 (e4m3) and upcast to the model's dtype layer by layer for each call
    # (diffusers' enable_layerwise_casting): one byte per cast weight, arithmetic still in the dtype. diffusers keeps
    # norms in the dtype, and for Flux that includes the AdaLN modulation layers: 27% of the weights.
    fp8_weights: bool = False

    def check(self, device: torch.device) -> None:
        if self.vae_tiling not in TILING_MODES:
            raise InputError(f"Unknown VAE tiling mode '{self.vae_tiling}'; use {', '.join(TILING_MODES)}.")
        if self.offload and self.sequential_offload:
            raise InputError(
                "--offload (whole models) and --sequential-offload (layer by layer) are two ways of keeping the "
                "weights in CPU memory; give one."
            )
        if self.offload and device.type != "cuda":
            raise InputError("--offload moves each model to the GPU only while it runs; it needs --device cuda.")
        if self.sequential_offload and device.type != "cuda":
            raise InputError(
                "--sequential-offload moves each layer to the GPU only while it runs; it needs --device cuda."
            )
        if self.fp8_weights:
            check_fp8(device)

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
    if acceleration.fp8_weights:  # before offloading: the CPU copy the hooks keep is then the fp8 one
        store_in_fp8(components)
    if acceleration.offload:
        offload_to_cpu(components)
    elif acceleration.sequential_offload:
        offload_layers_to_cpu(components)
    if acceleration.compile:
        log.info("Compiling the UNet with torch.compile: the first image of each size takes longer.")
        components.unet = torch.compile(components.unet, backend=compile_backend)
    components.acceleration = acceleration


def offload_to_cpu(components) -> None:
    """diffusers' enable_model_cpu_offload, for our components: text encoder -> UNet -> VAE."""
    from accelerate import cpu_offload_with_hook

    hook = None
    for module in offloaded_modules(components):
        _, hook = cpu_offload_with_hook(module, components.device, prev_module_hook=hook)


def offload_layers_to_cpu(components, execution_device: torch.device | None = None) -> None:
    """diffusers' enable_sequential_cpu_offload, for our components: each model's weights go to CPU memory (its
    parameters on the meta device), and every submodule with weights copies its own to `execution_device` (the
    components' device) for its forward alone. Nothing but the device changes, so the pixels are the default's."""
    from accelerate import cpu_offload

    device = components.device if execution_device is None else execution_device
    for module in offloaded_modules(components):
        # As diffusers does: a model's buffers (position ids, ...) stay on the device unless it has weights of its
        # own at the top level, which then travel with it.
        cpu_offload(module, execution_device=device, offload_buffers=len(module._parameters) > 0)


def offloaded_modules(components) -> list:
    """The models in the order a job calls them: text encoders (those present: an SD 3 model may lack T5), the
    denoiser, the VAE."""
    return [*components.text_modules().values(), components.unet, components.vae]


# e4m3 (4 exponent, 3 mantissa bits): the fp8 format diffusers' docs store weights in; e5m2 has range weights do not
# need and one mantissa bit less.
FP8_STORAGE = "float8_e4m3fn"


def check_fp8(device: torch.device) -> None:
    """Refuse fp8 weights, before loading, where this torch cannot cast to and from fp8 on `device`.

    The cast is all layer-wise casting needs: a plain conversion, done in software where the hardware has no fp8, so
    any CPU runs it with torch 2.1 or newer. What fails is a torch without the dtype (older than 2.1: an
    AttributeError when the model is cast) or a backend without fp8 conversions (a TypeError or RuntimeError on the
    first cast), so one such cast is tried here."""
    storage = getattr(torch, FP8_STORAGE, None)
    if storage is None:
        raise InputError(
            f"--fp8-weights needs torch's float8 dtypes (torch 2.1 or newer), and this is torch {torch.__version__}; "
            "upgrade torch or leave the option out."
        )
    try:
        torch.ones(4, device=device).to(storage).to(torch.float32)
    except (RuntimeError, TypeError) as error:
        raise InputError(
            f"--fp8-weights cannot run on {device.type} with this torch ({first_line(error)}); leave the option out."
        ) from None


def store_in_fp8(components) -> None:
    """The denoiser's weights in fp8, each layer upcast to the model's dtype while it runs. diffusers leaves the
    layers that are small and precision-sensitive (norms, position and patch embeddings, the first and last
    projections) in the model's dtype."""
    storage = getattr(torch, FP8_STORAGE)
    components.unet.enable_layerwise_casting(storage_dtype=storage, compute_dtype=components.dtype)


def stored_bytes(module) -> int:
    """The bytes a module's parameters and buffers take as stored (fp8: one per weight)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def set_vae_tiling(vae, on: bool) -> None:
    if on:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
