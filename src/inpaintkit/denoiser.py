"""One evaluation of the denoiser at a step of the loop, as the loop and the methods call it.

The loop builds one per job (after the scheduler, the prompts and the inpainting UNet's extra input) and puts it in
the LoopState, so a method that needs more of the network than one call per step (LatentPaint's stacked context
pass, LanPaint's inner iterations) asks it rather than rebuilding the scaling, the guidance batch or the extra
channels itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .families import Conditioning
from .guidance import Guidance
from .models import Components


@dataclass
class Denoiser:
    components: Components
    scheduler: Any  # diffusers scheduler: only its scale_model_input is used here
    timesteps: torch.Tensor  # the steps that run, on the device
    timestep_values: list  # the same, as Python numbers
    guidance: Guidance
    conditioning: Conditioning  # batched as guidance batches the input (unconditional half first)
    condition: Optional[torch.Tensor] = None  # the 9-channel UNet's mask + masked-image latents, guidance-batched
    _stacked: dict[int, Conditioning] = field(default_factory=dict)

    def scaled(self, latents: torch.Tensor, i: int) -> torch.Tensor:
        """Latents as the UNet takes them at step i (sigma schedulers divide by sqrt(sigma^2 + 1); flow schedulers
        have nothing to scale)."""
        scale = getattr(self.scheduler, "scale_model_input", None)
        return latents if scale is None else scale(latents, self.timestep_values[i])

    def batched(self, unet_latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents as one guided call takes them: guidance's copies, then the inpainting UNet's channels."""
        model_input = self.guidance.batch(unet_latents)
        if self.condition is not None:  # 9-channel UNet: noisy latents + mask + masked-image latents
            model_input = torch.cat([model_input, self.condition], dim=1)
        return model_input

    def __call__(self, model_input: torch.Tensor, i: int) -> torch.Tensor:
        """The denoiser's raw prediction (guidance not yet combined) for a batched input at step i.

        A method may stack several passes along the batch (`passes` copies of what `batched` returns): the
        conditioning is repeated to match, each pass's guidance halves in their order."""
        per_pass = len(self.conditioning.context)
        passes, rest = divmod(len(model_input), per_pass)
        if rest or not passes:
            raise ValueError(f"A batch of {len(model_input)} is not whole passes of the conditioning's {per_pass}.")
        return self.components.family.denoise(self.components, model_input, self.timesteps[i], self._for(passes))

    def _for(self, passes: int) -> Conditioning:
        if passes == 1:
            return self.conditioning
        if passes not in self._stacked:
            self._stacked[passes] = Conditioning.cat([self.conditioning] * passes)
        return self._stacked[passes]
