"""soft: per-pixel strength from a grayscale mask (Differential Diffusion, Levin & Fried 2023,
arXiv 2306.00950; AUTOMATIC1111's "soft inpainting").

A pixel with mask value c runs free only for the last c of the steps: before every step, the
pixels whose c is below 1 - i/N are reset to the input noised to that step. Value 0 never changes,
value 1 changes fully. This is what lets --mask-blur reach the denoiser.
"""

import torch

from .base import Method


class Soft(Method):
    name = "soft"
    paper = "Levin & Fried, Differential Diffusion, arXiv 2306.00950"
    needs_known_latents = True
    soft_mask = True

    def before_step(self, state, i: int, latents: torch.Tensor) -> torch.Tensor:
        original = state.schedule.noised(state.known_latents, state.noise, i)
        if i == 0:
            return original
        keep = (state.change < 1.0 - i / state.schedule.steps).to(latents.dtype)
        return keep * original + (1 - keep) * latents
