"""latentpaint: LatentPaint (Corneanu, Gadde, Martinez, "LatentPaint: Image Inpainting in Latent Space with Diffusion
Models", WACV 2024): the known region's context enters the denoiser's hidden states at every block, not only its
input latent ("forward-backward fusion in latent space"), plus a propagation step from known to unknown.

Per step (N = the steps that run; `fuse_until` * N of them, from the first, fuse; the rest are blend's steps):

    y_t  = q(z0_masked, t, noise)              # the masked image's latents at this step's level, the job's noise
    eps  = unet([z_t ; y_t], t)[:B]             # ONE call on a stacked batch (each pass with its guidance halves),
                                                # where after every fused block l:
        h_gen = m_l * h_gen + (1 - m_l) * h_ctx   #   m_l: the mask average-pooled to block l (1 = generate);
                                                  #   a down block's skip connections too
        h_gen = h_gen + s * m_l * phi_l(max over known cells of h_gen)   # only with trained weights loaded
    z_t-1 = step(eps); z_t-1 = m * z_t-1 + (1 - m) * q(z0, t-1, noise)   # blend's paste of the known region

Cost: one UNet call per step, of twice the batch while fusing (about 2x blend's time; 2 denoiser evaluations per
fused step count against the job limits). With fusion off (`--fuse-blocks none` or `--fuse-until 0`) it is blend,
pixel for pixel.

Paper versus our reconstruction. No official code exists and the paper's text could not be read here (the CVF PDF
and its supplement are not reachable from this project's machines; no later paper describing it was found). What
comes from the paper: the idea, as its abstract and the research seed state it (fusion in the network's latent
space at every step instead of RePaint-style resampling; a propagation module; no expensive training). Everything
else is our reconstruction, each choice with its reason:
  - The context pass's input is the *masked* image's latents (hole zeroed, as inpainting UNets are given it), noised
    with the job's noise: the known region only, so the original content of the hole does not leak into the fused
    features (the public reimplementation used the full image).
  - The context pass is the network's own features on that input, batched with the generation pass in one call
    (the reimplementation fused the raw noised VAE latent into every block, mismatching channels and meaning).
  - Blocks: all down, mid and up blocks by default (`--fuse-blocks all`), down blocks' skip connections included.
    Propagation acts on a block's main output: in a down block, a skip connection that is the same tensor takes the
    fused (not the propagated) features, in training as in inference.
  - m_l is the binary latent mask average-pooled to each block's resolution ("Eq. 11" as the reimplementation reads
    it): a partly known cell mixes both passes in proportion.
  - Fusion runs at every step by default (`--fuse-until 1`); the paper's schedule, if it has one, is unknown.
  - Propagation ("Eq. 12"): per-channel max-pool of the known cells -> MLP -> an offset added to the cells being
    generated. Residual, zero-initialised and trained once by `inpaintkit train-latentpaint` (the reimplementation
    replaced the features with an untrained MLP's output, re-created at every call). Without weights the
    training-free fusion runs alone, and each output's metadata says which variant ran.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

from ..errors import InputError
from .blend import Blend
from .feature_fusion import FeatureFusion, block_groups, require_unet, unet_blocks


class LatentPaint(Blend):
    name = "latentpaint"
    paper = "Corneanu, Gadde, Martinez, LatentPaint, WACV 2024 (reconstructed: no official code)"
    needs_masked_latents = True

    def check_components(self, components, settings) -> None:
        require_unet(components)
        if components.acceleration.compile:
            raise InputError(
                "--method latentpaint hooks the UNet's blocks, which a torch.compile'd UNet would skip without a "
                "word; load the model without --compile for this method."
            )
        # Without a module, 0 and the default ask for nothing: front ends that always send the default still work.
        asked = settings.propagation not in (None, 0.0, self.defaults["propagation"])
        if asked and "latentpaint" not in components.method_weights:
            raise InputError(
                f"--propagation {settings.propagation} scales LatentPaint's trained propagation module, and none is "
                "loaded; load one with --latentpaint-weights FILE (write it with inpaintkit train-latentpaint)."
            )

    def metadata(self, components, settings) -> dict:
        """What ran, not what was loaded: fusion only on fused steps; propagation only where a module sits on a fused
        block and its scale is above 0."""
        fused = self.fused_steps(settings, self.steps_run(settings)) > 0
        weights = components.method_weights.get("latentpaint")
        blocks = unet_blocks(components.unet, block_groups(self.option(settings, "fuse_blocks")))
        propagated = (
            fused
            and weights is not None
            and self.option(settings, "propagation") > 0
            and any(weights.at(name) is not None for name in blocks)
        )
        variant = "fusion + propagation" if propagated else "fusion (training-free)" if fused else "blend"
        recorded: dict = {"latentpaint_variant": variant}
        if propagated:
            recorded["latentpaint_weights"] = weights.source
        else:
            recorded["propagation"] = 0.0  # nothing was scaled
        return recorded

    def work_options_hint(self) -> str:
        return " or --fuse-until"

    def denoiser_calls(self, settings) -> int:
        # Each fused step evaluates the network on twice the batch: the context pass is work like a second call.
        return self.steps_run(settings) + self.fused_steps(settings, self.steps_run(settings))

    def fused_steps(self, settings, steps: int) -> int:
        """How many of the `steps` that run fuse: the first fuse_until of them, none when no block is chosen."""
        if self.option(settings, "fuse_blocks") == "none":
            return 0
        # rounded first: 0.28 * 25 is 7.000000000000001 in floating point, which is 7 steps, not 8
        return math.ceil(round(self.option(settings, "fuse_until") * steps, 9))

    @contextlib.contextmanager
    def patched(self, state) -> Iterator[None]:
        settings, components = state.settings, state.components
        if self.fused_steps(settings, state.schedule.steps) == 0:
            yield  # nothing to patch: blend's steps
            return
        groups = block_groups(self.option(settings, "fuse_blocks"))
        fusion = FeatureFusion(
            unet_blocks(components.unet, groups),
            state.denoiser.guidance.batch(state.mask),
            components.method_weights.get("latentpaint"),
            self.option(settings, "propagation"),
        )
        with fusion.attached():
            state.extra["fusion"] = fusion
            try:
                yield
            finally:
                del state.extra["fusion"]

    def predict(self, state, i: int, model_input: torch.Tensor) -> torch.Tensor:
        if i >= self.fused_steps(state.settings, state.schedule.steps):
            return state.denoiser(model_input, i)
        denoiser = state.denoiser
        context = state.schedule.noised(state.masked_latents, state.noise, i)
        stacked = torch.cat([model_input, denoiser.batched(denoiser.scaled(context, i))])
        with state.extra["fusion"].fusing():
            prediction = denoiser(stacked, i)
        return prediction[: len(model_input)]
