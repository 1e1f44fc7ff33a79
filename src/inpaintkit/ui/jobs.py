"""The web UI's handlers: Run (one job on the loaded model), Stop, the mask preview and 'use result as input'."""

from __future__ import annotations

import contextlib
import html
import io
import logging
import threading
import traceback
from dataclasses import fields
from typing import Any, Iterator, Optional

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ..devices import free_memory
from ..errors import Cancelled, InputError
from ..io import png_metadata
from ..methods import METHOD_OPTIONS
from ..settings import FIELD_KINDS, InpaintSettings
from .editor import job_image_and_mask, mask_overlay

log = logging.getLogger("inpaintkit")

# The Run handler takes every InpaintSettings field as a parameter of that name; the rest (image, mask,
# only_masked) are read apart. Derived from the dataclass, so a new setting cannot be silently dropped.
SETTING_PARAMETERS = frozenset(field.name for field in fields(InpaintSettings))


class InpaintJobs:
    """Handlers around one loaded Inpainter. One job uses the model at a time; Stop ends a session's job between
    steps.
    """

    def __init__(self, inpainter, model_name: str = "", catalog=None, load_model=None):
        self.inpainter = inpainter
        inpainter.loras.served = True  # a browser names LoRAs in --loras-dir, never a path of its choosing
        self.model_name = model_name or inpainter.components.name
        self.catalog = catalog  # catalog.ModelCatalog: the models the Model dropdown offers; None: one model only
        self.load_model = load_model  # loads a catalog entry's source, as the CLI loads --model
        self.model_lock = threading.Lock()  # a stopped job can still be finishing its step when the next one starts
        self.stop_switches: dict[Optional[str], threading.Event] = {}

    def inpaint(
        self,
        image: Optional[dict],
        prompt: str,
        negative_prompt: str,
        method: str,
        guidance: Optional[float],
        true_cfg: Optional[float],
        steps: int,
        strength: float,
        seed: Optional[float],
        num_images: int,
        scheduler: str,
        mask_grow: int,
        mask_blur: int,
        only_masked: bool,
        crop_padding: Optional[float],
        fill: str,
        color_match: bool,
        paste_back: bool,
        spacing: str,
        loras: str,
        blend_start: Optional[float],
        mask_dilation_iterations: Optional[int],
        reconstruct: Optional[str],
        jump_length: Optional[int],
        jump_n_sample: Optional[int],
        known_t: Optional[int],
        fuse_blocks: Optional[str],
        fuse_until: Optional[float],
        propagation: Optional[float],
        lanpaint_steps: Optional[int],
        lanpaint_lambda: Optional[float],
        lanpaint_step_size: Optional[float],
        lanpaint_beta: Optional[float],
        mask: Optional[str] = None,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple[Image.Image, str]], str, int]:
        """Inpaint the editor's image where the mask is painted and/or uploaded.

        Returns (gallery items, first seed used, selected result). The parameters are the API's
        (gradio_client: `api_name="/inpaint"`); the mask file is last, so that it is optional.
        """
        values = {name: value for name, value in locals().items() if name in SETTING_PARAMETERS}
        with shown_as_messages():
            if self.inpainter is None:
                raise InputError("No model is loaded (a model switch failed); choose a model above.")
            pixels, mask_values = job_image_and_mask(image, mask)
            settings = job_settings(values, only_masked)
            self.inpainter.check(settings)  # a bad combination fails at once, without waiting for the model
            with self.stop_switch(request) as stop, self.model_lock:

                def on_step(step: int, total: int, latents) -> bool:
                    progress((step + 1, total), desc="denoising", unit="steps")  # step counts from 0
                    return not stop.is_set()

                # should_stop is polled inside the long stages too (each VAE tile, bld's optimisation), so Stop does not
                # wait for a big image's decoding to end.
                images = self.inpainter.run(pixels, mask_values, settings, callback=on_step, should_stop=stop.is_set)
        results = [(with_png_text(each), f"seed {each.info['inpaintkit']['seed']}") for each in images]
        return results, str(images[0].info["inpaintkit"]["seed"]), 0

    def switch_model(self, name: str, progress: gr.Progress = gr.Progress()) -> tuple[str, str]:
        """Load another model from the catalog, after the running job (Run and this share one queue); the old one is
        freed first, so one model is in memory at a time. Returns the status line and the dropdown's value: on a
        failure, a one-sentence warning and the dropdown back on the model that is loaded."""
        with shown_as_messages():
            if self.catalog is None or self.load_model is None:
                raise InputError("This UI runs one model; start it with --models-dir to switch models.")
            source, previous_source = self.catalog.resolve(name), self.catalog.resolve(self.model_name)
        if name == self.model_name:
            return f"Model: {name}", name
        with self.model_lock:
            progress(0, desc=f"loading {name}")
            previous, self.inpainter = self.model_name, None
            free_memory()
            failure = None
            try:
                self.inpainter = self.load_model(source)
                self.model_name = name
            except Exception as error:
                failure = str(error).splitlines()[0] if str(error) else type(error).__name__
            if failure is not None:
                free_memory()  # the failed load's objects went with the except block
                self.inpainter = self.load_model(previous_source)  # a failure here leaves no model: Run says so
            self.inpainter.loras.served = True
        if failure is not None:
            gr.Warning(html.escape(f"Model {name} could not be loaded ({failure}); {previous} is back."))
        return f"Model: {self.model_name}", self.model_name

    def guidance_field(self) -> dict:
        """The guidance field reset to the loaded model family's default, after a switch (Flux Fill's 30 is not
        SD's 7.5)."""
        if self.inpainter is None:
            return gr.update()
        default = self.inpainter.components.family.default_guidance
        return gr.update(value=default, info=guidance_info(default))

    def stop(self, request: gr.Request = None) -> None:
        """Ask this session's running job to stop after its current step."""
        switch = self.stop_switches.get(session_of(request))
        if switch is not None:
            switch.set()

    def stop_all(self) -> None:
        """Ask every running job to stop (the server is shutting down)."""
        for switch in list(self.stop_switches.values()):
            switch.set()

    @contextlib.contextmanager
    def stop_switch(self, request: Optional[gr.Request]) -> Iterator[threading.Event]:
        session = session_of(request)
        switch = self.stop_switches[session] = threading.Event()
        try:
            yield switch
        finally:
            if self.stop_switches.get(session) is switch:
                del self.stop_switches[session]


def session_of(request: Optional[gr.Request]) -> Optional[str]:
    return getattr(request, "session_hash", None)


def job_settings(values: dict[str, Any], only_masked: bool) -> InpaintSettings:
    """InpaintSettings from the UI's values: -1 or an empty seed is random, method options only for the chosen
    method.
    """
    values = {
        name: whole_if_integral(value) if FIELD_KINDS[name] == "whole" else value for name, value in values.items()
    }
    text = values.get("loras") or ""
    if isinstance(text, str):  # the LoRAs field: NAME:WEIGHT per line (or comma-separated)
        values["loras"] = tuple(part.strip() for part in text.replace(",", "\n").splitlines() if part.strip())
    values.setdefault("spacing", "default")
    if values["seed"] is None or (isinstance(values["seed"], int) and values["seed"] < 0):
        values["seed"] = None
    if not only_masked:
        values["crop_padding"] = None
    elif values["crop_padding"] is None:
        values["crop_padding"] = 0  # an emptied padding field still means "only masked"
    for option, owner in METHOD_OPTIONS.items():
        if owner != values["method"]:
            values[option] = None  # the hidden fields of other methods keep their values but do not apply
    return InpaintSettings.from_options(**values)


def whole_if_integral(value: Any) -> Any:
    """Gradio's numbers and sliders may arrive as floats (2.0); a whole number is meant. Other values are left to the
    settings' check.
    """
    return int(value) if isinstance(value, float) and value.is_integer() else value


def with_png_text(image: Image.Image) -> Image.Image:
    """The image re-read from a PNG carrying its settings as text, so the gallery's PNG (and its download) keeps
    them.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_metadata(image.info["inpaintkit"]))
    buffer.seek(0)
    return Image.open(buffer)


@contextlib.contextmanager
def shown_as_messages() -> Iterator[None]:
    """User errors become one sentence in the UI; anything unexpected is logged here and shown as one generic line."""
    try:
        yield
    except gr.Error:
        raise
    except InputError as error:
        raise gr.Error(html.escape(str(error)), print_exception=False) from None
    except Cancelled:
        raise gr.Error("Stopped; no images were made.", title="Stopped", print_exception=False) from None
    except (MemoryError, torch.OutOfMemoryError):
        raise gr.Error(
            "Out of memory; make fewer images, tick 'Only masked', or use a smaller image.", print_exception=False
        ) from None
    except Exception:
        # The traceback goes in the message itself: the CLI's one-line log format drops exc_info.
        log.error("The web UI's job failed:\n%s", traceback.format_exc().rstrip())
        raise gr.Error(
            "Something went wrong on the server (the details are in its log); try other settings.",
            print_exception=False,
        ) from None


def preview_mask(image: Optional[dict], mask: Optional[str]) -> Optional[np.ndarray]:
    """The image with the job's mask (painted strokes and uploaded mask together) tinted over it; None while there is
    none.
    """
    if not image or image.get("background") is None:
        return None
    try:
        return mask_overlay(*job_image_and_mask(image, mask))
    except InputError as error:
        if mask:  # a mask that does not fit the image is worth saying at once; no strokes yet is not
            gr.Warning(html.escape(str(error)))
        return None


def use_result(
    results: Optional[list], selected: int, mask: Optional[str]
) -> tuple[dict[str, Any], Optional[np.ndarray]]:
    """The selected result as the editor's new picture, without strokes, to keep editing; and the preview of the
    uploaded mask (if any, it still applies) over it."""
    if not results:
        gr.Warning("There is no result yet; press Run first.")
        return gr.skip(), gr.skip()
    path = results[min(selected, len(results) - 1)][0]
    try:
        with Image.open(path) as picture:
            preview = preview_mask({"background": picture.convert("RGBA"), "layers": []}, mask)
    except OSError:  # the server's cache drops results after two hours
        gr.Warning("That result is no longer on the server; run the job again.")
        return gr.skip(), gr.skip()
    return {"background": path, "layers": [], "composite": path}, preview


def clear_mask(image: Optional[dict]) -> tuple[Optional[dict[str, Any]], None, None]:
    """The editor's picture without strokes, no uploaded mask, and so no preview."""
    background = (image or {}).get("background")
    return (
        (None if background is None else {"background": background, "layers": [], "composite": background}),
        None,
        None,
    )


def selected_index(event: gr.SelectData) -> int:
    return event.index


def guidance_info(default: float) -> str:
    return f"this model's default: {default:g}; <= 1 turns classifier-free guidance off"
