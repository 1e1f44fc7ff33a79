"""Stable Diffusion XL (base and inpainting): two CLIP text encoders, a pooled text vector and size "time ids".

Reference: diffusers' StableDiffusionXLInpaintPipeline (encode_prompt, _get_add_time_ids, _encode_vae_image,
the UNet call with added_cond_kwargs, the decode with the VAE's force_upcast and latents_mean/std).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import Conditioning, Family
from .sd import StableDiffusion, warn_if_truncated

if TYPE_CHECKING:
    from ..models import Components

# The aesthetic scores diffusers conditions a `requires_aesthetics_score` model (the refiner) on.
AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5


class StableDiffusionXL(Family):
    name = "sdxl"
    pipeline = "StableDiffusionXLInpaintPipeline"
    component_folders = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
    preview_factors = (
        (0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088)
    )  # fmt: skip
    text_encoders = ("text_encoder", "text_encoder_2")
    tokenizers = ("tokenizer", "tokenizer_2")
    unused_parts = StableDiffusion.unused_parts  # diffusers drops those its SDXL pipeline does not take

    def vae_dtype(self, vae_config: Any, dtype: torch.dtype) -> torch.dtype:
        # The SDXL VAE overflows in fp16; diffusers runs it in float32 where its config says force_upcast.
        return torch.float32 if dtype == torch.float16 and getattr(vae_config, "force_upcast", False) else dtype

    def encode_text(
        self, components: Components, text: str, unconditional: bool, num_images: int, size: tuple[int, int]
    ) -> Conditioning:
        # diffusers zeroes an unconditional prompt that is empty when the model asks for it (SDXL base does).
        zeroed = unconditional and not text and components.pipeline_config.get("force_zeros_for_empty_prompt", False)
        context, pooled = self._embeddings(components, "" if zeroed else text, unconditional)
        if zeroed:
            context, pooled = torch.zeros_like(context), torch.zeros_like(pooled)
        time_ids = self._time_ids(components, size, unconditional).to(components.device, context.dtype)
        return Conditioning(
            context=context.repeat_interleave(num_images, dim=0),
            pooled=pooled.repeat_interleave(num_images, dim=0),
            extras={"time_ids": time_ids.repeat(num_images, 1)},
        )

    def _embeddings(self, components: Components, text: str, unconditional: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Both encoders' penultimate hidden states side by side, and the second encoder's pooled projection."""
        hidden, pooled = [], None
        for tokenizer, encoder in (
            (components.tokenizer, components.text_encoder),
            (components.tokenizer_2, components.text_encoder_2),
        ):
            if tokenizer is components.tokenizer:  # both read 77 tokens: one warning is enough
                warn_if_truncated(tokenizer, text, "negative prompt" if unconditional else "prompt")
            tokens = tokenizer(
                [text],
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            output = encoder(tokens.input_ids.to(components.device), output_hidden_states=True)
            if pooled is None and output[0].ndim == 2:  # the projection of CLIPTextModelWithProjection
                pooled = output[0]
            hidden.append(output.hidden_states[-2])
        dtype = components.text_encoder_2.dtype
        return torch.cat(hidden, dim=-1).to(dtype), pooled.to(dtype)

    def _time_ids(self, components: Components, size: tuple[int, int], unconditional: bool) -> torch.Tensor:
        """SDXL's micro-conditioning: original size, crop top-left (0, 0) and target size, all the size the UNet
        runs at; or the aesthetic score in place of the target size for a refiner-style model."""
        height, width = size
        if components.pipeline_config.get("requires_aesthetics_score", False):
            score = NEGATIVE_AESTHETIC_SCORE if unconditional else AESTHETIC_SCORE
            return torch.tensor([[height, width, 0, 0, score]])
        return torch.tensor([[height, width, 0, 0, height, width]])

    def encode_image(self, components: Components, pixels: torch.Tensor) -> Any:
        vae = components.vae  # kept in float32 when its config asks for an upcast (models.py)
        return vae.encode(pixels.to(components.device, vae.dtype)).latent_dist

    def scale_latents(self, components: Components, sample: torch.Tensor) -> torch.Tensor:
        return sample.to(components.dtype) * components.capabilities.vae_scaling_factor

    def unscale_latents(self, components: Components, latents: torch.Tensor) -> torch.Tensor:
        config, vae = components.vae.config, components.vae
        latents = latents.to(vae.dtype)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:  # as diffusers decodes (its encode scales only)
            channels = len(mean)
            mean = torch.tensor(mean).view(1, channels, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, channels, 1, 1).to(latents.device, latents.dtype)
            return latents * std / config.scaling_factor + mean
        return latents / config.scaling_factor

    def denoise(
        self, components: Components, model_input: torch.Tensor, t: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        added = {"text_embeds": conditioning.pooled, "time_ids": conditioning.extras["time_ids"]}
        return components.unet(
            model_input,
            t,
            encoder_hidden_states=conditioning.context,
            timestep_cond=conditioning.extras.get("timestep_cond"),  # a guidance-distilled UNet's embedded scale
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
