"""What a method is: a few hooks the engine's loop calls, and the options it owns.

The loop (engine.denoise) runs, inside `patched(state)`, for each step index the method's `step_order` yields:
    latents = before_step(i, latents)
    prediction = predict(i, unet_input(i, scale_model_input(latents)))   # guidance around it
    latents = after_step(i, scheduler.step(prediction, t_i, latents))
then `decode(latents)`; `finish` then works on the decoded pixels. Every hook defaults to
doing nothing (`predict`: one call of the denoiser), so a method overrides only what it changes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ContextManager, Iterable

import numpy as np
import torch

from ..errors import InputError
from ..families import FAMILIES
from ..method_options import OPTIONS, OPTIONS_BY_NAME
from ..models import Capabilities
from ..names import METHOD_SUMMARIES
from ..schedulers import SECOND_ORDER_SCHEDULERS

if TYPE_CHECKING:  # the loop imports the methods; the methods only name its state
    from ..engine import LoopState
    from ..models import Components
    from ..settings import InpaintSettings

# Every method option and the method it belongs to (declared in method_options.py).
METHOD_OPTIONS = {option.name: option.method for option in OPTIONS}


# The most denoiser (UNet) evaluations one image of a job may take: RePaint's revisits multiply the steps, and a
# job's work must be bounded before it starts (issue 13). 10,000 is 1,000 steps with RePaint's defaults, about
# 25 times the default repaint job; a service sets its own, lower budget per request (serve --max-steps).
MAX_DENOISER_CALLS = 10_000


def flag(option: str) -> str:
    return "--" + option.replace("_", "-")


class Method:
    name: str = ""
    summary: str = ""  # one line for --help and the UI (names.METHOD_SUMMARIES)
    paper: str = ""
    requires_inpainting_unet: bool = False
    needs_known_latents: bool = False  # the loop must encode the input image (z0) even at strength 1
    needs_masked_latents: bool = False  # the loop must encode the masked image (hole zeroed) for any UNet
    soft_mask: bool = False  # reads the grayscale mask as per-pixel strength instead of binarising it
    defaults: dict[str, Any] = {}  # this method's options and their defaults, from method_options.OPTIONS

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.summary = METHOD_SUMMARIES[cls.name]  # kept in names.py, so --help needs no torch
        cls.defaults = {option.name: option.default for option in OPTIONS if option.method == cls.name}

    # -- checks, before any work -------------------------------------------------------------
    def check(self, capabilities: Capabilities, settings: InpaintSettings) -> None:
        """Refuse a checkpoint or settings this method cannot use (or whose work is unbounded), in one sentence."""
        # Strength x steps is rounded as the family's pipeline rounds it: SD may keep no step where FLUX keeps one.
        rounding = FAMILIES[capabilities.family].strength_rounding
        if settings.steps - Method.skipped_steps(self, settings, rounding) < 1:
            raise InputError(
                f"Strength {settings.strength} with {settings.steps} steps leaves no denoising step; raise the "
                "strength or the steps."
            )
        if self.requires_inpainting_unet and not capabilities.inpainting_unet:
            raise InputError(
                f"Method '{self.name}' needs a dedicated inpainting checkpoint (SD's 9-channel UNet, SD 3's 33-channel "
                f"or FLUX.1 Fill's transformer) but this {capabilities.family} model's denoiser has "
                f"{capabilities.unet_in_channels} input channels; use --method blend or an inpainting model."
            )
        for option, owner in METHOD_OPTIONS.items():
            if owner != self.name and getattr(settings, option) is not None:
                raise InputError(f"{flag(option)} applies only to --method {owner}, not {self.name}.")
        for option in self.defaults:  # each value in its declared range (a default always is)
            problem = OPTIONS_BY_NAME[option].problem(self.option(settings, option))
            if problem:
                raise InputError(problem)
        self.check_options(settings)
        calls = self.total_denoiser_calls(settings)
        if calls > MAX_DENOISER_CALLS:
            raise InputError(
                f"This job would run the denoiser {calls:,} times per image, more than the limit of "
                f"{MAX_DENOISER_CALLS:,}; lower --steps{self.work_options_hint()}."
            )

    def check_components(self, components: Components, settings: InpaintSettings) -> None:
        """Refuse, in one sentence, what the loaded model and its speed options cannot do for this method."""

    def metadata(self, components: Components, settings: InpaintSettings) -> dict[str, Any]:
        """What a job's outputs record about this method beyond its options (e.g. which variant ran)."""
        return {}

    def check_options(self, settings: InpaintSettings) -> None:
        """Check what the declared ranges cannot: an option against the other settings (see `option`)."""

    def work_options_hint(self) -> str:
        """The options besides --steps that multiply this method's work, for the message above."""
        return ""

    def option(self, settings: InpaintSettings, name: str):
        """The option's value: the user's, or this method's default as it fits these settings."""
        value = getattr(settings, name)
        return self.default(settings, name) if value is None else value

    def default(self, settings: InpaintSettings, name: str):
        """This method's default for an option, adapted to the other settings where the plain default cannot work
        with them: a default must never contradict a setting the user gave (see `adapted_defaults`)."""
        return self.defaults[name]

    def adapted_defaults(self, settings: InpaintSettings, model_scheduler: str) -> dict[str, str]:
        """The settings left at their default that this method adapted to the others, each with the reason (for the
        output's metadata and a log line): its own options, and the scheduler it substitutes for the model's."""
        adapted = {}
        for name, plain in self.defaults.items():
            if getattr(settings, name) is None and self.default(settings, name) != plain:
                adapted[name] = f"{plain} -> {self.default(settings, name)}: {self.adaptation_reason(settings, name)}"
        used = self.scheduler_name(settings.scheduler, model_scheduler)
        if used != settings.scheduler:
            adapted["scheduler"] = f"the model's {model_scheduler} -> {used}: {self.scheduler_reason}"
        return adapted

    def adaptation_reason(self, settings: InpaintSettings, name: str) -> str:
        return "adapted to the other settings"

    scheduler_reason = ""  # why scheduler_name substitutes a scheduler for the model's default, if it does

    def denoiser_calls(self, settings: InpaintSettings) -> int:
        """Denoiser (UNet) evaluations per image: the steps that run, a method's revisits included. Computed
        without building the step order, so an absurd setting costs nothing to refuse."""
        return self.steps_run(settings)

    def total_denoiser_calls(self, settings: InpaintSettings) -> int:
        """`denoiser_calls` with the scheduler's order: a second-order scheduler (heun) calls the denoiser twice for
        every step but the last."""
        calls = self.denoiser_calls(settings)
        return 2 * calls if settings.scheduler in SECOND_ORDER_SCHEDULERS else calls

    def scheduler_name(self, requested: str, model_scheduler: str) -> str:
        """The scheduler to build; a method that needs a particular kind may substitute or refuse."""
        return requested

    def check_scheduler(self, scheduler) -> None:
        """Refuse a built scheduler this method cannot work with."""

    def skipped_steps(self, settings: InpaintSettings, rounding: str = "kept") -> int:
        """How many of the noisiest steps not to run (strength < 1 skips some). `rounding` is the family's pipeline's
        (Family.strength_rounding): SD's get_timesteps floors the steps kept, Flux's and SD 3's the steps skipped."""
        if rounding == "skipped":
            return int(max(settings.steps - min(settings.steps * settings.strength, settings.steps), 0))
        return settings.steps - min(int(settings.steps * settings.strength), settings.steps)

    def steps_run(self, settings: InpaintSettings) -> int:
        return settings.steps - self.skipped_steps(settings)

    # -- the loop -----------------------------------------------------------------------------
    def step_order(self, state: LoopState) -> Iterable[int]:
        """The step indices to run, in order; a method may revisit steps (RePaint)."""
        return range(state.schedule.steps)

    def start(self, state: LoopState, latents: torch.Tensor) -> torch.Tensor:
        """The latents the loop starts from (default: noise, or the noised input when strength < 1)."""
        return latents

    def patched(self, state: LoopState) -> ContextManager[None]:
        """A context around the whole loop in which the method may patch the denoiser (forward hooks, attention
        processors) for this job. It must undo every patch on leaving, by success, error or cancellation alike:
        the web UI and the service share one model across jobs and methods."""
        return contextlib.nullcontext()

    def before_step(self, state: LoopState, i: int, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def unet_input(self, state: LoopState, i: int, latents: torch.Tensor) -> torch.Tensor:
        """What the UNet sees of the (scaled) latents at step i."""
        return latents

    def predict(self, state: LoopState, i: int, model_input: torch.Tensor) -> torch.Tensor:
        """The denoiser's raw prediction for the batched input at step i (guidance combines it after)."""
        return state.denoiser(model_input, i)

    def after_step(self, state: LoopState, i: int, latents: torch.Tensor) -> torch.Tensor:
        """Called after scheduler step i with the new latents; returns the latents the loop continues with."""
        return latents

    def decode(self, state: LoopState, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images in [-1, 1]."""
        return state.components.family.decode(state.components, latents)

    # -- pixels, after decoding ---------------------------------------------------------------
    def finish(
        self, settings: InpaintSettings, generated: np.ndarray, original: np.ndarray, repaint: np.ndarray
    ) -> np.ndarray:
        """Pixel-space work on one decoded HxWx3 uint8 image, before colour match and paste-back."""
        return generated
