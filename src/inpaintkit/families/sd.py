"""Stable Diffusion 1.x/2.x: one CLIP text encoder, a UNet with 4 or 9 (inpainting) input channels.

Reference: diffusers' StableDiffusionInpaintPipeline (encode_prompt, prepare_latents, the UNet call).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from .base import Conditioning, Family

if TYPE_CHECKING:
    from ..models import Components

log = logging.getLogger("inpaintkit")


class StableDiffusion(Family):
    name = "sd"
    pipeline = "StableDiffusionInpaintPipeline"
    component_folders = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    unused_parts = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    preview_factors = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))

    def encode_text(
        self, components: Components, text: str, unconditional: bool, num_images: int, size: tuple[int, int]
    ) -> Conditioning:
        tokenizer, encoder = components.tokenizer, components.text_encoder
        warn_if_truncated(tokenizer, text, "negative prompt" if unconditional else "prompt")
        tokens = tokenizer(
            [text], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        use_mask = getattr(encoder.config, "use_attention_mask", False)
        attention_mask = tokens.attention_mask.to(components.device) if use_mask else None
        embeddings = encoder(tokens.input_ids.to(components.device), attention_mask=attention_mask)[0]
        embeddings = embeddings.to(dtype=encoder.dtype)
        return Conditioning(context=embeddings.repeat_interleave(num_images, dim=0))

    def denoise(
        self, components: Components, model_input: torch.Tensor, t: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        return components.unet(
            model_input,
            t,
            encoder_hidden_states=conditioning.context,
            timestep_cond=conditioning.extras.get("timestep_cond"),  # a guidance-distilled UNet's embedded scale
            return_dict=False,
        )[0]


def warn_if_truncated(tokenizer, text: str, what: str) -> None:
    token_count = len(tokenizer(text, truncation=False, verbose=False).input_ids)  # verbose: transformers' own warning
    if token_count > tokenizer.model_max_length:
        log.warning(
            "The %s is %d tokens long; CLIP reads only the first %d.", what, token_count, tokenizer.model_max_length
        )
