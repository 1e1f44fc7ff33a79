"""Short scheduler names mapped to diffusers classes, built from the model's own scheduler config."""

from __future__ import annotations

from typing import Any

from .errors import InputError

# name -> (diffusers class name, config overrides)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    # PLMS only, as Stable Diffusion's own configs set it: without it a config that does not say (SDXL's Euler one)
    # gets PNDM's Runge-Kutta warm-up, which cannot run fewer than 4 steps and doubles the denoiser calls.
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    # Karras et al. 2022's sigma spacing (AUTOMATIC1111's "Karras" schedule type; its DPM++ 2M default).
    "euler-karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "dpm++2m-karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "lms-karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    # Few-step samplers: Latent Consistency Models (Luo et al., arXiv 2310.04378) and Trajectory Consistency
    # Distillation (Zheng et al., arXiv 2402.19159), for LCM/TCD-distilled UNets or their LoRAs.
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
}
# A flow-matching model (SD 3, Flux) takes these under the same short names: its own Euler, Heun (second order, two
# calls a step), and DPM++ 2M on flow sigmas (Lu et al.'s solver in the flow's parameterisation).
FLOW_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "heun": ("FlowMatchHeunDiscreteScheduler", {}),
    "dpm++2m": (
        "DPMSolverMultistepScheduler",
        {
            "algorithm_type": "dpmsolver++",
            "solver_order": 2,
            "use_flow_sigmas": True,
            "prediction_type": "flow_prediction",
        },
    ),
}
SCHEDULER_NAMES = ("default", *SCHEDULERS, "heun")
SECOND_ORDER_SCHEDULERS = ("heun",)  # two denoiser calls a step (every step but the last)
# How the steps' timesteps are spread: the model's config, or diffusers' spacings. "trailing" (Lin et al., arXiv
# 2305.08891) ends on the last training timestep, which SDXL-Lightning, Hyper-SD and SDXL-Turbo expect.
SPACINGS = ("default", "leading", "linspace", "trailing")
FIXED_SPACING = ("LCMScheduler", "TCDScheduler")  # their set_timesteps ignores timestep_spacing
# diffusers' schedulers whose latents carry sigma-scaled noise (init_noise_sigma > 1), by class name.
SIGMA_SCHEDULERS = (
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "LMSDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverSDEScheduler",
)


def check_scheduler_name(name: str) -> str:
    if name not in SCHEDULER_NAMES:
        raise InputError(f"Unknown scheduler '{name}'; choose one of: {', '.join(SCHEDULER_NAMES)}.")
    return name


def check_spacing(spacing: str) -> str:
    if spacing not in SPACINGS:
        raise InputError(f"Unknown timestep spacing '{spacing}'; choose one of: {', '.join(SPACINGS)}.")
    return spacing


def make_scheduler(name: str, model_config: dict[str, Any], spacing: str = "default", flow: bool = False):
    """A fresh scheduler (they hold per-job state). 'default' rebuilds the model's own class; `spacing` other than
    'default' replaces the config's timestep_spacing. `flow`: the model is a flow-matching one (FLOW_SCHEDULERS)."""
    import diffusers

    check_scheduler_name(name)
    if name == "default":
        class_name, overrides = model_config["_class_name"], {}
    elif flow:
        class_name, overrides = flow_scheduler(name, model_config)
    elif name not in SCHEDULERS:
        raise InputError(f"The {name} scheduler is for flow-matching models (SD 3, Flux); choose another.")
    else:
        class_name, overrides = SCHEDULERS[name]
    scheduler_class = revisitable_flow_euler() if class_name == "FlowMatchEulerDiscreteScheduler" else None
    scheduler_class = scheduler_class or getattr(diffusers, class_name, None)
    if scheduler_class is None:
        raise InputError(
            f"The model's scheduler class {class_name} is not in this diffusers version; pass --scheduler."
        )
    if check_spacing(spacing) != "default" and flow:
        raise InputError(
            f"--spacing {spacing} is for noise-prediction models; a flow-matching model spaces its sigmas itself."
        )
    if check_spacing(spacing) != "default":
        if class_name in FIXED_SPACING or (class_name == "DPMSolverMultistepScheduler" and overrides.get(
            "use_karras_sigmas"
        )):  # fmt: skip
            raise InputError(
                f"The {name} scheduler spaces its own timesteps (a distillation's schedule, or Karras sigmas); "
                f"--spacing {spacing} would be ignored: leave it at default."
            )
        overrides = {**overrides, "timestep_spacing": spacing}
    return scheduler_class.from_config(model_config, **overrides)


def flow_scheduler(name: str, model_config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The flow-matching scheduler a short name stands for, with the model's shift carried over to DPM++."""
    if name not in FLOW_SCHEDULERS:
        raise InputError(
            f"The {name} scheduler is for noise-prediction models; a flow-matching model (SD 3, Flux) takes "
            f"{', '.join(('default', *FLOW_SCHEDULERS))}."
        )
    class_name, overrides = FLOW_SCHEDULERS[name]
    if class_name == "DPMSolverMultistepScheduler":  # its flow_shift is the flow config's shift
        overrides = {**overrides, "flow_shift": model_config.get("shift", 1.0)}
    return class_name, overrides


def revisitable_flow_euler():
    """diffusers' flow-matching Euler with its step chosen by the timestep given, not by a count of the calls so far:
    the same arithmetic for a plain descent, and a method may redo steps (RePaint going back up along the flow). The
    lookup is in a host list read once, so a step makes the GPU wait no more than diffusers' does."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    class RevisitableFlowMatchEuler(FlowMatchEulerDiscreteScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
            super().set_timesteps(num_inference_steps, device, sigmas=sigmas, mu=mu, timesteps=timesteps)
            self._timestep_list = self.timesteps.tolist()

        def step(self, model_output, timestep, sample, *args, **kwargs):
            if isinstance(timestep, float) and timestep in self._timestep_list:
                self._step_index = self._timestep_list.index(timestep)
            return super().step(model_output, timestep, sample, *args, **kwargs)

    RevisitableFlowMatchEuler.__name__ = RevisitableFlowMatchEuler.__qualname__ = "FlowMatchEulerDiscreteScheduler"
    return RevisitableFlowMatchEuler
