"""The noise levels of one job's steps, as the methods need them.

Methods never read a scheduler's internals (`add_noise`, `alphas_cumprod`, `init_noise_sigma`, `sigmas`):
they ask this object, so a method runs unchanged on any schedule a model family brings (DESIGN.md). "Level
i" is the noise the latents carry when step i starts; level `steps` is the clean signal. Everything a step
needs is read from the scheduler here, before the loop, so no method makes the GPU wait inside it.
"""

from __future__ import annotations

import math

import torch


def flow_matching(scheduler) -> bool:
    """Rectified-flow latents x = (1 - sigma) x0 + sigma n (Flux, SD 3; Lipman et al., arXiv 2210.02747), which the
    denoiser maps to a velocity n - x0: diffusers' FlowMatch* schedulers, or DPM++ run on flow sigmas."""
    return type(scheduler).__name__.startswith("FlowMatch") or bool(scheduler.config.get("use_flow_sigmas", False))


def variance_preserving(scheduler) -> bool:
    """Latents of unit variance at every level (DDIM, PNDM, DPM++, UniPC), not sigma-scaled ones (Euler, LMS) nor
    flow-matching ones."""
    return not flow_matching(scheduler) and float(scheduler.init_noise_sigma) <= 1.0


class NoiseSchedule:
    """One job's steps over a diffusers scheduler: `timesteps` are the steps that run (on the device),
    `timestep_values` the same as Python numbers."""

    def __init__(self, scheduler, timesteps: torch.Tensor, timestep_values: list):
        self._scheduler = scheduler
        self._timesteps = timesteps
        self._timestep_values = timestep_values
        self.flow = flow_matching(scheduler)
        self.variance_preserving = variance_preserving(scheduler)
        self._alpha_bars = self._read_alpha_bars()
        self._sigmas = self._read_sigmas(timesteps)

    @property
    def steps(self) -> int:
        return len(self._timestep_values)

    def initial(self, noise: torch.Tensor) -> torch.Tensor:
        """The latents a job starts from when nothing of the input is kept (strength 1)."""
        if self.flow:  # sigma is 1 at the start: the noise itself, as scale_noise gives it
            return noise
        return noise * self._scheduler.init_noise_sigma

    def noised(self, clean: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
        """`clean` noised with `noise` to the level step i starts at (diffusers' add_noise, or scale_noise)."""
        if self.flow:
            # scale_noise's arithmetic, with step i's own sigma: scale_noise itself reads the scheduler's current
            # step index whatever timestep it is given, which is wrong for any step but the next.
            sigma = self._sigmas[i].to(clean.device, clean.dtype)
            return sigma * noise + (1.0 - sigma) * clean
        return self._scheduler.add_noise(clean, noise, self._timesteps[i : i + 1])

    def noised_after(self, clean: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
        """`clean` at the level the latents have after step i: the next step's level, or clean after the last."""
        return self.noised(clean, noise, i + 1) if i < self.steps - 1 else clean

    def pure_noise(self, noise: torch.Tensor, i: int) -> torch.Tensor:
        """Noise alone at the level of step i, for a method that starts from noise part-way down (bld)."""
        if self._sigmas is not None:
            # the spread of alpha x0 + sigma n for an x0 of unit variance: sqrt(1 + sigma^2) for sigma-parameterised
            # latents (Euler, LMS), sqrt((1 - sigma)^2 + sigma^2) on a flow
            sigma = self._sigmas[i]
            alpha = 1 - sigma if self.flow else 1
            return noise * (alpha**2 + sigma**2) ** 0.5
        return noise * self._scheduler.init_noise_sigma

    def back_up(self, latents: torch.Tensor, level: int, noise: torch.Tensor) -> torch.Tensor:
        """From level `level` one stride back up to level `level - 1` (RePaint):
        z' = sqrt(abar' / abar) z + sqrt(1 - abar' / abar) n; on a flow, z' = a z + sqrt(sigma'^2 - a^2 sigma^2) n
        with a = (1 - sigma') / (1 - sigma), which leaves z' = (1 - sigma') x0 + sigma' n."""
        if self.flow:
            (alpha, sigma), (alpha_up, sigma_up) = self.level(level), self.level(level - 1)
            ratio = alpha_up / alpha
            return ratio * latents + math.sqrt(max(sigma_up**2 - (ratio * sigma) ** 2, 0.0)) * noise
        ratio = self._alpha_bars[level - 1] / self._alpha_bars[level]
        return math.sqrt(ratio) * latents + math.sqrt(1 - ratio) * noise

    def noised_to_timestep(self, clean: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
        """`clean` at a training timestep's level, whichever steps run (tdpaint's known region)."""
        if self.flow:  # a flow model's timestep is its sigma times the training steps
            sigma = timestep / self._scheduler.config.num_train_timesteps
            return sigma * noise + (1.0 - sigma) * clean
        alpha_bar = self._scheduler.alphas_cumprod[timestep].to(clean.device, clean.dtype)
        return alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise

    def level(self, i: int) -> tuple[float, float]:
        """(alpha, sigma) of level i: the loop's latents when step i starts are alpha x0 + sigma n (level `steps`
        is (1, 0), the clean signal). Variance-preserving: (sqrt(abar), sqrt(1 - abar)); sigma-scaled (Euler, LMS):
        (1, sigma); flow: (1 - sigma, sigma)."""
        if self.flow:
            sigma = float(self._sigmas[i])
            return 1.0 - sigma, sigma
        if self._alpha_bars is not None:
            alpha_bar = self._alpha_bars[i]
            return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        if self._sigmas is not None:
            return 1.0, float(self._sigmas[i])
        raise ValueError(f"{type(self._scheduler).__name__} does not say the noise level of its steps.")

    def predicted_clean(self, latents: torch.Tensor, prediction: torch.Tensor, i: int) -> torch.Tensor:
        """The denoiser's estimate of x0 from the latents at the start of step i and its (guided) prediction: a
        noise (epsilon), a velocity (v), the sample itself, or a flow's velocity n - x0."""
        alpha, sigma = self.level(i)
        if self.flow:
            return latents - sigma * prediction
        kind = self._scheduler.config.get("prediction_type", "epsilon")
        if not self.variance_preserving:  # sigma-scaled latents: the denoiser saw latents / sqrt(sigma^2 + 1)
            if kind == "v_prediction":
                return prediction * (-sigma / (sigma**2 + 1) ** 0.5) + latents / (sigma**2 + 1)
            return latents - sigma * prediction if kind == "epsilon" else prediction
        if kind == "v_prediction":
            return alpha * latents - sigma * prediction
        return (latents - sigma * prediction) / alpha if kind == "epsilon" else prediction

    def _read_sigmas(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        """The sigma of each level 0..steps, for sigma and flow schedulers (their `sigmas` run one past the last
        timestep, to the final level); the steps that run are the schedule's last ones (strength skips the first)."""
        sigmas = getattr(self._scheduler, "sigmas", None)
        if sigmas is None or self.variance_preserving:
            return None
        start = len(self._scheduler.timesteps) - len(timesteps)
        return torch.as_tensor(sigmas, dtype=torch.float32).flatten()[start : start + len(timesteps) + 1].cpu()

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
