"""repaint: RePaint resampling (Lugmayr et al., CVPR 2022; arXiv 2201.09865).

Harmonises the hole with its border by going back up in noise and redoing steps: after each
block of `jump_length` steps down, go `jump_length` steps back up, `jump_n_sample - 1` times
(the authors' get_schedule_jump), one scheduler stride at a time:
    z_t' = sqrt(abar_t' / abar_t) * z_t + sqrt(1 - abar_t' / abar_t) * n,   t' > t.
Each step down blends in the known region at the target level, as blend does, with fresh noise.
The UNet runs len(jump_schedule(...)) times: N + (r - 1) * J * len(range(0, N - J, J)).
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .base import Method

STATELESS_SCHEDULERS = ("DDIMScheduler", "DDPMScheduler")  # step() depends on t alone, so a step can be redone


def jump_schedule_length(count: int, jump_length: int, jump_n_sample: int) -> int:
    """len(jump_schedule(...)) without building it: each of the blocks that jump adds (r - 1) * J steps."""
    return count + (jump_n_sample - 1) * jump_length * len(range(0, count - jump_length, jump_length))


def jump_schedule(count: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """The step indices to run (0 = noisiest), revisits included."""
    jumps = {t: jump_n_sample - 1 for t in range(0, count - jump_length, jump_length)}
    order, t = [], count  # t counts the steps still to go, as in the authors' code
    while t >= 1:
        t -= 1
        order.append(count - 1 - t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            t += jump_length
    return order


class RePaint(Method):
    name = "repaint"
    paper = "Lugmayr et al., RePaint, CVPR 2022 (arXiv 2201.09865)"
    needs_known_latents = True

    def check_options(self, settings) -> None:
        jump_length, steps_run = self.option(settings, "jump_length"), self.steps_run(settings)
        if jump_length > steps_run:
            raise InputError(
                f"--jump-length {jump_length} is larger than the {steps_run} steps that run; lower it or raise --steps."
            )

    def default(self, settings, name: str):
        # A jump cannot be longer than the steps that run: with --steps 4 the default 10 becomes 4.
        if name == "jump_length":
            return min(self.defaults["jump_length"], self.steps_run(settings))
        return super().default(settings, name)

    def adaptation_reason(self, settings, name: str) -> str:
        return f"only {self.steps_run(settings)} steps run"

    def work_options_hint(self) -> str:
        return ", --jump-n-sample or --jump-length"

    def denoiser_calls(self, settings) -> int:
        jump_length, jump_n_sample = self.option(settings, "jump_length"), self.option(settings, "jump_n_sample")
        return jump_schedule_length(self.steps_run(settings), jump_length, jump_n_sample)

    scheduler_reason = "repaint redoes steps, which needs a scheduler whose step depends on t alone"

    def scheduler_name(self, requested: str, model_scheduler: str) -> str:
        if model_scheduler.startswith("FlowMatch"):  # a flow model: its Euler is redone by timestep (schedulers.py)
            if requested not in ("default", "euler"):
                raise InputError(
                    f"repaint redoes steps, which on a flow-matching model needs its Euler scheduler: use --scheduler "
                    f"euler or default, not {requested}."
                )
            return requested
        if requested == "default":
            return requested if model_scheduler in STATELESS_SCHEDULERS else "ddim"
        if requested != "ddim":
            raise InputError(
                f"repaint redoes steps, which needs a DDIM/DDPM-style scheduler: use --scheduler ddim, not {requested}."
            )
        return requested

    def step_order(self, state) -> list[int]:
        settings = state.settings
        return jump_schedule(
            state.schedule.steps, self.option(settings, "jump_length"), self.option(settings, "jump_n_sample")
        )

    def before_step(self, state, i: int, latents: torch.Tensor) -> torch.Tensor:
        position = state.extra.get("position", 0)  # the steps down so far
        for level in range(position, i, -1):  # back up, one stride at a time
            latents = state.schedule.back_up(latents, level, state.fresh_noise())
        return latents

    def after_step(self, state, i: int, latents: torch.Tensor) -> torch.Tensor:
        state.extra["position"] = i + 1
        known = state.schedule.noised_after(state.known_latents, state.fresh_noise(), i)
        return (1 - state.mask) * known + state.mask * latents
