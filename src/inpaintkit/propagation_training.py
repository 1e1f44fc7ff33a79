"""Training LatentPaint's propagation modules (methods/propagation.py) on a folder of images with random masks.

The smallest honest training path (issue 15): the denoiser, VAE and text encoders stay frozen; only phi is trained,
with the denoiser's own loss measured where the mask says "generate". Each batch runs the UNet exactly as
latentpaint does at inference (stacked generation and context passes, fused blocks, propagation at scale 1):

    z0, z0_masked = E(x), E(x with the hole zeroed); t ~ U{0..T-1}; eps ~ N(0, I)
    pred = unet([q(z0, t, eps) ; q(z0_masked, t, eps)], t, "")[:B]        (fusion + propagation hooks on)
    loss = |m * (pred - target)|^2 / |m|                                    target: eps, or v for v-prediction

Images have no captions here, so the prompt is the empty one: phi learns to carry context, not to follow text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from .errors import InputError
from .families import Conditioning
from .io import open_image, to_rgb_array
from .methods.feature_fusion import FeatureFusion, block_channels, require_unet, unet_blocks
from .methods.propagation import PropagationModules
from .models import Components

log = logging.getLogger("inpaintkit")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_TRAINING_STEPS = 1_000_000
MAX_TRAINING_BATCH = 64
MASK_SIDES = (0.25, 0.75)  # each random box's sides, as fractions of the image's (covers about 6% to 56% of it)


def training_images(folder: Path) -> list[Path]:
    """The images in `folder` (not its subfolders), sorted, each opened once now: an unreadable one is named before
    any training, not hours into it. One sentence when there are none."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of images.")
    images = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not images:
        raise InputError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    for path in images:
        open_image(path)  # InputError naming the file: not an image, truncated, too large, corrupt EXIF
    return images


def check_training(components: Components, size: int, steps: int, batch_size: int, learning_rate: float) -> None:
    """Refuse, before any work, settings that cannot train (one sentence each)."""
    require_unet(components)
    multiple = components.capabilities.vae_scale_factor * 2 ** (len(components.unet.down_blocks) - 1)
    if size < multiple or size % multiple:
        raise InputError(f"--size must be a multiple of {multiple} for this model's UNet, got {size}.")
    if not 1 <= steps <= MAX_TRAINING_STEPS:
        raise InputError(f"--steps must be from 1 to {MAX_TRAINING_STEPS:,}, got {steps}.")
    if not 1 <= batch_size <= MAX_TRAINING_BATCH:
        raise InputError(f"--batch-size must be from 1 to {MAX_TRAINING_BATCH}, got {batch_size}.")
    if not 0 < learning_rate < 1:
        raise InputError(f"--learning-rate must be in (0, 1), got {learning_rate}.")
    if components.acceleration.compile:
        raise InputError("Training hooks the UNet's blocks, which a torch.compile'd UNet would skip; drop --compile.")


def square_crop(path: Path, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of the image, resized to size x size, as HxWx3 uint8."""
    image = open_image(path)
    side = min(image.size)
    left, top = int(rng.integers(0, image.width - side + 1)), int(rng.integers(0, image.height - side + 1))
    crop = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    return to_rgb_array(crop)


def random_box_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """size x size float mask, 1 inside one random box."""
    height, width = (int(size * rng.uniform(*MASK_SIDES)) for _ in range(2))
    top, left = int(rng.integers(0, size - height + 1)), int(rng.integers(0, size - width + 1))
    mask = np.zeros((size, size), dtype=np.float32)
    mask[top : top + height, left : left + width] = 1.0
    return mask


@dataclass
class Trained:
    modules: PropagationModules  # fp32, on the CPU
    steps: int  # the steps done: fewer than asked when interrupted
    interrupted: bool


def train_propagation(
    components: Components,
    images: list[Path],
    *,
    steps: int,
    batch_size: int = 1,
    learning_rate: float = 1e-4,
    size: Optional[int] = None,
    seed: int = 0,
    blocks: tuple[str, ...] = ("down", "mid", "up"),
    on_step: Optional[Callable[[int, float], None]] = None,
) -> Trained:
    """Train phi for the blocks in `blocks`. `on_step(step, loss)` after each step. An interrupt (Ctrl-C) ends the
    training after the last whole step and returns what was trained so far, so no work is lost."""
    size = size or components.capabilities.native_size
    check_training(components, size, steps, batch_size, learning_rate)
    device, family, unet = components.device, components.family, components.unet
    fused = unet_blocks(unet, blocks)
    channels = block_channels(unet)
    modules = PropagationModules({name: channels[name] for name in fused}).to(device, torch.float32).train()
    optimizer = torch.optim.AdamW(modules.parameters(), lr=learning_rate)
    noise_scheduler = training_scheduler(components)
    rng, generator = np.random.default_rng(seed), torch.Generator("cpu").manual_seed(seed)
    latent_size = size // components.capabilities.vae_scale_factor

    with torch.no_grad():
        empty = family.encode_text(components, "", False, batch_size, (size, size))
    conditioning = Conditioning.cat([empty, empty])  # the generation and the context pass
    for frozen in (unet, components.vae, *components.text_modules().values()):
        frozen.requires_grad_(False)  # gradients flow through the UNet's activations to phi only
    fusion = FeatureFusion(fused, torch.zeros(batch_size, 1, latent_size, latent_size), modules, 1.0)
    done = 0
    try:
        with fusion.attached(), torch.enable_grad():
            for step in range(1, steps + 1):
                picks = rng.integers(0, len(images), size=batch_size)
                pixels = np.stack([square_crop(images[k], size, rng) for k in picks])
                masks = np.stack([random_box_mask(size, rng) for _ in picks])
                loss = training_loss(components, noise_scheduler, fusion, conditioning, pixels, masks, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done = step
                if on_step is not None:
                    on_step(step, loss.item())
    except KeyboardInterrupt:
        return Trained(modules.eval().requires_grad_(False).cpu(), done, interrupted=True)
    return Trained(modules.eval().requires_grad_(False).cpu(), done, interrupted=False)


def training_scheduler(components: Components):
    """A DDPM scheduler from the model's config: the training noise (add_noise) and the v target (get_velocity)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(components.scheduler_config)


def training_loss(components, noise_scheduler, fusion, conditioning, pixels, masks, generator) -> torch.Tensor:
    """The masked denoising loss of one batch, through the fused, propagating UNet."""
    device, dtype, family = components.device, components.dtype, components.family
    factor = components.capabilities.vae_scale_factor
    image = torch.tensor(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    pixel_mask = torch.tensor(masks)[:, None]
    latent_size = pixels.shape[1] // factor  # nearest-neighbour, as the loop downsamples the mask
    latent_mask = torch.nn.functional.interpolate(pixel_mask, size=(latent_size, latent_size)).to(device, dtype)
    with torch.no_grad():
        clean = family.scale_latents(components, family.encode_image(components, image).sample(generator))
        masked = family.scale_latents(
            components, family.encode_image(components, image * (pixel_mask < 0.5)).sample(generator)
        )
    batch = len(pixels)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
    noise = torch.randn(clean.shape, generator=generator).to(device, dtype)
    timesteps = timesteps.to(device)
    generation = noise_scheduler.add_noise(clean, noise, timesteps)
    context = noise_scheduler.add_noise(masked, noise, timesteps)
    if components.capabilities.inpainting_unet:
        extra = torch.cat([latent_mask, masked], dim=1)
        generation, context = torch.cat([generation, extra], dim=1), torch.cat([context, extra], dim=1)
    fusion.set_mask(latent_mask)
    with fusion.fusing():
        prediction = family.denoise(
            components, torch.cat([generation, context]), torch.cat([timesteps, timesteps]), conditioning
        )[:batch]
    if components.capabilities.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(clean, noise, timesteps)
    else:
        target = noise
    error = (prediction.float() - target.float()) ** 2 * latent_mask.float()
    return error.sum() / (latent_mask.float().sum() * prediction.shape[1]).clamp(min=1.0)
