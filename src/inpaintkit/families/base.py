"""What a model family is to the engine: how its prompt, image and denoiser are called (DESIGN.md).

The loop, the methods and the front ends see only this interface; a family's adapter (sd.py, ...) holds
what differs, each following its diffusers inpainting pipeline, the reference for its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch

if TYPE_CHECKING:
    from ..models import Components


@dataclass
class Conditioning:
    """What the denoiser is told about the prompts, batched as its input is (guidance's halves, then images)."""

    context: torch.Tensor  # per-token embeddings, B x T x D
    pooled: Optional[torch.Tensor] = None  # one vector per prompt (SDXL's second encoder)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # a family's own (SDXL's time ids)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """The parts stacked along the batch, in order (guidance's unconditional part first)."""
        first = parts[0]
        return Conditioning(
            context=torch.cat([part.context for part in parts]),
            pooled=None if first.pooled is None else torch.cat([part.pooled for part in parts]),
            extras={name: torch.cat([part.extras[name] for part in parts]) for name in first.extras},
        )


class Family:
    """One family of latent diffusion models. Subclasses declare their facts and override what differs."""

    name: str = ""  # as users and `inpaintkit info` name it
    pipeline: str = ""  # the diffusers inpainting pipeline: the loader, and the reference for equivalence
    component_folders: tuple[str, ...] = ()  # what a diffusers folder of this family holds
    text_encoders: tuple[str, ...] = ("text_encoder",)  # Components' attributes, in the pipeline's order
    tokenizers: tuple[str, ...] = ("tokenizer",)
    # latent channel -> (r, g, b): a linear map from latents to a rough picture, for progress previews without the VAE
    # (the "cheap approximation" of AUTOMATIC1111's sd_vae_approx.py); empty: no preview
    preview_factors: tuple[tuple[float, float, float], ...] = ()

    def vae_dtype(self, vae_config: Any, dtype: torch.dtype) -> torch.dtype:
        """The dtype the VAE runs in when the model runs in `dtype`."""
        return dtype

    def encode_text(
        self, components: Components, text: str, unconditional: bool, num_images: int, size: tuple[int, int]
    ) -> Conditioning:
        """The conditioning for one text, repeated for `num_images`. `unconditional`: it is guidance's negative
        prompt (some families encode an empty one as zeros). `size` is the (height, width) in pixels the denoiser
        runs at, for families that condition on it."""
        raise NotImplementedError

    def encode_image(self, components: Components, pixels: torch.Tensor) -> Any:
        """The VAE posterior of Bx3xHxW pixels in [-1, 1]; `.sample(generator)` draws as diffusers does."""
        return components.vae.encode(pixels.to(components.device, components.dtype)).latent_dist

    def scale_latents(self, components: Components, sample: torch.Tensor) -> torch.Tensor:
        """A VAE sample in the denoiser's latent space."""
        return sample * components.capabilities.vae_scaling_factor

    def unscale_latents(self, components: Components, latents: torch.Tensor) -> torch.Tensor:
        """The denoiser's latents as the VAE decoder takes them."""
        return latents / components.capabilities.vae_scaling_factor

    def decode(self, components: Components, latents: torch.Tensor) -> torch.Tensor:
        """Latents to pixels in [-1, 1]."""
        return components.vae.decode(self.unscale_latents(components, latents), return_dict=False)[0]

    def denoise(
        self, components: Components, model_input: torch.Tensor, t: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        """One call of the denoiser on the (guidance-batched) input at timestep t."""
        raise NotImplementedError
