"""tdpaint: a zero-shot approximation of TD-Paint (Mayet et al., arXiv 2410.09306), kept as an ablation.

TD-Paint trains a UNet on per-pixel timesteps (known pixels at t = 0). Without training, this
variant shows the UNet the known region noised only to a small constant level `known_t` while the
hole follows the schedule; the UNet is still told the scalar step t. Seed experiments report poor
results: compare it with bld rather than use it for production.
"""

import torch

from ..errors import InputError
from ..noise import flow_matching, variance_preserving
from ..schedulers import SIGMA_SCHEDULERS
from .base import Method


class TDPaint(Method):
    name = "tdpaint"
    paper = "Mayet et al., TD-Paint, arXiv 2410.09306 (zero-shot approximation, no training)"
    needs_known_latents = True

    scheduler_reason = "tdpaint mixes noise levels in the UNet input, which needs a variance-preserving scheduler"

    def scheduler_name(self, requested: str, model_scheduler: str) -> str:
        # The model's own scheduler is only a default: one that cannot work here is replaced, not refused.
        return "ddim" if requested == "default" and model_scheduler in SIGMA_SCHEDULERS else requested

    def check_scheduler(self, scheduler) -> None:
        # A flow's latents are unscaled too ((1 - sigma) x0 + sigma n), so its levels mix as a VP schedule's do.
        if not (variance_preserving(scheduler) or flow_matching(scheduler)):
            raise InputError(
                f"tdpaint mixes noise levels in the UNet input, which needs a variance-preserving or flow-matching "
                f"scheduler (ddim, pndm, dpm++2m, unipc; a flow model's own), not {type(scheduler).__name__}."
            )

    def start(self, state, latents: torch.Tensor) -> torch.Tensor:
        # The known region's UNet input is the same at every step: built once, before the loop.
        known_t = self.option(state.settings, "known_t")
        state.extra["known_input"] = state.schedule.noised_to_timestep(state.known_latents, state.noise, known_t)
        return latents

    def unet_input(self, state, i: int, latents: torch.Tensor) -> torch.Tensor:
        return state.mask * latents + (1 - state.mask) * state.extra["known_input"]

    def after_step(self, state, i: int, latents: torch.Tensor) -> torch.Tensor:
        if i < state.schedule.steps - 1:
            return latents
        return state.mask * latents + (1 - state.mask) * state.known_latents  # the clean background to decode
