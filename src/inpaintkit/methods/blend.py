"""blend: per-step latent blending, for any checkpoint (diffusers' behaviour for 4-channel UNets).

After each step the known region is replaced by the input's latents noised to the next step's
level, so only the masked region is generated; after the last step, by the clean latents.
"""

import torch

from .base import Method


class Blend(Method):
    name = "blend"
    needs_known_latents = True

    def after_step(self, state, i: int, latents: torch.Tensor) -> torch.Tensor:
        known = state.schedule.noised_after(state.known_latents, state.noise, i)
        return (1 - state.mask) * known + state.mask * latents
