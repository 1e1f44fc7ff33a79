"""AUTOMATIC1111's img2img and txt2img request bodies, and the job of ours each one means.

The models follow A1111's (modules/api/models.py, built from StableDiffusionProcessingImg2Img's arguments): the same
field names and defaults, unknown keys ignored (clients such as openOutpaint send a dozen A1111 does not know either),
numbers given as strings accepted. What we cannot honour is refused in one sentence, never silently dropped; the
mapping is written out in the README's "AUTOMATIC1111 API" section.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ...errors import InputError
from ...families import Family
from ...io import to_rgb_array
from ...settings import InpaintSettings
from ..errors import ServiceError
from ..limits import decode_image
from .names import Resolved, describe_scheduler, resolve_sampler
from .options import check_options

# inpainting_fill: 0 fill, 1 original, 2 latent noise, 3 latent nothing -> our --fill (what the hole holds before it
# is encoded). A1111 does 2 and 3 in latent space; ours are the pixel-space equivalents (README).
FILLS = {0: "blur", 1: "original", 2: "noise", 3: "grey"}
FILL_NAMES = {"blur": "fill", "noise": "latent noise", "grey": "latent nothing"}  # the infotext's, by our fill
RESIZE_MODES = {0: "Just resize", 1: "Crop and resize", 2: "Resize and fill", 3: "Just resize (latent upscale)"}
DATA_URI = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)


class Generation(BaseModel):
    """The fields img2img and txt2img share (StableDiffusionProcessing's, and the API's own)."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def null_means_default(cls, values: Any) -> Any:
        """A1111 takes null for a field as its default (`"seed": null` is random, `"prompt": null` empty)."""
        if not isinstance(values, dict):
            return values
        return {key: value for key, value in values.items() if value is not None or cls.default_is_none(key)}

    @classmethod
    def default_is_none(cls, key: str) -> bool:
        field = cls.model_fields.get(key)
        return field is None or field.default is None

    prompt: str = ""
    negative_prompt: str = ""
    styles: Optional[list[str]] = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: Optional[str] = None
    sampler_index: Optional[str] = "Euler"
    scheduler: Optional[str] = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    # Forge's field for FLUX's distilled guidance, which FLUX takes as an input; None: the family's default
    distilled_cfg_scale: Optional[float] = None
    width: int = 512
    height: int = 512
    restore_faces: Optional[bool] = None
    tiling: Optional[bool] = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: Optional[float] = None  # eta and the s_* values are k-diffusion's sampler knobs: read, not used (README)
    s_min_uncond: Optional[float] = None
    s_churn: Optional[float] = None
    s_tmax: Optional[float] = None
    s_tmin: Optional[float] = None
    s_noise: Optional[float] = None
    override_settings: Optional[dict[str, Any]] = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: Optional[str] = None
    refiner_switch_at: Optional[float] = None
    disable_extra_networks: bool = False
    firstpass_image: Optional[str] = None
    comments: Optional[dict[str, Any]] = None
    force_task_id: Optional[str] = None
    script_name: Optional[str] = None
    script_args: list = []
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = {}
    infotext: Optional[str] = None
    inpaintkit: Optional[dict[str, Any]] = None  # our own settings (method, its options, ...); A1111 clients ignore it


class Img2Img(Generation):
    init_images: Optional[list[str]] = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: Optional[float] = None  # instruct-pix2pix models only: read, not used
    mask: Optional[str] = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: Optional[int] = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: Optional[float] = None
    latent_mask: Optional[str] = None
    include_init_images: bool = False


class Txt2Img(Generation):
    denoising_strength: float = 0.75
    enable_hr: bool = False


def parse_request(model: type[Generation], body: bytes) -> Generation:
    """The JSON body as `model`; a bad field is a 422 naming it. NaN and infinities are refused in every field, also
    those we read and do not use: the reply echoes them, and JSON has no such numbers."""
    try:
        request = model.model_validate_json(body or b"{}")
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise ServiceError(422, f"{where}: {first['msg']}.") from None
    where = non_finite(request.model_dump())
    if where is not None:
        raise ServiceError(422, f"{where} must be a finite number (JSON has no NaN or infinity).")
    return request


def non_finite(value: Any, where: str = "") -> Optional[str]:
    """The path of the first NaN or infinite number in a JSON-like value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "body"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = non_finite(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


@dataclass
class A1111Job:
    """What a request means to us: the inputs as the CLI loads them, the settings, and what the reply echoes."""

    pixels: np.ndarray
    mask: np.ndarray  # HxW float32 in [0, 1], 1 = repaint
    settings: InpaintSettings
    sampler: Resolved
    extra_parameters: dict[str, Any]  # the infotext's inpainting entries, in A1111's order
    cfg_scale: float  # what the infotext calls CFG scale: the guidance, or FLUX's true CFG (1 when off)


def refusals(request: Generation, loaded_model: str) -> None:
    """Every field we cannot honour, in one sentence each (422)."""
    unsupported = [
        (bool(request.alwayson_scripts), f"alwayson_scripts {', '.join(map(str, request.alwayson_scripts))} are not "
         "run by this service (inpaintkit runs no A1111 scripts); send {} or leave the field out"),
        (request.script_name is not None, f"script_name '{request.script_name}': this service runs no scripts"),
        (bool(request.script_args), "script_args: this service runs no scripts"),
        (bool(request.styles), "styles: this service stores no styles; put the style's text in the prompt"),
        (bool(request.restore_faces), "restore_faces: this service has no face restoration"),
        (bool(request.tiling), "tiling: this service cannot make tiling images"),
        (request.subseed_strength != 0, "subseed_strength: variation seeds are not supported; use seed"),
        (max(request.seed_resize_from_h, request.seed_resize_from_w) > 0, "seed_resize_from_h/w is not supported"),
        (bool(request.refiner_checkpoint), "refiner_checkpoint: this service runs one model, without a refiner"),
        (bool(request.firstpass_image), "firstpass_image is not supported"),
        (bool(request.infotext), "infotext: send the settings as fields, not as a pasted infotext"),
        (request.save_images, "save_images: this service keeps no images on the server; they are in the response"),
    ]  # fmt: skip
    if isinstance(request, Img2Img):
        multiplier = request.initial_noise_multiplier
        unsupported += [
            (multiplier not in (None, 1.0), f"initial_noise_multiplier {multiplier}: only 1 is supported"),
            (bool(request.latent_mask), "latent_mask: send one mask as mask"),
            (request.inpainting_fill not in FILLS, f"inpainting_fill {request.inpainting_fill}: choose 0 (fill), 1 "
             "(original), 2 (latent noise) or 3 (latent nothing)"),
            (request.resize_mode not in RESIZE_MODES, f"resize_mode {request.resize_mode}: choose 0, 1, 2 or 3"),
        ]  # fmt: skip
    if isinstance(request, Txt2Img):
        unsupported.append((request.enable_hr, "enable_hr: this service has no hires fix"))
    for refused, sentence in unsupported:
        if refused:
            raise ServiceError(422, sentence + ".")
    check_options(request.override_settings or {}, loaded_model, "override_settings")


def job_for(request: Generation, loaded_model: str, max_pixels: int, family: Family) -> A1111Job:
    """The job an img2img (or txt2img) request asks for, checked; images decoded within `max_pixels`. `family`: the
    loaded model's, whose guidance the CFG fields map to and whose defaults the reply reports."""
    refusals(request, loaded_model)
    try:
        sampler = resolve_sampler(
            request.sampler_name or request.sampler_index, request.scheduler, family.flow_matching
        )
    except InputError as error:
        raise ServiceError(422, str(error)) from None
    for name in ("batch_size", "n_iter"):
        if getattr(request, name) < 1:
            raise ServiceError(422, f"{name} must be at least 1, got {getattr(request, name)}.")
    if isinstance(request, Txt2Img):
        check_size(request, max_pixels)  # img2img checks it only where it resizes to it
    if isinstance(request, Img2Img):
        pixels, mask, crop = img2img_inputs(request, max_pixels)
    else:  # txt2img: an inpainting of a blank canvas, all of it repainted
        pixels = np.full((request.height, request.width, 3), 127, dtype=np.uint8)
        mask, crop = np.ones((request.height, request.width), dtype=np.float32), None
    prompt, loras = prompt_loras(request.prompt)
    options: dict[str, Any] = {
        "prompt": prompt,
        "loras": loras,
        **guidance_fields(request, family),
        "steps": request.steps,
        "strength": request.denoising_strength if isinstance(request, Img2Img) else 1.0,
        "seed": None if request.seed in (-1, None) or request.seed < 0 else request.seed,
        "num_images": request.batch_size * request.n_iter,
        "scheduler": sampler.scheduler,
    }
    if isinstance(request, Img2Img):
        options.update(mask_blur=mask_blur(request), crop_padding=crop, fill=FILLS[request.inpainting_fill])
    options.update(request.inpaintkit or {})  # ours, explicitly asked for, win over the mapped A1111 fields
    try:
        settings = family.settled(InpaintSettings.from_options(**options))  # the guidance that runs, for the reply
    except InputError as error:
        raise ServiceError(422, str(error)) from None
    if settings.scheduler != sampler.scheduler:  # the inpaintkit object chose another: the infotext names that one
        sampler = describe_scheduler(settings.scheduler)
    parameters = generation_parameters(request, settings)
    cfg_scale = settings.guidance
    if family.embedded_guidance:  # as Forge reports FLUX: CFG scale is the true CFG, the distilled one beside it
        cfg_scale = settings.true_cfg or 1.0
        parameters = {"Distilled CFG Scale": settings.guidance, **parameters}
    return A1111Job(pixels, mask, settings, sampler, parameters, cfg_scale)


def guidance_fields(request: Generation, family: Family) -> dict[str, Any]:
    """A1111's CFG fields as our settings. On FLUX, as Forge maps them, cfg_scale is true CFG (above 1, with the
    negative prompt; at 1 the negative prompt has no effect, as in A1111 itself) and distilled_cfg_scale the guidance
    the model takes as an input."""
    if not family.embedded_guidance:
        return {"negative_prompt": request.negative_prompt, "guidance": request.cfg_scale}
    true_cfg = request.cfg_scale if request.cfg_scale > 1.0 else None
    return {
        "negative_prompt": request.negative_prompt if true_cfg is not None else "",
        "guidance": request.distilled_cfg_scale,
        "true_cfg": true_cfg,
    }


def generation_parameters(request: Generation, settings: InpaintSettings) -> dict[str, Any]:
    """The infotext's inpainting entries, in A1111's order, from the settings that run (the inpaintkit object may
    have changed the mapped ones)."""
    entries: dict[str, Any] = {}
    if isinstance(request, Img2Img) and request.inpainting_mask_invert:
        entries["Mask mode"] = "Inpaint not masked"
    if settings.mask_blur:
        entries["Mask blur"] = settings.mask_blur
    if settings.crop_padding is not None:
        entries.update({"Inpaint area": "Only masked", "Masked area padding": settings.crop_padding})
    if isinstance(request, Img2Img) and settings.fill != "original":
        entries["Masked content"] = FILL_NAMES.get(settings.fill, settings.fill)
    return entries


NETWORK_TAG = re.compile(r"<(lora|lyco|hypernet):([^>]*)>", re.IGNORECASE)


def prompt_loras(prompt: str) -> tuple[str, tuple[str, ...]]:
    """A1111's `<lora:NAME>` and `<lora:NAME:WEIGHT>` tags, taken out of the prompt as LoRAs (NAME in --loras-dir).
    The prompt without them is what the text encoder reads. What a tag cannot mean here is one sentence: another
    network kind, a weight that is not a number, separate text-encoder and UNet weights."""
    loras = []
    for kind, body in NETWORK_TAG.findall(prompt):
        tag = f"<{kind}:{body}>"
        if kind.lower() != "lora":
            raise ServiceError(422, f"The prompt's {tag}: this service loads LoRAs only (<lora:NAME:WEIGHT>).")
        parts = [part.strip() for part in body.split(":")]
        if not parts[0] or len(parts) > 2:
            raise ServiceError(
                422, f"The prompt's {tag}: write <lora:NAME:WEIGHT> (one weight; separate text-encoder and UNet "
                "weights are not supported)."
            )  # fmt: skip
        if len(parts) == 2 and parts[1]:
            try:
                float(parts[1])
            except ValueError:
                raise ServiceError(422, f"The prompt's {tag}: the weight {parts[1]!r} is not a number.") from None
            loras.append(f"{parts[0]}:{parts[1]}")
        else:
            loras.append(parts[0])
    if not loras:
        return prompt, ()
    return " ".join(NETWORK_TAG.sub(" ", prompt).split()), tuple(loras)


def check_size(request: Generation, max_pixels: int) -> None:
    if not (1 <= request.width and 1 <= request.height and request.width * request.height <= max_pixels):
        raise ServiceError(
            422,
            f"width x height must be at least 1x1 and at most {max_pixels:,} pixels, got "
            f"{request.width}x{request.height}.",
        )


def mask_blur(request: Img2Img) -> int:
    if request.mask_blur is not None:
        return request.mask_blur
    if request.mask_blur_x != request.mask_blur_y:
        raise ServiceError(
            422,
            f"mask_blur_x {request.mask_blur_x} and mask_blur_y {request.mask_blur_y} differ; this service blurs the "
            "mask's edge the same way in both directions: send one mask_blur.",
        )
    return request.mask_blur_x


def img2img_inputs(request: Img2Img, max_pixels: int) -> tuple[np.ndarray, np.ndarray, Optional[int]]:
    """The image and mask as the engine takes them (A1111's mask rules, its resize when not inpainting "only
    masked"), and our crop padding."""
    if not request.init_images:
        raise ServiceError(422, "init_images is missing: send one base64 image.")
    if len(request.init_images) > 1:
        raise ServiceError(
            422, f"init_images holds {len(request.init_images)} images; send one (batch_size makes several results)."
        )
    image = flattened(decoded(request.init_images[0], "init_images[0]", max_pixels))
    mask = None if request.mask is None else binary_mask(decoded(request.mask, "mask", max_pixels), request.mask_round)
    if mask is not None and mask.size != image.size:
        raise ServiceError(
            422, f"The mask is {mask.width}x{mask.height} but the init image is {image.width}x{image.height}."
        )
    if mask is not None and request.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    whole = mask is None or mask.getextrema()[1] == 0  # no mask, or a blank one: A1111 runs plain img2img
    if whole:  # the whole image at denoising_strength, at width x height ("Only masked" has nothing to crop)
        mask = Image.new("L", image.size, 255)
    crop = None
    if request.inpaint_full_res and not whole:
        crop = request.inpaint_full_res_padding
        if crop < 0:
            raise ServiceError(422, f"inpaint_full_res_padding must be 0 or more pixels, got {crop}.")
    elif (request.width, request.height) != image.size:  # A1111 works (and answers) at width x height
        check_size(request, max_pixels)
        image = resized(image, request.resize_mode, request.width, request.height)
        mask = resized(mask, request.resize_mode, request.width, request.height)
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return pixels, np.asarray(mask, dtype=np.float32) / 255.0, crop


def decoded(text: str, what: str, max_pixels: int) -> Image.Image:
    """A base64 image, with or without a `data:...;base64,` prefix, through the service's image limits."""
    if not isinstance(text, str) or not text.strip():
        raise ServiceError(422, f"{what} is empty.")
    payload = re.sub(r"\s+", "", DATA_URI.sub("", text.strip(), count=1))  # clients may wrap base64 in lines
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(422, f"{what} is not base64 (with or without a data: URI prefix).") from None
    return decode_image(data, what, max_pixels)


def flattened(image: Image.Image) -> Image.Image:
    """RGB, transparency composited onto white (A1111's img2img_background_color)."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return Image.fromarray(to_rgb_array(image))  # 16-bit and other modes scaled as /v1 reads them


def binary_mask(mask: Image.Image, rounded: bool = True) -> Image.Image:
    """A1111's create_binary_mask: an RGBA mask with any transparency is its alpha (above 128 = repaint), any other
    its luminance; binary at 128 unless `rounded` is false (mask_round), which keeps the grey levels for the `soft`
    method (the others binarise at the middle)."""
    mask = ImageOps.exif_transpose(mask) or mask
    if mask.mode == "P" and "transparency" in mask.info:
        mask = mask.convert("RGBA")
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        alpha = mask.getchannel("A")
        return alpha.point(lambda value: 255 if value > 128 else 0) if rounded else alpha
    grey = Image.fromarray(np.asarray(Image.fromarray(to_rgb_array(mask)).convert("L")))
    return grey.point(lambda value: 255 if value >= 128 else 0) if rounded else grey


def resized(image: Image.Image, mode: int, width: int, height: int) -> Image.Image:
    """A1111's resize modes (modules/images.py resize_image): 0 (and 3) just resize, 1 crop to the aspect ratio
    and resize, 2 fit inside and fill the bands by stretching the edge rows or columns."""
    resample = Image.Resampling.NEAREST if image.mode == "L" else Image.Resampling.LANCZOS
    if mode in (0, 3):
        return image.resize((width, height), resample)
    scale = (max if mode == 1 else min)(width / image.width, height / image.height)
    inner = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    left, top = (width - inner.width) // 2, (height - inner.height) // 2
    if mode == 1:
        return inner.crop((-left, -top, -left + width, -top + height))
    canvas = Image.new(image.mode, (width, height))
    canvas.paste(inner, (left, top))
    right, bottom = width - left - inner.width, height - top - inner.height
    bands = [  # (band size, the edge row or column it stretches, where it goes)
        (left, (0, 0, 1, inner.height), (left, inner.height), (0, top)),
        (right, (inner.width - 1, 0, inner.width, inner.height), (right, inner.height), (left + inner.width, top)),
        (top, (0, 0, inner.width, 1), (inner.width, top), (left, 0)),
        (bottom, (0, inner.height - 1, inner.width, inner.height), (inner.width, bottom), (left, top + inner.height)),
    ]
    for size, edge, stretched, place in bands:
        if size > 0:
            canvas.paste(inner.crop(edge).resize(stretched), place)
    return canvas
