"""bld: Blended Latent Diffusion (Avrahami, Fried, Lischinski, SIGGRAPH 2023; arXiv 2206.02779).

Start from pure noise with the first `blend_start` of the steps skipped; after each step, replace
the known region by the input's latents noised to the current step with fresh noise. Progressive
mask shrinking uses dilated masks first and the exact one last. Background reconstruction repairs
what the VAE round trip does to the known region, after decoding.
Reference code: omriav/blended-latent-diffusion (DDIM 50 steps, CFG 7.5, blending start 0.25).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..finish import poisson_blend
from .base import Method

OPTIMIZE_STEPS, OPTIMIZE_LR, BACKGROUND_WEIGHT = 75, 1e-4, 100.0  # the authors' settings


def shrinking_masks(mask: torch.Tensor, iterations: int) -> list[torch.Tensor]:
    """[dilate(m, 2n+1), ..., dilate(m, 3), m]: square kernels at latent resolution, most dilated first."""
    kernels = [2 * k + 1 for k in range(iterations, 0, -1)]
    return [F.max_pool2d(mask, kernel, stride=1, padding=kernel // 2) for kernel in kernels] + [mask]


def mask_for_step(masks: list[torch.Tensor], i: int, count: int) -> torch.Tensor:
    """The steps are split into len(masks) equal chunks, one mask each."""
    return masks[min(i * len(masks) // count, len(masks) - 1)]


class BlendedLatentDiffusion(Method):
    name = "bld"
    paper = "Avrahami et al., Blended Latent Diffusion, SIGGRAPH 2023 (arXiv 2206.02779)"
    needs_known_latents = True

    def check_options(self, settings) -> None:
        blend_start = self.option(settings, "blend_start")
        steps_run = self.steps_run(settings)
        if steps_run < 1:
            raise InputError(f"--blend-start {blend_start} with {settings.steps} steps leaves no step to run.")
        iterations = self.option(settings, "mask_dilation_iterations")
        if iterations + 1 > steps_run:
            raise InputError(
                f"--mask-dilation-iterations {iterations} needs at least {iterations + 1} steps to run; {steps_run} "
                "run."
            )
        if settings.strength < 1.0:
            raise InputError("bld starts from pure noise after --blend-start; --strength does not apply to it.")

    def skipped_steps(self, settings, rounding: str = "kept") -> int:
        return int(settings.steps * self.option(settings, "blend_start"))

    def start(self, state, latents: torch.Tensor) -> torch.Tensor:
        state.extra["masks"] = shrinking_masks(state.mask, self.option(state.settings, "mask_dilation_iterations"))
        return state.schedule.pure_noise(state.noise, 0)  # BLD starts from noise, not from the input

    def after_step(self, state, i: int, latents: torch.Tensor) -> torch.Tensor:
        mask = mask_for_step(state.extra["masks"], i, state.schedule.steps)
        known = state.schedule.noised(state.known_latents, state.fresh_noise(), i)
        return mask * latents + (1 - mask) * known

    def decode(self, state, latents: torch.Tensor) -> torch.Tensor:
        decoded = super().decode(state, latents)
        if self.option(state.settings, "reconstruct") != "optimize":
            return decoded
        return torch.cat([optimize_decoder(state, latents[k : k + 1], decoded[k : k + 1]) for k in range(len(latents))])

    def finish(self, settings, generated: np.ndarray, original: np.ndarray, repaint: np.ndarray) -> np.ndarray:
        how = self.option(settings, "reconstruct")
        if how == "pixel":
            return np.where(repaint[:, :, None] >= 0.5, generated, original)
        if how == "poisson":
            return poisson_blend(generated, original, repaint)
        return generated


def optimize_decoder(state, latents: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """BLD's background reconstruction: fine-tune a copy of the decoder so that, with the latents fixed,
    it reproduces the input outside the mask (weight 100) and its own first decoding inside (weight 1).
    The loaded VAE is never modified."""
    components = state.components
    vae = components.vae
    with torch.inference_mode(False), torch.enable_grad():
        # Flux's and SD 3's VAEs have no post-quant conv: the decoder alone is tuned there.
        post_quant_conv = copy.deepcopy(vae.post_quant_conv or torch.nn.Identity()).float().requires_grad_(True)
        decoder = copy.deepcopy(vae.decoder).float().requires_grad_(True)
        decoder._forward_pre_hooks.clear()  # not the loaded decoder's hooks (should_stop's, named "while decoding")
        z = components.family.unscale_latents(components, latents).float().clone()
        target_inside = generated.float().clone()
        source = state.image.to(z.device).float().clone()
        mask = state.pixel_mask.to(z.device).float().clone()
        optimizer = torch.optim.Adam([*post_quant_conv.parameters(), *decoder.parameters()], lr=OPTIMIZE_LR)
        for _ in range(OPTIMIZE_STEPS):
            state.stopper.check("while reconstructing the background")
            output = decoder(post_quant_conv(z))
            loss = F.mse_loss(output * mask, target_inside * mask) + BACKGROUND_WEIGHT * F.mse_loss(
                output * (1 - mask), source * (1 - mask)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return decoder(post_quant_conv(z)).to(generated.dtype)
