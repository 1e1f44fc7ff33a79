"""Stopping a job inside its long stages, not only between denoising steps.

A service's deadline or a user's Stop must end a job within about one unit of work wherever it is:
a 4096x4096 image spends minutes in the tiled VAE encode before the first step (issue 13). The
job polls `should_stop()` at every stage boundary, before each VAE encoder/decoder call (a tiled
VAE makes one call per tile), in bld's decoder optimisation and between denoising steps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from .errors import Cancelled

StopCheck = Callable[[], bool]  # True: stop the job now (raises Cancelled at the next check)
# What a step callback may return, besides None/True (go on) and False (stop the job: Cancelled): end the denoising
# here and decode the latents as they are, the partly denoised image (AUTOMATIC1111's "interrupt").
FINISH_NOW = "finish now"
# callback(step_index, total_steps, latents) after every denoising step; returning False stops the job.
StepCallback = Callable[[int, int, torch.Tensor], Optional[object]]


@dataclass(frozen=True)
class JobHooks:
    """How a caller follows a job (`callback` after every step) and stops it (`should_stop`, at every stage)."""

    callback: Optional[StepCallback] = None
    should_stop: Optional[StopCheck] = None


class Stopper:
    """Polls the caller's `should_stop` and raises Cancelled naming where the job stopped."""

    def __init__(self, should_stop: Optional[StopCheck] = None):
        self.should_stop = should_stop

    def check(self, where: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"Stopped {where}.")

    @contextlib.contextmanager
    def around_calls(self, modules: dict[str, torch.nn.Module]) -> Iterator[None]:
        """Check before every forward call of each module (named by what it does); the hooks always go away."""
        if self.should_stop is None:
            yield
            return
        handles = [
            module.register_forward_pre_hook(lambda *_, where=where: self.check(where))
            for where, module in modules.items()
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
