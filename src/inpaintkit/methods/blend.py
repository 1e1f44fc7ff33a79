"""blend: per-step latent blending, for any checkpoint (diffusers' behaviour for 4-channel UNets).

After each step the known region is replaced by the input's latents noised to the next step's
level, so only the masked region is generated; after the last step, by the clean latents.
"""

import torch

from .base import Method


def known_at_next_level(state, i: int, noise: torch.Tensor) -> torch.Tensor:
    """z0 noised to the level the latents have after step i; z0 itself after the last."""
    if i < len(state.timesteps) - 1:
        return state.scheduler.add_noise(state.known_latents, noise, state.timesteps[i + 1 : i + 2])
    return state.known_latents


class Blend(Method):
    name = "blend"
    needs_known_latents = True

    def after_step(self, state, i: int, latents: torch.Tensor) -> torch.Tensor:
        return (1 - state.mask) * known_at_next_level(state, i, state.noise) + state.mask * latents
