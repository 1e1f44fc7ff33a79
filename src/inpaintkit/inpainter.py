"""The one API every front end uses: load a model once, inpaint many images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from . import __version__
from .acceleration import Acceleration, accelerate
from .color import RING_PIXELS, match_color
from .crop import Window, crop_map, crop_mask, paste_window, resize_to_work, window_around
from .engine import StepCallback, build_scheduler, denoise
from .errors import InputError, first_line
from .fill import fill_masked, fill_window
from .finish import paste_back
from .io import ImageLike, load_image_and_mask, open_image, to_rgb_array
from .lora_specs import parse_loras
from .loras import LoraAdapters
from .masks import Box, MaskRegions, expand_box, mask_regions, pad_to_multiple, union_box
from .methods import Method, resolve_method
from .methods.feature_fusion import require_unet, unet_architecture
from .methods.propagation import load_propagation
from .models import DEFAULT_MODEL, Capabilities, Components, load_components, resolve_device, resolve_dtype
from .names import MAX_BATCH_IMAGES
from .outpaint import expand_canvas
from .quantized import check_with_acceleration, transformer_source
from .settings import InpaintSettings
from .stopping import JobHooks, StopCheck

log = logging.getLogger("inpaintkit")


class Inpainter:
    """A loaded model. `inpainter(image, mask, prompt, **settings)` returns a list of PIL images.

    Each returned image carries its settings, seed included, in `image.info["inpaintkit"]`.
    """

    def __init__(self, components: Components, lora_root: str | Path | None = None):
        self.components = components
        # The LoRAs loaded into this model (each once) and switched on per job; with `lora_root`, a job names them
        # by file name in that folder (the service and the web UI), else by any path or hub id.
        self.loras = LoraAdapters(components, None if lora_root is None else Path(lora_root))

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        config: str | Path | None = None,
        vae: str | Path | None = None,
        compile: bool = False,
        vae_tiling: str = "auto",
        offload: bool = False,
        fuse_qkv: bool = False,
        sequential_offload: bool = False,
        fp8_weights: bool = False,
        transformer: str | Path | None = None,
        latentpaint_weights: str | Path | None = None,
        lora_root: str | Path | None = None,
        fuse_loras: Sequence[str] = (),
    ) -> "Inpainter":
        """Load a hub id, a local diffusers folder or a single .safetensors/.ckpt file (with `config` offline).

        Speed and memory options (see acceleration.py): `compile` the UNet, `vae_tiling` "auto"/"on"/"off",
        `offload` models to the CPU between uses (CUDA only), `fuse_qkv` attention projections,
        `sequential_offload` each layer to the GPU only for its own call (CUDA only), `fp8_weights` the denoiser's
        weights stored in fp8. `transformer`: a .gguf or .safetensors file or a diffusers folder (e.g. NF4 with
        bitsandbytes) in place of the model's own transformer (quantized.py).
        `latentpaint_weights`: a propagation module written by `inpaintkit train-latentpaint` for this model.
        `lora_root`: the folder a job's LoRAs are named in (else any path or hub id); `fuse_loras`: LoRAs
        (SOURCE[:WEIGHT]) merged into the weights now, for a run whose every job uses them (faster calls).
        """
        acceleration = Acceleration(
            compile=compile,
            vae_tiling=vae_tiling,
            offload=offload,
            fuse_qkv=fuse_qkv,
            sequential_offload=sequential_offload,
            fp8_weights=fp8_weights,
        )
        torch_device = resolve_device(device)
        acceleration.check(torch_device)  # before the slow load
        source = None if transformer is None else transformer_source(transformer, torch_device)
        if source is not None:
            check_with_acceleration(source, acceleration)
        # With offload the weights load to the CPU and each model (or layer) visits the GPU only while it runs.
        load_device = "cpu" if offload or sequential_offload else device
        torch_dtype = resolve_dtype(dtype, torch_device)
        components = load_components(
            model,
            device=load_device,
            dtype=torch_dtype,
            config=config,
            vae=vae,
            denoiser_loader=None if source is None else source.loader(torch_dtype),
        )
        components.denoiser_name = None if transformer is None else str(transformer)
        if dtype == "auto" and torch_device.type == "cpu" and components.dtype == torch.bfloat16:
            log.info(
                "Running in bf16: this CPU has bf16 instructions, about 1.8x faster than fp32 (--dtype fp32 for full "
                "precision)."
            )
        components.device = torch_device
        if latentpaint_weights is not None:  # on the device before accelerate (compile, offload) wraps the UNet
            require_unet(components)
            components.method_weights["latentpaint"] = load_propagation(
                latentpaint_weights, unet_architecture(components.unet)
            ).to(torch_device, components.dtype)
        if lora_root is not None and not Path(lora_root).is_dir():
            raise InputError(f"--loras-dir {lora_root} is not a folder.")
        inpainter = cls(components, lora_root)
        inpainter.loras.fuse(parse_loras(fuse_loras))  # before compile: the compiled graph then has the merged weights
        accelerate(components, acceleration)
        return inpainter

    @property
    def capabilities(self) -> Capabilities:
        return self.components.capabilities

    def __call__(
        self,
        image: ImageLike,
        mask: Optional[ImageLike] = None,
        prompt: str = "",
        *,
        callback: Optional[StepCallback] = None,
        should_stop: Optional[StopCheck] = None,
        **options: Any,
    ) -> list[Image.Image]:
        """Inpaint `image` where `mask` is white (or, without a mask, where the image is transparent).

        `options` are the fields of InpaintSettings (negative_prompt, method, guidance, steps, strength,
        seed, num_images, scheduler, mask_grow, mask_blur, paste_back, crop_padding, fill, color_match
        and the method options). `callback(step, total, latents)` runs after every step; returning
        False stops the job (raises Cancelled). `should_stop()` is polled at every stage, also inside the
        VAE's work (each tile) and bld's reconstruction; True stops the job there (raises Cancelled).
        """
        settings = InpaintSettings.from_options(prompt=prompt, **options)
        return self.run(image, mask, settings, callback, should_stop)

    def outpaint(
        self,
        image: ImageLike,
        prompt: str = "",
        *,
        left: int = 0,
        right: int = 0,
        top: int = 0,
        bottom: int = 0,
        callback: Optional[StepCallback] = None,
        should_stop: Optional[StopCheck] = None,
        **options: Any,
    ) -> list[Image.Image]:
        """Extend the canvas by the given pixels on each side and paint the new area."""
        pixels = to_rgb_array(open_image(image, "image"))
        canvas, mask = expand_canvas(pixels, left=left, right=right, top=top, bottom=bottom)
        return self(canvas, mask, prompt, callback=callback, should_stop=should_stop, **options)

    def run(
        self,
        image: ImageLike,
        mask: Optional[ImageLike],
        settings: InpaintSettings,
        callback: Optional[StepCallback] = None,
        should_stop: Optional[StopCheck] = None,
    ) -> list[Image.Image]:
        """Like calling the inpainter, with the settings already built."""
        settings = self.components.family.settled(settings.with_seed(), self.capabilities)  # recorded as it ran
        method = self.check(settings)
        adapted = method.adapted_defaults(settings, self.components.scheduler_config["_class_name"])
        for name, how in adapted.items():
            log.info("%s: %s %s.", method.name, name, how)
        pixels, mask_values = load_image_and_mask(image, mask)
        regions = mask_regions(mask_values, settings.mask_grow, settings.mask_blur, method.soft_mask)
        tiled, loras = False, []
        if regions.box is not None:
            hooks = JobHooks(callback, should_stop)
            with self.loras.active(parse_loras(settings.loras)) as loras:  # off again however the job ends
                generated, box, tiled = self._generate(pixels, regions, settings, method, hooks)
            images = [self._finish(each, box, pixels, regions, settings, method) for each in generated]
        else:
            log.warning(
                "The mask is empty (all black%s); returning the input unchanged.",
                " after --mask-grow" if mask_values.max() >= 0.5 else "",
            )
            images = [pixels] * settings.num_images
        parameters = self._job_parameters(settings, method, tiled, adapted)
        if loras:
            parameters["loras"] = loras  # each source with its weight and the file's digest
        return [
            with_parameters(Image.fromarray(each), {**parameters, "seed": seed})
            for each, seed in zip(images, settings.seeds())
        ]

    def check(self, settings: InpaintSettings) -> Method:
        """The method these settings ask for, checked against this model and its scheduler (cheap, no inference)."""
        training_steps = self.components.scheduler_config.get("num_train_timesteps", 1000)
        if settings.steps > training_steps:
            raise InputError(
                f"Steps must be at most the model's {training_steps} training timesteps, got {settings.steps}."
            )
        if settings.num_images > MAX_BATCH_IMAGES:  # one call is one batch, held in memory at once
            raise InputError(
                f"One call makes at most {MAX_BATCH_IMAGES} images (one batch), got num_images "
                f"{settings.num_images}; make more in several calls (the CLI splits them with --batch-size)."
            )
        method = resolve_method(settings.method, self.capabilities, settings)
        method.check_components(self.components, settings)
        self.components.family.check_guidance(settings, self.capabilities)
        if self.capabilities.guidance_embedding_dim is not None and settings.negative_prompt.strip():
            raise InputError(
                "This model takes the guidance scale as an input (a guidance-distilled, LCM-style UNet) and makes no "
                "unconditional pass, so a negative prompt cannot act; leave it out."
            )
        loras = parse_loras(settings.loras)
        if loras and self.components.acceleration.fp8_weights and loras != self.loras.fused:
            raise InputError(
                "LoRAs switched per job would be stored in fp8 with the rest of the denoiser (--fp8-weights), which "
                "their layers cannot compute in; fuse them at load (--fuse-lora) or load the model without "
                "--fp8-weights."
            )
        if loras and self.components.acceleration.compile and loras != self.loras.fused:
            raise InputError(
                "LoRAs switched per job change the UNet's layers, which a torch.compile'd UNet would not see; fuse "
                "them at load (--fuse-lora) or load the model without --compile."
            )
        self.loras.check(loras)
        scheduler = build_scheduler(method, settings, self.components)
        try:
            self.components.family.set_timesteps(scheduler, settings.steps, "cpu", (128, 128))
        except Exception as error:  # a scheduler that cannot make this many steps from this model's config
            raise InputError(
                f"{type(scheduler).__name__} cannot make {settings.steps} steps from this model's scheduler config "
                f"({first_line(error)}); use more steps or another --scheduler."
            ) from None
        flow = self.components.family.flow_matching  # a flow's timestep 1000 is sigma 1, not an index
        if not flow and float(scheduler.timesteps.max()) >= training_steps:  # e.g. DDIM/PNDM's offset 1 at 1000
            raise InputError(
                f"{settings.steps} steps with {type(scheduler).__name__} would start past the model's last "
                f"training timestep ({training_steps - 1}); use fewer steps."
            )
        return method

    def _generate(
        self, pixels: np.ndarray, regions: MaskRegions, settings: InpaintSettings, method: Method, hooks: JobHooks
    ) -> tuple[np.ndarray, Box, bool]:
        """Fill the hole, cut the crop window (if asked), run the engine, and put the window back.

        Returns the generated images' part inside a box (outside it they are the input), that box, and whether the
        VAE worked in tiles (it depends on the size the engine ran at)."""
        if settings.crop_padding is None:
            filled = fill_masked(pixels, regions.repaint, settings.fill, seed=settings.seed)
            outputs, tiled = self._denoise_padded(filled, regions.repaint, regions.change, settings, method, hooks)
            return outputs, (slice(None), slice(None)), tiled
        # Nothing outside the window changes, so no pixel work needs more than the window and what finishing reads.
        capabilities = self.capabilities
        window = window_around(
            regions.box, pixels.shape, settings.crop_padding, capabilities.native_size, capabilities.spatial_multiple
        )
        work_pixels = resize_to_work(
            fill_window(pixels, regions.repaint, settings.fill, settings.seed, window.box), window
        )
        work_change = None if regions.change is None else crop_map(regions.change, window)
        outputs, tiled = self._denoise_padded(
            work_pixels, crop_mask(regions.repaint, window), work_change, settings, method, hooks
        )
        box = self._finish_box(window, regions, settings, pixels.shape)
        return np.stack([paste_window(pixels[box], each, window.inside(box)) for each in outputs]), box, tiled

    @staticmethod
    def _finish_box(window: Window, regions: MaskRegions, settings: InpaintSettings, shape: tuple[int, ...]) -> Box:
        """The part of the image that finishing a cropped job reads: the window, and the ring colour matching
        samples.
        """
        if not settings.color_match:
            return window.box
        return union_box(window.box, expand_box(regions.box, RING_PIXELS, shape))

    def _denoise_padded(self, pixels, repaint, change, settings, method, hooks) -> tuple[np.ndarray, bool]:
        """Run the engine on a copy padded to a multiple of the denoiser's spatial step, then crop back."""
        height, width = repaint.shape
        factor = self.capabilities.spatial_multiple
        padded = pad_to_multiple(pixels, factor, mode="edge")
        padded_change = None if change is None else pad_to_multiple(change, factor, mode="constant")
        output = denoise(
            self.components,
            method,
            padded,
            pad_to_multiple(repaint, factor, mode="constant"),
            settings,
            hooks.callback,
            padded_change,
            hooks.should_stop,
        )
        return output[:, :height, :width], self.components.acceleration.tiles(*padded.shape[:2])

    @staticmethod
    def _finish(
        generated: np.ndarray,
        box: Box,
        original: np.ndarray,
        regions: MaskRegions,
        settings: InpaintSettings,
        method: Method,
    ) -> np.ndarray:
        """Pixel-space finishing: the method's reconstruction, colour match, then paste-back.

        `generated` is the part `box` of the image; outside it the result is the original."""
        source, repaint = original[box], regions.repaint[box]
        generated = method.finish(settings, generated, source, repaint)
        if settings.color_match:
            generated = match_color(generated, source, repaint)
        finished = paste_back(generated, source, regions.weight[box]) if settings.paste_back else generated
        if finished.shape == original.shape:
            return finished
        result = original.copy()
        result[box] = finished
        return result

    def _job_parameters(
        self, settings: InpaintSettings, method: Method, tiled: bool, adapted: dict[str, str]
    ) -> dict[str, Any]:
        """What every image of the job records (each adds its own seed)."""
        acceleration = self.components.acceleration
        parameters = {
            **settings.as_dict(),
            "method": method.name,
            "model": self.components.name,
            "inpaintkit": __version__,
            "device": self.components.device.type,
            "dtype": str(self.components.dtype).removeprefix("torch."),
            # The options that can change pixels (beyond float rounding) are recorded with the image.
            "vae": self.components.vae_name,
            "vae_tiling": tiled,
            "compile": acceleration.compile,
            "fuse_qkv": acceleration.fuse_qkv,
        }
        if acceleration.fp8_weights:  # weights rounded to fp8 change pixels
            parameters["fp8_weights"] = True
        if self.components.denoiser_name is not None:  # so does a quantized transformer
            parameters["transformer"] = self.components.denoiser_name
        parameters.update({option: method.option(settings, option) for option in method.defaults})
        parameters.update(method.metadata(self.components, settings))
        if adapted:
            parameters["adapted_defaults"] = adapted
        if self.capabilities.untrained:
            parameters["model_untrained"] = True
        return parameters


def with_parameters(image: Image.Image, parameters: dict[str, Any]) -> Image.Image:
    image.info["inpaintkit"] = parameters
    return image
