"""What a method is: a few hooks the engine's loop calls."""

from __future__ import annotations

import torch

from ..errors import InputError
from ..models import Capabilities


class Method:
    name: str = ""
    summary: str = ""  # one line for --help and the UI
    requires_inpainting_unet: bool = False
    needs_known_latents: bool = False  # the loop must encode the input image (z0) even at strength 1

    def check(self, capabilities: Capabilities) -> None:
        if self.requires_inpainting_unet and not capabilities.inpainting_unet:
            raise InputError(
                f"Method '{self.name}' needs a dedicated inpainting checkpoint (9-channel UNet) but this model's UNet "
                f"has {capabilities.unet_in_channels} input channels; use --method blend or an inpainting model."
            )

    def after_step(self, state, i: int, latents: torch.Tensor) -> torch.Tensor:
        """Called after scheduler step i with the new latents; returns the latents the loop continues with."""
        return latents
