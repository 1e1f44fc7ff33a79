"""The one denoising loop. Methods decide how latents are blended each step (see methods/).

The arithmetic and the order in which random numbers are drawn follow diffusers'
StableDiffusionInpaintPipeline, so the same components, seed and settings give the same pixels.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from .acceleration import set_vae_tiling
from .denoiser import Denoiser
from .errors import Cancelled
from .families import Conditioning
from .models import Components
from .noise import NoiseSchedule
from .schedulers import make_scheduler
from .settings import InpaintSettings
from .stopping import FINISH_NOW, StepCallback, StopCheck, Stopper


@dataclass
class LoopState:
    """What a method may read while the loop runs; latent tensors are batched over the job's images."""

    components: Components
    settings: InpaintSettings
    schedule: NoiseSchedule  # the noise level of each step: methods ask it, never the scheduler
    generators: list[torch.Generator]
    known_latents: Optional[torch.Tensor]  # z0: the input image's latents (posterior samples), or None
    masked_latents: Optional[torch.Tensor]  # the masked image's (hole zeroed) latents, for 9-channel UNets and
    # methods that ask (needs_masked_latents), or None
    noise: torch.Tensor  # the job's initial noise, reused to noise the known region
    mask: torch.Tensor  # latent-resolution binary mask, 1 = generate, 0 = keep
    change: Optional[torch.Tensor]  # latent-resolution per-pixel strength in [0, 1] (soft masks), or None
    image: torch.Tensor  # the input in pixel space, 1x3xHxW in [-1, 1]
    pixel_mask: torch.Tensor  # the binary mask in pixel space, 1x1xHxW
    stopper: Stopper = field(default_factory=Stopper)  # a long method stage (bld's optimisation) checks it
    denoiser: Optional[Denoiser] = None  # one guided call at a step, for methods that call the network themselves
    extra: dict = field(default_factory=dict)  # a method's own values between steps

    def fresh_noise(self) -> torch.Tensor:
        """New noise shaped like the latents, from the job's generators (one per image)."""
        generator = self.generators if len(self.generators) > 1 else self.generators[0]
        return randn_tensor(self.noise.shape, generator=generator, device=self.noise.device, dtype=self.noise.dtype)


def generators_for(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: image k of a job is reproducible from its own seed."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


def denoise(
    components: Components,
    method,
    pixels: np.ndarray,
    mask: np.ndarray,
    settings: InpaintSettings,
    callback: Optional[StepCallback] = None,
    change_map: Optional[np.ndarray] = None,
    should_stop: Optional[StopCheck] = None,
) -> np.ndarray:
    """Inpaint HxWx3 uint8 `pixels` where the binary HxW `mask` is 1; H and W are multiples of the VAE factor.

    `change_map` (HxW in [0, 1]) is the per-pixel strength for methods with soft masks. `should_stop` is
    polled before every text-encoder and VAE call (each tile, when tiled) and between steps; True raises Cancelled.
    Returns NxHxWx3 uint8, one image per seed in `settings.seeds()`.
    """
    device, family = components.device, components.family
    generators = generators_for(settings.seeds())
    guidance = family.guidance(settings, components.capabilities)

    stopper = Stopper(should_stop)
    # A tiled VAE calls its encoder and decoder once per tile: the finest place a long encode or decode can stop.
    text_modules = components.text_modules()
    watched = {
        f"while encoding the prompt ({name})" if len(text_modules) > 1 else "while encoding the prompt": module
        for name, module in text_modules.items()
    }
    watched.update({"while encoding the image": components.vae.encoder, "while decoding": components.vae.decoder})
    with torch.inference_mode(), stopper.around_calls(watched):
        # 1. Scheduler and timesteps: strength < 1 (or the method) skips the noisiest ones.
        scheduler = build_scheduler(method, settings, components)
        latent_size = latent_size_of(components, pixels.shape[:2])
        skipped = method.skipped_steps(settings, family.strength_rounding)
        timesteps = schedule(components, scheduler, settings.steps, skipped, latent_size)
        # Read once, here: given Python numbers, the schedulers' step() compares and indexes on the host,
        # where a device tensor would make every step wait for the GPU (`if prev_timestep >= 0`).
        timestep_values = timesteps.tolist()
        noise_schedule = NoiseSchedule(scheduler, timesteps, timestep_values)

        # 2. Text embeddings (with classifier-free guidance the unconditional half first, one batched UNet call).
        conditioning = Conditioning.cat(
            [
                family.encode_text(components, text, unconditional, settings.num_images, pixels.shape[:2])
                for text, unconditional in guidance.prompts(settings.prompt, settings.negative_prompt)
            ]
        )
        conditioning.extras.update(guidance.extras(len(conditioning.context), device, components.dtype))

        # 3. Image, mask and masked image as tensors, in pixel space.
        # NCHW over NHWC memory, as diffusers' image processor makes it: the VAE then takes the same (channels-last)
        # convolution path, which in bf16 rounds differently from a contiguous NCHW input (fp32 agrees either way).
        # torch.tensor copies: the input may be a read-only array.
        image = torch.tensor(pixels[None]).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
        pixel_mask = torch.tensor(mask)[None, None].float()
        masked_image = image * (pixel_mask < 0.5)

        # 4. Latents, drawing random numbers per image in diffusers' order: z0, noise, masked-image latents.
        set_vae_tiling(components.vae, components.acceleration.tiles(*pixels.shape[:2]))
        state, latents, condition = prepare_latents(
            components,
            method,
            settings,
            noise_schedule,
            generators,
            image,
            pixel_mask,
            masked_image,
            change_map,
        )
        state.stopper = stopper
        denoiser = Denoiser(
            components, scheduler, timesteps, timestep_values, guidance, conditioning,
            None if condition is None else guidance.batch(condition),
        )  # fmt: skip
        state.denoiser = denoiser  # before start: a method may call the network there
        latents = method.start(state, latents)
        step_kwargs = scheduler_step_kwargs(scheduler, generators)

        # 5. The loop, with whatever the method patches into the denoiser for this job (always restored).
        order = list(method.step_order(state))
        with method.patched(state):
            for count, i in enumerate(order):
                latents = method.before_step(state, i, latents)
                model_input = denoiser.batched(method.unet_input(state, i, denoiser.scaled(latents, i)))
                prediction = guidance.combine(method.predict(state, i, model_input))
                latents = scheduler.step(prediction, timestep_values[i], latents, **step_kwargs, return_dict=False)[0]
                latents = method.after_step(state, i, latents)
                verdict = None if callback is None else callback(count, len(order), latents)
                if verdict is False:
                    raise Cancelled(f"Stopped after step {count + 1} of {len(order)}.")
                if verdict == FINISH_NOW:
                    break  # decode what there is
                stopper.check(f"after step {count + 1} of {len(order)}")

        # 6. Decode.
        decoded = method.decode(state, latents)
    decoded = (decoded * 0.5 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()
    return (decoded * 255).round().astype(np.uint8)


def build_scheduler(method, settings: InpaintSettings, components: Components):
    """A fresh scheduler of the requested kind, as the method accepts or substitutes it."""
    model_config = components.scheduler_config
    name = method.scheduler_name(settings.scheduler, model_config["_class_name"])
    scheduler = make_scheduler(name, model_config, settings.spacing, flow=components.family.flow_matching)
    method.check_scheduler(scheduler)
    return scheduler


def latent_size_of(components: Components, size: tuple[int, int]) -> tuple[int, int]:
    """The latents' (height, width) for an image of `size` pixels."""
    factor = components.capabilities.vae_scale_factor
    return size[0] // factor, size[1] // factor


def schedule(components: Components, scheduler, steps: int, skipped: int, latent_size: tuple[int, int]) -> torch.Tensor:
    """The timesteps to run: all but the `skipped` noisiest (as diffusers' img2img/inpaint get_timesteps)."""
    components.family.set_timesteps(scheduler, steps, components.device, latent_size)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(skipped * scheduler.order)
    return scheduler.timesteps[skipped * scheduler.order :]


def prepare_latents(
    components,
    method,
    settings,
    noise_schedule,
    generators,
    image,
    pixel_mask,
    masked_image,
    change_map,
):
    """Initial latents, the state methods read, and the 9-channel UNet's extra input (or None)."""
    vae, device, dtype, family = components.vae, components.device, components.dtype, components.family
    capabilities = components.capabilities
    height, width = latent_size_of(components, image.shape[-2:])
    shape = (1, vae.config.latent_channels, height, width)
    needs_known = method.needs_known_latents or settings.strength < 1.0 or family.always_encodes_image
    needs_masked = capabilities.inpainting_unet or method.needs_masked_latents

    image_posterior = family.encode_image(components, image) if needs_known else None
    masked_posterior = family.encode_image(components, masked_image) if needs_masked else None
    known, noise, masked_latents = [], [], []
    for generator in generators:
        if needs_known:
            known.append(family.scale_latents(components, image_posterior.sample(generator)))
        noise.append(randn_tensor(shape, generator=generator, device=device, dtype=dtype))
        if masked_posterior is not None:
            masked_latents.append(family.scale_latents(components, masked_posterior.sample(generator)))
        else:
            # diffusers samples the masked image's latents even for a 4-channel UNet and discards them;
            # drawing the same numbers keeps seeds aligned with it for ancestral schedulers (a posterior sample
            # draws exactly these, so a method that keeps the masked latents stays aligned too).
            randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    known_latents = torch.cat(known) if needs_known else None
    masked_latents = torch.cat(masked_latents) if masked_latents else None
    noise = torch.cat(noise)

    if settings.strength >= 1.0:
        latents = noise_schedule.initial(noise)
    else:
        latents = noise_schedule.noised(known_latents, noise, 0)

    # nearest-neighbour downsampling, as diffusers (and the inpainting checkpoints' training) does
    latent_mask = F.interpolate(pixel_mask, size=(height, width)).to(device, dtype).repeat(len(generators), 1, 1, 1)
    condition = None
    if capabilities.inpainting_unet:  # the model's own extra channels, in its order
        pixel_masks = pixel_mask.to(device, dtype).repeat(len(generators), 1, 1, 1)
        condition = family.inpainting_condition(pixel_masks, latent_mask, masked_latents)
    change = None
    if change_map is not None:  # a per-pixel strength averages over each latent cell
        change = F.interpolate(torch.tensor(change_map)[None, None].float(), size=(height, width), mode="area")
        change = change.to(device, dtype).repeat(len(generators), 1, 1, 1)
    state = LoopState(
        components=components,
        settings=settings,
        schedule=noise_schedule,
        generators=generators,
        known_latents=known_latents,
        masked_latents=masked_latents,
        noise=noise,
        mask=latent_mask,
        change=change,
        image=image,
        pixel_mask=pixel_mask,
    )
    return state, latents, condition


def scheduler_step_kwargs(scheduler, generators: list[torch.Generator]) -> dict:
    """eta = 0 and the job's generators, for the schedulers whose step() takes them."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generators if len(generators) > 1 else generators[0]
    return kwargs
