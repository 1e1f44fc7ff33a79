"""The one API every front end uses: load a model once, inpaint many images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from . import __version__
from .engine import StepCallback, denoise
from .finish import paste_back
from .io import ImageLike, load_image_and_mask
from .masks import binarize, feather, grow, pad_to_multiple
from .methods import resolve_method
from .models import DEFAULT_MODEL, Capabilities, Components, load_components
from .settings import InpaintSettings

log = logging.getLogger("inpaintkit")


class Inpainter:
    """A loaded model. `inpainter(image, mask, prompt, **settings)` returns a list of PIL images.

    Each returned image carries its settings, seed included, in `image.info["inpaintkit"]`.
    """

    def __init__(self, components: Components):
        self.components = components

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        config: str | Path | None = None,
    ) -> "Inpainter":
        """Load a hub id, a local diffusers folder or a single .safetensors/.ckpt file (with `config` offline)."""
        return cls(load_components(model, device=device, dtype=dtype, config=config))

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
        **options: Any,
    ) -> list[Image.Image]:
        """Inpaint `image` where `mask` is white (or, without a mask, where the image is transparent).

        `options` are the fields of InpaintSettings (negative_prompt, method, guidance, steps, strength,
        seed, num_images, scheduler, mask_grow, mask_blur, paste_back). `callback(step, total, latents)`
        runs after every step; returning False stops the job (raises Cancelled).
        """
        return self.run(image, mask, InpaintSettings.from_options(prompt=prompt, **options), callback)

    def run(
        self,
        image: ImageLike,
        mask: Optional[ImageLike],
        settings: InpaintSettings,
        callback: Optional[StepCallback] = None,
    ) -> list[Image.Image]:
        """Like calling the inpainter, with the settings already built."""
        settings = settings.with_seed()
        method = resolve_method(settings.method, self.capabilities)
        pixels, mask_values = load_image_and_mask(image, mask)
        repaint = grow(binarize(mask_values), settings.mask_grow)
        if repaint.any():
            generated = self._generate(pixels, repaint, settings, method, callback)
        else:
            log.warning("The mask is empty (all black%s); returning the input unchanged.", " after --mask-grow" if binarize(mask_values).any() else "")
            generated = np.repeat(pixels[None], settings.num_images, axis=0)
        if settings.paste_back:
            weight = feather(repaint, settings.mask_blur)
            generated = np.stack([paste_back(each, pixels, weight) for each in generated])
        return [self._with_parameters(Image.fromarray(each), settings, method.name, seed) for each, seed in zip(generated, settings.seeds())]

    def _generate(self, pixels, repaint, settings, method, callback) -> np.ndarray:
        """Run the engine on a copy padded to a multiple of the VAE factor, then crop back."""
        height, width = repaint.shape
        factor = self.capabilities.vae_scale_factor
        padded_pixels = pad_to_multiple(pixels, factor, mode="edge")
        padded_mask = pad_to_multiple(repaint, factor, mode="constant")
        output = denoise(self.components, method, padded_pixels, padded_mask, settings, callback)
        return output[:, :height, :width]

    def _with_parameters(self, image: Image.Image, settings: InpaintSettings, method: str, seed: int) -> Image.Image:
        parameters = {**settings.as_dict(), "seed": seed, "method": method, "model": self.components.name, "inpaintkit": __version__}
        if self.capabilities.untrained:
            parameters["model_untrained"] = True
        image.info["inpaintkit"] = parameters
        return image
