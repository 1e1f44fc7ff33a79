"""A rough picture of latents without the VAE, for progress previews: each family's linear latent-to-RGB map
(AUTOMATIC1111's "cheap approximation", after https://discuss.huggingface.co/t/decoding-latents-to-rgb-without-
upscaling/23204), at the latents' resolution. Milliseconds where a VAE decode takes a second."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from PIL import Image

from .families import Family


def latent_preview(family: Family, latents: torch.Tensor) -> Optional[Image.Image]:
    """The first image of a batch of latents as an RGB picture; None when the family has no map for its channels."""
    factors = family.preview_factors
    if not factors or latents.ndim != 4 or latents.shape[1] != len(factors):
        return None
    weights = torch.tensor(factors, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->rhw", latents[0].detach().float().cpu(), weights)
    rgb = rgb + torch.tensor(family.preview_bias, dtype=torch.float32)[:, None, None]
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray(np.round(pixels * 255).astype(np.uint8))
