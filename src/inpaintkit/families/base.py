"""What a model family is to the engine: how its prompt, image and denoiser are called (DESIGN.md).

The loop, the methods and the front ends see only this interface; a family's adapter (sd.py, ...) holds
what differs, each following its diffusers inpainting pipeline, the reference for its pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import torch

from ..errors import InputError
from ..guidance import Guidance, guidance_for

if TYPE_CHECKING:
    from ..models import Capabilities, Components
    from ..settings import InpaintSettings


@dataclass
class Conditioning:
    """What the denoiser is told about the prompts, batched as its input is (guidance's halves, then images)."""

    context: torch.Tensor  # per-token embeddings, B x T x D
    pooled: Optional[torch.Tensor] = None  # one vector per prompt (SDXL's second encoder)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # a family's own (SDXL's time ids)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """The parts stacked along the batch, in order (guidance's unconditional part first)."""
        first = parts[0]
        return Conditioning(
            context=torch.cat([part.context for part in parts]),
            pooled=None if first.pooled is None else torch.cat([part.pooled for part in parts]),
            extras={name: torch.cat([part.extras[name] for part in parts]) for name in first.extras},
        )


class Family:
    """One family of latent diffusion models. Subclasses declare their facts and override what differs."""

    name: str = ""  # as users and `inpaintkit info` name it
    pipeline: str = ""  # the diffusers inpainting pipeline: the loader, and the reference for equivalence
    component_folders: tuple[str, ...] = ()  # what a diffusers folder of this family holds
    text_encoders: tuple[str, ...] = ("text_encoder",)  # Components' attributes, in the pipeline's order
    tokenizers: tuple[str, ...] = ("tokenizer",)
    # latent channel -> (r, g, b): a linear map from latents to a rough picture, for progress previews without the VAE
    # (the "cheap approximation" of AUTOMATIC1111's sd_vae_approx.py); empty: no preview
    preview_factors: tuple[tuple[float, float, float], ...] = ()
    preview_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)  # added to the map's (r, g, b)
    denoiser: str = "unet"  # the pipeline's attribute (and folder) holding the denoising network
    patch_size: int = 1  # latent cells per side of one denoiser token: images are multiples of VAE factor x this
    default_guidance: float = 7.5  # the guidance scale when the user gives none (the family's pipeline default)
    # The pipeline draws the input image's posterior sample before the noise even when it keeps nothing of the input
    # (Flux's prepare_latents); the loop draws it too, so seeds give the same noise.
    always_encodes_image: bool = False
    # Optional pipeline parts inpainting does not use, passed as None so they are not loaded.
    unused_parts: dict[str, Any] = {}
    strength_rounding: str = "kept"  # how its pipeline rounds strength x steps (Method.skipped_steps)
    embedded_guidance: bool = False  # the guidance scale is an input of the model (FLUX), not a second pass
    flow_matching: bool = False  # a rectified-flow model (SD 3, FLUX): the flow schedulers (schedulers.py)

    def native_size(self, pipeline: Any, vae_scale_factor: int) -> int:
        """The resolution in pixels the denoiser was made for, from its config."""
        sample_size = getattr(pipeline, self.denoiser).config.sample_size
        sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        return int(sample_size) * vae_scale_factor

    def spatial_input_channels(self, denoiser_config: Any) -> int:
        """The channels the denoiser takes per latent cell: the latents', plus an inpainting model's mask and
        masked-image latents."""
        return int(denoiser_config.in_channels)

    def inpainting_channels(self, latent_channels: int, vae_scale_factor: int) -> int:
        """A dedicated inpainting model's input channels per latent cell: latents, mask, masked-image latents."""
        return 2 * latent_channels + 1

    def guidance(self, settings: InpaintSettings, capabilities: Capabilities) -> Guidance:
        """How this job's predictions are guided: CFG above 1, none at or below, or a guidance-distilled UNet's
        embedded scale."""
        return guidance_for(self.guidance_scale(settings), capabilities.guidance_embedding_dim)

    def guidance_scale(self, settings: InpaintSettings) -> float:
        return self.default_guidance if settings.guidance is None else settings.guidance

    def settled(self, settings: InpaintSettings, capabilities: Capabilities | None = None) -> InpaintSettings:
        """The settings with this family's defaults in place of those left unset, as the job's outputs record them
        (`capabilities`: the loaded model's, where they decide a default)."""
        return dataclasses.replace(settings, guidance=self.guidance_scale(settings))

    def check_guidance(self, settings: InpaintSettings, capabilities: Capabilities) -> None:
        """Refuse, in one sentence, guidance settings this family cannot honour."""
        if settings.true_cfg is not None and settings.true_cfg > 1.0:  # 1 or less is off, as for Flux
            raise InputError(
                f"--true-cfg is for Flux models, whose guidance is an input; a {self.name} model's --guidance already "
                "is classifier-free guidance."
            )

    def set_timesteps(self, scheduler: Any, steps: int, device: Any, latent_size: tuple[int, int]) -> None:
        """The scheduler's timesteps for `steps` steps, as the family's pipeline sets them (`latent_size`: the
        latents' (height, width), for a schedule that shifts with the resolution)."""
        scheduler.set_timesteps(steps, device=device)

    def inpainting_condition(
        self, pixel_mask: torch.Tensor, latent_mask: torch.Tensor, masked_latents: torch.Tensor
    ) -> torch.Tensor:
        """An inpainting model's extra input channels, in its order: SD's and SD 3's mask then masked-image latents.
        `pixel_mask` is Bx1xHxW, `latent_mask` Bx1xhxw."""
        return torch.cat([latent_mask, masked_latents], dim=1)

    def vae_dtype(self, vae_config: Any, dtype: torch.dtype) -> torch.dtype:
        """The dtype the VAE runs in when the model runs in `dtype`."""
        return dtype

    def encode_text(
        self, components: Components, text: str, unconditional: bool, num_images: int, size: tuple[int, int]
    ) -> Conditioning:
        """The conditioning for one text, repeated for `num_images`. `unconditional`: it is guidance's negative
        prompt (some families encode an empty one as zeros). `size` is the (height, width) in pixels the denoiser
        runs at, for families that condition on it."""
        raise NotImplementedError

    def encode_image(self, components: Components, pixels: torch.Tensor) -> Any:
        """The VAE posterior of Bx3xHxW pixels in [-1, 1]; `.sample(generator)` draws as diffusers does."""
        return components.vae.encode(pixels.to(components.device, components.dtype)).latent_dist

    def scale_latents(self, components: Components, sample: torch.Tensor) -> torch.Tensor:
        """A VAE sample in the denoiser's latent space (Flux's and SD 3's VAEs also centre it on their shift)."""
        shift = getattr(components.vae.config, "shift_factor", None)
        if shift is not None:
            sample = sample - shift
        return sample * components.capabilities.vae_scaling_factor

    def unscale_latents(self, components: Components, latents: torch.Tensor) -> torch.Tensor:
        """The denoiser's latents as the VAE decoder takes them."""
        latents = latents / components.capabilities.vae_scaling_factor
        shift = getattr(components.vae.config, "shift_factor", None)
        return latents if shift is None else latents + shift

    def decode(self, components: Components, latents: torch.Tensor) -> torch.Tensor:
        """Latents to pixels in [-1, 1]."""
        return components.vae.decode(self.unscale_latents(components, latents), return_dict=False)[0]

    def denoise(
        self, components: Components, model_input: torch.Tensor, t: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        """One call of the denoiser on the (guidance-batched) input at timestep t."""
        raise NotImplementedError
