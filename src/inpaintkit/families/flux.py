"""Flux.1 (Black Forest Labs): a rectified-flow transformer over 16-channel latents, each 2x2 patch of them one
token; CLIP's pooled vector and T5's token states as the text; the guidance scale as an input of a guidance-distilled
model (no unconditional batch), and optionally "true" CFG with a negative prompt.

The loop keeps latents in the spatial B x C x h x w layout of every family; this adapter packs them into tokens for
the transformer and unpacks its prediction. Packing is a permutation and the flow scheduler's step works element by
element, so the pixels are those of the packed pipeline. References: diffusers' FluxInpaintPipeline (`flux`, an
ordinary checkpoint with blending) and FluxFillPipeline (`flux-fill`: the masked image's latents and the 8x8 mask as
extra channels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import InputError
from ..guidance import ClassifierFreeGuidance, DistilledGuidance, Guidance, NoGuidance
from .base import Conditioning, Family
from .sd import warn_if_truncated

if TYPE_CHECKING:
    from ..models import Capabilities, Components
    from ..settings import InpaintSettings

T5_TOKENS = 512  # the pipelines' max_sequence_length for T5


class Flux(Family):
    name = "flux"
    pipeline = "FluxInpaintPipeline"
    component_folders = (
        "transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"
    )  # fmt: skip
    text_encoders = ("text_encoder", "text_encoder_2")
    tokenizers = ("tokenizer", "tokenizer_2")
    denoiser = "transformer"
    patch_size = 2
    default_guidance = 3.5  # FLUX.1 dev's distilled guidance, as FluxPipeline and its model card have it
    always_encodes_image = True
    strength_rounding = "skipped"
    unused_parts = {"image_encoder": None, "feature_extractor": None}  # FluxInpaintPipeline's IP-Adapter parts
    embedded_guidance = True
    flow_matching = True
    # The latent-to-RGB factors and bias of ComfyUI's Flux previewer (comfy/latent_formats.py, Flux), 16 channels.
    preview_factors = (
        (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
    )  # fmt: skip
    preview_bias = (-0.0329, -0.0718, -0.0851)

    def native_size(self, pipeline: Any, vae_scale_factor: int) -> int:
        # The transformer's config has no size; diffusers' Flux pipelines default to 128 latent cells (1024 px).
        return 128 * vae_scale_factor

    def spatial_input_channels(self, denoiser_config: Any) -> int:
        return int(denoiser_config.in_channels) // (self.patch_size * self.patch_size)

    def guidance(self, settings: InpaintSettings, capabilities: Capabilities) -> Guidance:
        true_cfg = 1.0 if settings.true_cfg is None else settings.true_cfg
        classifier_free = ClassifierFreeGuidance(true_cfg) if true_cfg > 1.0 else NoGuidance()
        scale = self.guidance_scale(settings) if capabilities.guidance_embedded else None
        return DistilledGuidance(scale, classifier_free)

    def settled(self, settings: InpaintSettings, capabilities: Capabilities | None = None) -> InpaintSettings:
        if capabilities is not None and not capabilities.guidance_embedded and settings.guidance is None:
            return settings  # a model without a guidance input (FLUX.1 schnell): no guidance to record
        return super().settled(settings, capabilities)

    def check_guidance(self, settings: InpaintSettings, capabilities: Capabilities) -> None:
        # A value the model cannot take must not pass for one that acted (the web UI sends the default: no harm).
        given = settings.guidance not in (None, self.default_guidance)
        if not capabilities.guidance_embedded and given:
            raise InputError(
                f"This FLUX model takes no guidance input (as FLUX.1 schnell), so --guidance {settings.guidance:g} "
                "cannot act; leave it out, or use --true-cfg with a negative prompt."
            )
        # diffusers drops a negative prompt silently unless true_cfg_scale > 1; a setting the user gave must act.
        if settings.negative_prompt.strip() and (settings.true_cfg is None or settings.true_cfg <= 1.0):
            raise InputError(
                "Flux's guidance is distilled into the model, so a negative prompt acts only with true classifier-free "
                "guidance: add --true-cfg above 1 (e.g. 4; a second pass per step) or leave the negative prompt out."
            )

    def set_timesteps(self, scheduler: Any, steps: int, device: Any, latent_size: tuple[int, int]) -> None:
        # Flux's pipelines pass their own sigmas, shifted by mu: more steps at high noise for more tokens.
        height, width = latent_size
        tokens = (height // self.patch_size) * (width // self.patch_size)
        set_flow_timesteps(scheduler, steps, device, tokens, np.linspace(1.0, 1 / steps, steps), max_shift=1.15)

    def encode_text(
        self, components: Components, text: str, unconditional: bool, num_images: int, size: tuple[int, int]
    ) -> Conditioning:
        warn_if_truncated(components.tokenizer, text, "negative prompt" if unconditional else "prompt")
        clip_tokens = components.tokenizer(
            [text], padding="max_length", max_length=components.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        )  # fmt: skip
        pooled = components.text_encoder(clip_tokens.input_ids.to(components.device), output_hidden_states=False)
        pooled = pooled.pooler_output.to(dtype=components.text_encoder.dtype)
        context = t5_states(components.tokenizer_2, components.text_encoder_2, components.device, text, T5_TOKENS)
        return Conditioning(
            context=context.repeat_interleave(num_images, dim=0), pooled=pooled.repeat_interleave(num_images, dim=0)
        )

    def denoise(
        self, components: Components, model_input: torch.Tensor, t: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        batch, _, height, width = model_input.shape
        prediction = components.unet(
            hidden_states=pack(model_input),
            timestep=t.expand(batch).to(model_input.dtype) / 1000,
            guidance=conditioning.extras.get("guidance"),
            pooled_projections=conditioning.pooled,
            encoder_hidden_states=conditioning.context,
            txt_ids=torch.zeros(conditioning.context.shape[1], 3, device=model_input.device, dtype=model_input.dtype),
            img_ids=image_ids(height // 2, width // 2, model_input.device, model_input.dtype),
            return_dict=False,
        )[0]
        return unpack(prediction, height, width)


class FluxFill(Flux):
    """FLUX.1 Fill: the masked image's latents and the pixel mask, each 8x8 block of it 64 channels of one latent
    cell, beside the noisy latents (FluxFillPipeline)."""

    name = "flux-fill"
    pipeline = "FluxFillPipeline"
    unused_parts = {}  # FluxFillPipeline has no optional parts
    default_guidance = 30.0  # FluxFillPipeline's default and the model card's

    def inpainting_channels(self, latent_channels: int, vae_scale_factor: int) -> int:
        return 2 * latent_channels + vae_scale_factor * vae_scale_factor

    def inpainting_condition(
        self, pixel_mask: torch.Tensor, latent_mask: torch.Tensor, masked_latents: torch.Tensor
    ) -> torch.Tensor:
        batch, _, height, width = masked_latents.shape
        factor = pixel_mask.shape[-1] // width
        blocks = pixel_mask[:, 0].view(batch, height, factor, width, factor).permute(0, 2, 4, 1, 3)
        return torch.cat([masked_latents, blocks.reshape(batch, factor * factor, height, width)], dim=1)


def set_flow_timesteps(
    scheduler: Any, steps: int, device: Any, tokens: int, sigmas: np.ndarray | None, max_shift: float
) -> None:
    """A flow scheduler's timesteps as diffusers' Flux and SD 3 pipelines set them: the pipeline's `sigmas` where the
    scheduler takes them, and the resolution shift mu (Esser et al., arXiv 2403.03206, sec. 5.3.2) where its config
    asks for it."""
    import inspect

    accepted = set(inspect.signature(scheduler.set_timesteps).parameters)
    kwargs: dict[str, Any] = {}
    if sigmas is not None and "sigmas" in accepted:
        kwargs["sigmas"] = sigmas
    else:
        kwargs["num_inference_steps"] = steps
    if scheduler.config.get("use_dynamic_shifting", False) and "mu" in accepted:
        kwargs["mu"] = resolution_shift(scheduler.config, tokens, max_shift)
    scheduler.set_timesteps(device=device, **kwargs)


def resolution_shift(config: Any, tokens: int, max_shift: float) -> float:
    """diffusers' calculate_shift: mu linear in the token count, from base_shift at base_image_seq_len tokens to
    max_shift at max_image_seq_len."""
    base_tokens, max_tokens = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, top_shift = config.get("base_shift", 0.5), config.get("max_shift", max_shift)
    slope = (top_shift - base_shift) / (max_tokens - base_tokens)
    return tokens * slope + (base_shift - slope * base_tokens)


def t5_states(tokenizer: Any, encoder: Any, device: torch.device, text: str, length: int) -> torch.Tensor:
    """T5's last hidden states for `text`, padded to `length` tokens (Flux's second text encoder, SD 3's third)."""
    tokens = tokenizer([text], padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    states = encoder(tokens.input_ids.to(device), output_hidden_states=False)[0]
    return states.to(dtype=encoder.dtype)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """B x C x h x w latents as B x (h/2 * w/2) tokens of 4C (diffusers' _pack_latents)."""
    batch, channels, height, width = latents.shape
    latents = latents.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for latents of h x w cells (diffusers' _unpack_latents)."""
    batch, _, channels = tokens.shape
    tokens = tokens.view(batch, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return tokens.reshape(batch, channels // 4, height, width)


def image_ids(height: int, width: int, device, dtype) -> torch.Tensor:
    """Each token's (0, row, column), for the transformer's rotary position embedding (_prepare_latent_image_ids)."""
    ids = torch.zeros(height, width, 3, device=device)  # made on the device: no host-to-device copy at every step
    ids[..., 1] = ids[..., 1] + torch.arange(height, device=device)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(width, device=device)[None, :]
    return ids.reshape(height * width, 3).to(dtype)
