"""Stable Diffusion 3 / 3.5 (Esser et al., arXiv 2403.03206): a rectified-flow MMDiT over 16-channel latents; CLIP-L,
CLIP-G and T5 as the text (both CLIPs' penultimate states side by side, padded to T5's width, before T5's tokens;
both pooled vectors as one); classifier-free guidance. A 33-channel transformer takes the mask and the masked image's
latents as SD's inpainting UNet does.

Reference: diffusers' StableDiffusion3InpaintPipeline (encode_prompt, prepare_latents, prepare_mask_latents, the
transformer call and its blend for a 16-channel model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import Conditioning, Family
from .flux import set_flow_timesteps, t5_states
from .sd import warn_if_truncated

if TYPE_CHECKING:
    from ..models import Components

T5_TOKENS = 256  # the pipeline's max_sequence_length for T5


class StableDiffusion3(Family):
    name = "sd3"
    pipeline = "StableDiffusion3InpaintPipeline"
    component_folders = (
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    )  # fmt: skip  (T5, text_encoder_3, may be left out to save memory: its states are then zeros)
    text_encoders = ("text_encoder", "text_encoder_2", "text_encoder_3")
    tokenizers = ("tokenizer", "tokenizer_2", "tokenizer_3")
    denoiser = "transformer"
    patch_size = 2
    default_guidance = 7.0  # StableDiffusion3InpaintPipeline's default
    strength_rounding = "skipped"
    unused_parts = {"image_encoder": None, "feature_extractor": None}  # the IP-Adapter parts
    flow_matching = True
    # ComfyUI's SD 3 previewer factors and bias (comfy/latent_formats.py, SD3), 16 channels.
    preview_factors = (
        (-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458), (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309), (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669), (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293), (-0.1448, -0.1463, -0.1189),
    )  # fmt: skip
    preview_bias = (0.2394, 0.2135, 0.1925)

    def set_timesteps(self, scheduler: Any, steps: int, device: Any, latent_size: tuple[int, int]) -> None:
        height, width = latent_size
        tokens = (height // self.patch_size) * (width // self.patch_size)
        set_flow_timesteps(scheduler, steps, device, tokens, None, max_shift=1.16)

    def encode_text(
        self, components: Components, text: str, unconditional: bool, num_images: int, size: tuple[int, int]
    ) -> Conditioning:
        warn_if_truncated(components.tokenizer, text, "negative prompt" if unconditional else "prompt")
        states, pooled = [], []
        for tokenizer, encoder in (
            (components.tokenizer, components.text_encoder),
            (components.tokenizer_2, components.text_encoder_2),
        ):
            tokens = tokenizer(
                [text], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                return_tensors="pt",
            )  # fmt: skip
            output = encoder(tokens.input_ids.to(components.device), output_hidden_states=True)
            pooled.append(output[0].to(dtype=components.text_encoder.dtype))
            states.append(output.hidden_states[-2].to(dtype=components.text_encoder.dtype))
        clip = torch.cat(states, dim=-1)
        t5 = self._t5(components, text, clip)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        context = torch.cat([clip, t5], dim=-2)
        return Conditioning(
            context=context.repeat_interleave(num_images, dim=0),
            pooled=torch.cat(pooled, dim=-1).repeat_interleave(num_images, dim=0),
        )

    @staticmethod
    def _t5(components: Components, text: str, clip: torch.Tensor) -> torch.Tensor:
        if components.text_encoder_3 is None:  # a model loaded without T5: zeros in its place, as diffusers does
            width = components.unet.config.joint_attention_dim
            return torch.zeros((1, T5_TOKENS, width), device=components.device, dtype=clip.dtype)
        return t5_states(components.tokenizer_3, components.text_encoder_3, components.device, text, T5_TOKENS)

    def denoise(
        self, components: Components, model_input: torch.Tensor, t: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        return components.unet(
            hidden_states=model_input,
            timestep=t.expand(model_input.shape[0]),
            encoder_hidden_states=conditioning.context,
            pooled_projections=conditioning.pooled,
            return_dict=False,
        )[0]
