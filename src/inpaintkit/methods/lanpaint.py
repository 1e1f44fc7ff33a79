"""lanpaint: LanPaint (Zheng, Lan & Wang, "LanPaint: Training-Free Diffusion Inpainting with Asymptotically Exact and
Fast Conditional Sampling", TMLR 2025, arXiv 2502.03491; reference code scraed/LanPaint, src/LanPaint/lanpaint.py and
nodes.py, v2.1.0). Training-free; made for ODE and flow samplers, and it runs on variance-preserving ones too.

Before step i, a few Langevin iterations let the latents "think": the generated region follows the model's score, and
the known region is pulled by a "bidirectional guided" score that makes the model's prediction agree with the input.
Then the loop's ordinary step runs on the moved latents and blend's paste puts the known region back (after_step).

The update, in the reference's variance-preserving coordinates. The loop's latents at level i are alpha x0 + sigma n
(NoiseSchedule.level), so with r = sqrt(alpha^2 + sigma^2) the VP latent is x = latents / r, abar = alpha^2 / r^2
(for a flow model, abar = (1 - s)^2 / ((1 - s)^2 + s^2), as the reference converts Flux and SD 3). m = 1 where the
hole is generated, 0 where the input is kept; y = z0, the input's clean latents; lambda, beta, tau the options.

    x <- m x + (1 - m) q(y, i, noise)                          # the replace step: the known region at level i
    x0(x)   = the model's guided estimate of the clean latents at step i, at latents r x (one model call)
    target  = m x0(x) + (1 - m) ((1 + lambda) y - lambda x0(x))  # x + the bidirectional guided score:
                                                                 #   hole: -(x - x0); known: -(1+l)(x - y) + l(x - x0)
    A       = (m + (1 + lambda)(1 - m)) / (1 - abar)           # stiffness of each cell's harmonic part
    dt      = h (m + beta (1 - m)),   h = tau max(1 - abar, MinStepFrac) = tau   (MinStepFrac = 1, see below)
    C(x)    = (sqrt(abar) target - x) / (1 - abar) + A x       # so -A x + C(x) is the VP score at x
    advance(x, d, C) = exp(-A d) x + (1 - exp(-A d)) / A C + sqrt(2 (1 - exp(-2 A d)) / (2 A)) n
                       # dx = (-A x + C) dt + sqrt(2) dW integrated exactly with C held (overdamped Langevin)
    iteration 1:  C = C(x);  x = advance(x, dt, C)
    iteration k:  x = advance(x, dt/2, C);  C' = C(x);  x = x + (C' - C) dt;  x = advance(x, dt/2, C);  C = C'
    latents <- r x

The iterations at step i are round(N (1 - abar_i)) (Python's round), and none at the last step: the reference's
v2.1.0 pins the step size at tau (LanPaint_MinStepFrac = 1) and ramps the count down with the remaining noise
instead, and its LanPaint_EarlyStop = 1 skips the last step. Both are fixed constants in the reference's nodes, as
here. (Before v2.1.0 the reference, and METHODS.md after it, had h = tau (1 - abar) with N iterations at every step,
and an underdamped integrator with friction first; we follow the code as it stands, the authors' latest word. Only
the paper's abstract and introduction could be read here: its equations were not checked against the code.)
Cost: 1 + round(N (1 - abar_i)) model calls at step i, at most 1 + N; one call is one guided evaluation (the
CFG pair is one batched call). `denoiser_calls` declares the bound steps (1 + N), which needs no scheduler.

Where this departs from the reference, and why:
  - "Image First" only (the reference's default prompt mode): the known region's term uses the run's own guided
    prediction (the reference's x0_BIG, which "Prompt First" makes with CFG scale -0.5 instead). Prompt First would
    need the guidance's halves apart; it is not offered.
  - The reference's second-order (damped, friction 15) integrator is commented out in v2.1.0 and "Friction" is a
    dead parameter there; only the overdamped scheme above runs, here as there. Its optional semantic early stop is
    off by default there (threshold 0) and left out here.
  - A step that runs no iterations is exactly blend's step: the replace is skipped. After blend's paste (every step
    but the first) it changes nothing; at the first step of a strength-1 job the reference would show the model the
    input noised to level 0 instead of pure noise. So `--lanpaint-steps 0` is blend, pixel for pixel.
  - The ordinary step takes the model's prediction of the whole latents and blend pastes the known region at the
    next level afterwards; the reference instead returns y as the denoised estimate in the known region. For
    samplers whose update is per cell (all of diffusers') only the known region differs, and the paste overwrites it.
  - The noise of each iteration comes from the job's generators (reproducible per seed), not torch's global RNG.
  - Binary masks only, as the reference (which thresholds its mask at 0.5): like every binary method here, a grey
    mask is binarised at 0.5 before the loop, and --mask-blur only feathers the paste-back.
The arithmetic runs in float32 at least, as the reference's autocast does, and in the latents' dtype if wider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .blend import Blend

if TYPE_CHECKING:
    from ..engine import LoopState
    from ..settings import InpaintSettings

# The reference's LanPaint_MinStepFrac (v2.1.0, fixed in every node): with 1 the step size stays tau and the count
# of iterations falls with the noise; 0 would give the paper's schedule (tau (1 - abar), N iterations every step).
MIN_STEP_FRAC = 1.0
# The reference's LanPaint_EarlyStop (fixed in every node): the last steps that run no Langevin iterations.
EARLY_STOP = 1


def iterations(langevin_steps: int, abar: float, steps_left: int) -> int:
    """Langevin iterations before a step at noise level abar with `steps_left` steps to go, this one included (the
    reference's KSamplerX0Inpaint.__call__ and min_step_frac_effective_steps)."""
    if steps_left <= EARLY_STOP:
        return 0
    remaining = 1.0 - abar  # the fraction of noise left
    if MIN_STEP_FRAC <= 0 or remaining >= MIN_STEP_FRAC or langevin_steps <= 0:
        return langevin_steps
    return max(0, round(langevin_steps * remaining / MIN_STEP_FRAC))


def variance_preserving(alpha: float, sigma: float) -> tuple[float, float]:
    """(r, abar) for latents alpha x0 + sigma n: latents / r = sqrt(abar) x0 + sqrt(1 - abar) n."""
    r = math.hypot(alpha, sigma)
    return r, (alpha / r) ** 2


@dataclass(frozen=True)
class Transition:
    """The exact transition of dx = (-A x + C) dt + sqrt(2) dW over a time d, C held, per cell (the reference's
    advance_time_overdamped; A >= 1 here, so its A -> 0 branch is not needed)."""

    decay: torch.Tensor  # exp(-A d)
    gain: torch.Tensor  # (1 - exp(-A d)) / A
    spread: torch.Tensor  # sqrt(D^2 (1 - exp(-2 A d)) / (2 A)), D^2 = 2

    @classmethod
    def over(cls, stiffness: torch.Tensor, duration: torch.Tensor) -> Transition:
        decay = torch.exp(-stiffness * duration)
        gain = -torch.expm1(-stiffness * duration) / stiffness
        spread = torch.sqrt(-torch.expm1(-2 * stiffness * duration) / stiffness)
        return cls(decay, gain, spread)

    def advance(self, x: torch.Tensor, constant: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.decay * x + self.gain * constant + self.spread * noise


class LanPaint(Blend):
    name = "lanpaint"
    paper = "Zheng, Lan & Wang, LanPaint, TMLR 2025 (arXiv 2502.03491)"
    needs_known_latents = True

    def denoiser_calls(self, settings: InpaintSettings) -> int:
        """The bound steps (1 + N): the iterations fall with the noise and the last step runs none (see the module),
        but how fast depends on the schedule, which is not built yet."""
        return self.steps_run(settings) * (1 + self.option(settings, "lanpaint_steps"))

    def work_options_hint(self) -> str:
        return " or --lanpaint-steps"

    def iterations_at(self, state: LoopState, i: int) -> int:
        _, abar = variance_preserving(*state.schedule.level(i))
        return iterations(self.option(state.settings, "lanpaint_steps"), abar, state.schedule.steps - i)

    def before_step(self, state: LoopState, i: int, latents: torch.Tensor) -> torch.Tensor:
        count = self.iterations_at(state, i)
        if count == 0:
            return latents  # blend's step (see the module: the replace would change nothing after its paste)
        known = state.schedule.noised(state.known_latents, state.noise, i)
        latents = state.mask * latents + (1 - state.mask) * known  # the replace step
        return self.langevin(state, i, latents, count)

    def clean_estimate(self, state: LoopState, i: int, latents: torch.Tensor) -> torch.Tensor:
        """x0 from one guided call of the network at step i, as the loop makes it."""
        denoiser = state.denoiser
        model_input = denoiser.batched(self.unet_input(state, i, denoiser.scaled(latents, i)))
        prediction = denoiser.guidance.combine(self.predict(state, i, model_input))
        return state.schedule.predicted_clean(latents, prediction, i)

    def langevin(self, state: LoopState, i: int, latents: torch.Tensor, count: int) -> torch.Tensor:
        """`count` Langevin iterations at step i (the module's update), from and to the loop's latents."""
        settings = state.settings
        lam = self.option(settings, "lanpaint_lambda")
        beta = self.option(settings, "lanpaint_beta")
        tau = self.option(settings, "lanpaint_step_size")
        r, abar = variance_preserving(*state.schedule.level(i))
        work = torch.promote_types(latents.dtype, torch.float32)
        generate = state.mask.to(work)
        keep = 1 - generate
        clean = state.known_latents.to(work)
        stiffness = (generate + (1 + lam) * keep) / (1 - abar)
        dt = tau * max(1 - abar, MIN_STEP_FRAC) * (generate + beta * keep)
        full, half = Transition.over(stiffness, dt), Transition.over(stiffness, dt / 2)

        def constant(x: torch.Tensor) -> torch.Tensor:  # the reference's Coef_C: one model call
            estimate = self.clean_estimate(state, i, (x * r).to(latents.dtype)).to(work)
            target = generate * estimate + keep * ((1 + lam) * clean - lam * estimate)
            return (math.sqrt(abar) * target - x) / (1 - abar) + stiffness * x

        def noise() -> torch.Tensor:
            return state.fresh_noise().to(work)

        x = latents.to(work) / r
        held = constant(x)
        x = full.advance(x, held, noise())
        for _ in range(count - 1):
            x = half.advance(x, held, noise())
            fresh = constant(x)
            x = x + (fresh - held) * dt
            x = half.advance(x, held, noise())
            held = fresh
        return (x * r).to(latents.dtype)
