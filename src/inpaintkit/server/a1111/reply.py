"""A1111's img2img/txt2img response: images (base64 PNG with the `parameters` infotext), `parameters` (the request
echoed) and `info` (a JSON string with the seeds, the infotexts and the rest of Processed.js())."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ... import __version__
from .request import A1111Job, Generation, Img2Img


def infotext(
    job: A1111Job, request: Generation, model: str, seed: int, size: tuple[int, int], method: str, loras: list
) -> str:
    """A1111's generation parameters line (modules/processing.py create_infotext), which clients parse back."""
    settings = job.settings
    entries: dict[str, Any] = {
        "Steps": settings.steps,
        "Sampler": job.sampler.sampler,
        "Schedule type": job.sampler.schedule_label,
        "CFG scale": job.cfg_scale,
        "Seed": seed,
        "Size": f"{size[0]}x{size[1]}",
        "Model": model,
    }
    if isinstance(request, Img2Img):
        entries["Denoising strength"] = settings.strength
    entries.update(job.extra_parameters)
    if loras:  # as A1111 writes them, so "send to img2img" finds the same files
        entries["Lora hashes"] = ", ".join(f"{Path(each['source']).stem}: {each.get('sha256')}" for each in loras)
    entries["Inpaint method"] = method  # ours, as the job resolved it ("auto" -> native or blend)
    entries["Version"] = f"inpaintkit {__version__}"
    text = ", ".join(f"{key}: {quoted(value)}" for key, value in entries.items())
    negative = f"\nNegative prompt: {settings.negative_prompt}" if settings.negative_prompt else ""
    return f"{request.prompt}{negative}\n{text}".strip()  # the prompt as sent: A1111 keeps its <lora:...> tags


def quoted(value: Any) -> str:
    """As A1111 quotes a value: JSON when it holds a comma, a colon or a newline."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(mark in text for mark in ",:\n") else text


def reply(job: A1111Job, request: Generation, images: list[Image.Image], model: str) -> dict[str, Any]:
    """The response body."""
    settings = job.settings
    seeds = [image.info["inpaintkit"]["seed"] for image in images]
    size = images[0].size if images else (request.width, request.height)
    method = images[0].info["inpaintkit"]["method"] if images else job.settings.method
    loras = images[0].info["inpaintkit"].get("loras", []) if images else []
    texts = [infotext(job, request, model, seed, size, method, loras) for seed in seeds]
    encoded = [png_base64(image, text) for image, text in zip(images, texts)] if request.send_images else []
    parameters = request.model_dump()
    if isinstance(request, Img2Img) and not request.include_init_images:
        parameters.update(init_images=None, mask=None)
    info = {
        "prompt": request.prompt,  # as sent, tags included (A1111's); the encoder read settings.prompt
        "all_prompts": [request.prompt] * len(seeds),
        "negative_prompt": settings.negative_prompt,
        "all_negative_prompts": [settings.negative_prompt] * len(seeds),
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": request.subseed if request.subseed >= 0 else seeds[0],
        "all_subseeds": seeds,
        "subseed_strength": request.subseed_strength,
        "width": size[0],
        "height": size[1],
        "sampler_name": job.sampler.sampler,
        "cfg_scale": job.cfg_scale,
        "steps": settings.steps,
        "batch_size": request.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model,
        "sd_model_hash": None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": settings.strength,
        "extra_generation_params": dict(job.extra_parameters),
        "index_of_first_image": 0,
        "infotexts": texts,
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": method == "native",
        "version": f"inpaintkit {__version__}",
        "inpaintkit": images[0].info["inpaintkit"] if images else None,  # every setting of ours, as in the PNGs
    }
    return {"images": encoded, "parameters": parameters, "info": json.dumps(info)}


def png_base64(image: Image.Image, parameters: str) -> str:
    """Raw base64 (no data: prefix, as A1111 sends it) of a PNG holding A1111's `parameters` text and our settings."""
    metadata = PngInfo()
    metadata.add_text("parameters", parameters)
    metadata.add_text("inpaintkit", json.dumps(image.info["inpaintkit"], sort_keys=True))  # as `inpaintkit run`
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=metadata)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
