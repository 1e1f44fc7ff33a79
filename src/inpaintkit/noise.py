"""The noise levels of one job's steps, as the methods need them.

Methods never read a scheduler's internals (`add_noise`, `alphas_cumprod`, `init_noise_sigma`, `sigmas`):
they ask this object, so a method runs unchanged on any schedule a model family brings (DESIGN.md). "Level
i" is the noise the latents carry when step i starts; level `steps` is the clean signal. Everything a step
needs is read from the scheduler here, before the loop, so no method makes the GPU wait inside it.
"""

from __future__ import annotations

import math

import torch


def variance_preserving(scheduler) -> bool:
    """Latents of unit variance at every level (DDIM, PNDM, DPM++, UniPC), not sigma-scaled ones (Euler, LMS)."""
    return float(scheduler.init_noise_sigma) <= 1.0


class NoiseSchedule:
    """One job's steps over a diffusers scheduler: `timesteps` are the steps that run (on the device),
    `timestep_values` the same as Python numbers."""

    def __init__(self, scheduler, timesteps: torch.Tensor, timestep_values: list):
        self._scheduler = scheduler
        self._timesteps = timesteps
        self._timestep_values = timestep_values
        self.variance_preserving = variance_preserving(scheduler)
        self._alpha_bars = self._read_alpha_bars()

    @property
    def steps(self) -> int:
        return len(self._timestep_values)

    def initial(self, noise: torch.Tensor) -> torch.Tensor:
        """The latents a job starts from when nothing of the input is kept (strength 1)."""
        return noise * self._scheduler.init_noise_sigma

    def noised(self, clean: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
        """`clean` noised with `noise` to the level step i starts at (diffusers' add_noise)."""
        return self._scheduler.add_noise(clean, noise, self._timesteps[i : i + 1])

    def noised_after(self, clean: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
        """`clean` at the level the latents have after step i: the next step's level, or clean after the last."""
        return self.noised(clean, noise, i + 1) if i < self.steps - 1 else clean

    def pure_noise(self, noise: torch.Tensor, i: int) -> torch.Tensor:
        """Noise alone at the level of step i, for a method that starts from noise part-way down (bld)."""
        if not self.variance_preserving and hasattr(self._scheduler, "sigmas"):
            # sigma-parameterised latents (Euler, LMS): noise of std sqrt(sigma^2 + 1) at that step's sigma
            index = self._scheduler.timesteps.tolist().index(self._timestep_values[i])
            return noise * (self._scheduler.sigmas[index] ** 2 + 1) ** 0.5
        return noise * self._scheduler.init_noise_sigma

    def back_up(self, latents: torch.Tensor, level: int, noise: torch.Tensor) -> torch.Tensor:
        """From level `level` one stride back up to level `level - 1` (RePaint):
        z' = sqrt(abar' / abar) z + sqrt(1 - abar' / abar) n."""
        ratio = self._alpha_bars[level - 1] / self._alpha_bars[level]
        return math.sqrt(ratio) * latents + math.sqrt(1 - ratio) * noise

    def noised_to_timestep(self, clean: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
        """`clean` at a training timestep's level, whichever steps run (tdpaint's known region)."""
        alpha_bar = self._scheduler.alphas_cumprod[timestep].to(clean.device, clean.dtype)
        return alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise

    def _read_alpha_bars(self) -> list[float] | None:
        """abar at each level 0..steps as Python floats, for going back up without a host read per stride. The
        last level is the scheduler's final alpha: DDIM's final_alpha_cumprod, or 1 for DDPM. Only variance-
        preserving schedules have them (a sigma schedule's timesteps are not indices)."""
        alphas_cumprod = getattr(self._scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None or not self.variance_preserving:
            return None
        final = getattr(self._scheduler, "final_alpha_cumprod", None)
        final = 1.0 if final is None else float(final)
        return [float(alphas_cumprod[t]) for t in self._timestep_values] + [final]
