"""The web UI's layout and events: `build_app(inpainter)` returns a queued gr.Blocks, ready to launch."""

from __future__ import annotations

import inspect
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry or version check: the UI must work offline

import gradio as gr  # noqa: E402

from ..fill import FILLS  # noqa: E402
from ..method_options import OPTIONS_BY_NAME  # noqa: E402
from ..methods import METHOD_OPTIONS, METHODS  # noqa: E402
from ..schedulers import SCHEDULER_NAMES, SPACINGS  # noqa: E402
from ..settings import MAX_GUIDANCE, InpaintSettings  # noqa: E402
from . import jobs  # noqa: E402
from .inputs import CheckedBlocks  # noqa: E402

DEFAULTS = InpaintSettings()  # the UI starts from the API's and CLI's defaults
MAX_IMAGES = 8
BRUSH_COLOR = ("#ff0040", 0.6)  # translucent, so the picture shows through the strokes
BRUSH_SIZE = 12  # radius in image pixels; the editor has a slider to change it
METHOD_CHOICES = [("auto: native for a 9-channel UNet, blend otherwise", "auto")] + [
    (f"{name}: {method.summary.rstrip('.')}", name) for name, method in METHODS.items()
]
SLIDER_STEP = 0.05
CACHE_CLEANUP = (1800, 7200)  # every 30 minutes, delete uploads and results older than 2 hours


def method_option_field(name: str) -> gr.components.Component:
    """The input for one method option, from its declaration, starting at that method's default."""
    option = OPTIONS_BY_NAME[name]
    info = f"{option.method}: {option.help}"
    if option.choices:
        return gr.Dropdown(list(option.choices), value=option.default, label=option.label, info=info)
    if option.kind is float:  # a fraction: a slider over its range, short of an exclusive end
        high = option.maximum if option.maximum is not None else option.below - SLIDER_STEP
        return gr.Slider(option.minimum, high, value=option.default, step=SLIDER_STEP, label=option.label, info=info)
    return gr.Number(
        value=option.default, precision=0, minimum=option.minimum, maximum=option.maximum, label=option.label, info=info
    )


def build_app(inpainter, *, model_name: str = "", max_queue: int = 8, catalog=None, load_model=None) -> CheckedBlocks:
    """The Gradio app around one loaded Inpainter, its queue bounded to `max_queue` waiting jobs, one running at a
    time. With a `catalog` (--models-dir) and `load_model`, a Model dropdown switches models.
    """
    handlers = jobs.InpaintJobs(inpainter, model_name, catalog, load_model)
    with CheckedBlocks(title="inpaintkit", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as demo:
        demo.jobs = handlers
        gr.Markdown(
            f"## inpaintkit\nModel: `{model_name or inpainter.components.name}`. Paint over what should change, "
            "describe it, press **Run**."
        )
        if catalog is not None and load_model is not None:
            with gr.Row():
                model_choice = gr.Dropdown(
                    list(dict.fromkeys([handlers.model_name, *catalog.names()])),
                    value=handlers.model_name,
                    label="Model",
                    info="--models-dir and the Hugging Face cache; switching waits for the running job",
                )
                model_status = gr.Markdown(f"Model: {handlers.model_name}")
            switched = model_choice.change(
                handlers.switch_model,
                model_choice,
                [model_status, model_choice],
                api_name="switch_model",
                concurrency_limit=1,
                concurrency_id="model",  # one queue with Run: a switch never overlaps a job
            )
        if inpainter.capabilities.untrained:
            gr.Markdown(
                "**This model is UNTRAINED (random weights, from make-tiny-model): the painted region comes back as "
                "noise.**"
            )
        with gr.Row():
            with gr.Column():
                image = gr.ImageEditor(
                    label="Image: paint the mask",
                    type="pil",
                    image_mode="RGBA",
                    format="png",
                    sources=("upload", "clipboard"),
                    transforms=(),
                    brush=gr.Brush(colors=[BRUSH_COLOR], default_size=BRUSH_SIZE, color_mode="fixed"),
                    eraser=gr.Eraser(default_size=BRUSH_SIZE),
                    layers=gr.LayerOptions(allow_additional_layers=False, layers=["Mask"]),
                    elem_id="image-editor",
                )
                clear = gr.Button("Clear mask", size="sm")
                with gr.Accordion(
                    "Upload a mask (optional; white = repaint, added to the painted strokes)", open=False
                ):
                    # A file, not gr.Image: inpaintkit's own checks (and messages) then see every upload, whatever it
                    # holds.
                    mask = gr.File(label="Mask image", file_types=["image"], type="filepath", elem_id="mask-upload")
                preview = gr.Image(
                    label="Mask that will be used", interactive=False, elem_id="mask-preview", format="png", height=240
                )
            with gr.Column():
                prompt = gr.Textbox(
                    "", label="Prompt", placeholder="what to paint in the masked region", elem_id="prompt"
                )
                negative_prompt = gr.Textbox("", label="Negative prompt", placeholder="what to steer away from")
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="run")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                gallery = gr.Gallery(
                    label="Results",
                    type="filepath",
                    format="png",
                    columns=2,
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    elem_id="results",
                )
                with gr.Row():
                    seed_used = gr.Textbox(label="Seed used", interactive=False, elem_id="seed-used")
                    use_result = gr.Button("Use selected result as input")
                selected = gr.State(0)
        controls = {
            "image": image,
            "mask": mask,
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            **settings_panel(
                seed_used, handlers.inpainter.loras.available(), handlers.inpainter.components.family.default_guidance
            ),
        }

        if catalog is not None and load_model is not None:  # the new model family's guidance, not the old one's
            switched.then(handlers.guidance_field, None, controls["guidance"], api_name=False, queue=False)
        demo.input_names = {component._id: name for name, component in controls.items()}
        # The Run handler's parameters are matched to the controls by name (a missing one fails here), so they cannot
        # drift.
        job_inputs = [
            controls[name]
            for name in inspect.signature(handlers.inpaint).parameters
            if name not in ("request", "progress")
        ]
        run_event = gr.on(
            [run.click, prompt.submit],
            handlers.inpaint,
            job_inputs,
            [gallery, seed_used, selected],
            api_name="inpaint",
            concurrency_limit=1,
            concurrency_id="model",
        )
        stop.click(handlers.stop, None, None, cancels=[run_event], api_name="stop", queue=False)
        demo.unload(handlers.stop)  # a closed tab stops its job instead of leaving it to run on
        # User actions only: an editor 'change' listener reading the editor while a new value loads into it (Clear
        # mask, use result) leaves Gradio 6's editor stuck; those handlers set the preview themselves. Queued, so
        # that a warning about the uploaded mask can be shown.
        gr.on(
            [image.input, mask.upload, mask.clear],
            jobs.preview_mask,
            [image, mask],
            preview,
            api_name=False,
            show_progress="hidden",
            concurrency_limit=None,
        )
        clear.click(jobs.clear_mask, image, [image, mask, preview], api_name=False)
        gallery.select(jobs.selected_index, None, selected, api_name=False, queue=False)
        use_result.click(jobs.use_result, [gallery, selected, mask], [image, preview], api_name=False)
    demo.queue(max_size=max_queue, default_concurrency_limit=1)
    return demo


def settings_panel(
    seed_used: gr.Textbox, lora_names: list[str], default_guidance: float
) -> dict[str, gr.components.Component]:
    """The job's settings, named as the Run handler's parameters; the method options show only for their method.
    `lora_names`: the LoRA files of --loras-dir, which the LoRAs field may name; `default_guidance`: the loaded
    model family's."""
    with gr.Row():
        method = gr.Dropdown(METHOD_CHOICES, value=DEFAULTS.method, label="Method")
        scheduler = gr.Dropdown(
            list(SCHEDULER_NAMES), value=DEFAULTS.scheduler, label="Scheduler", info="default: the model's own"
        )
    with gr.Row():
        steps = gr.Slider(1, 150, value=DEFAULTS.steps, step=1, label="Steps", elem_id="steps")
        # The loaded family's own default (7.5 SD, 7 SD 3, 3.5 Flux, 30 Flux Fill): no one number suits them all.
        guidance = gr.Number(
            value=default_guidance, minimum=0, maximum=MAX_GUIDANCE, step=0.5, label="Guidance",
            info=jobs.guidance_info(default_guidance),
        )  # fmt: skip
        true_cfg = gr.Number(
            value=1.0, minimum=0, maximum=MAX_GUIDANCE, step=0.5, label="True CFG (Flux)",
            info="above 1: Flux uses the negative prompt (a second pass per step)",
        )  # fmt: skip
        strength = gr.Slider(
            0.01, 1, value=DEFAULTS.strength, step=0.01, label="Strength", info="below 1 starts from the noised input"
        )
        num_images = gr.Slider(
            1, MAX_IMAGES, value=DEFAULTS.num_images, step=1, label="Images", info="image k uses seed + k"
        )
    with gr.Row():
        seed = gr.Number(value=-1, precision=0, label="Seed", info="-1 = random", elem_id="seed")
        random_seed = gr.Button("Random", size="sm")
        reuse_seed = gr.Button("Reuse seed used", size="sm")
    with gr.Row():
        mask_grow = gr.Slider(-32, 64, value=DEFAULTS.mask_grow, step=1, label="Mask grow (px)", info="negative erodes")
        mask_blur = gr.Slider(
            0, 64, value=DEFAULTS.mask_blur, step=1, label="Mask blur (px)", info="feathers the paste-back"
        )
        only_masked = gr.Checkbox(
            value=False, label="Only masked", info="inpaint the mask's window at the model's native size"
        )
        crop_padding = gr.Number(
            value=32, precision=0, minimum=0, label="Crop padding (px)", info="around the mask, with Only masked"
        )
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            fill = gr.Dropdown(
                list(FILLS),
                value=DEFAULTS.fill,
                label="Fill",
                info="what the hole starts as (matters for strength < 1)",
            )
            color_match = gr.Checkbox(
                value=DEFAULTS.color_match, label="Colour match", info="match the new region's colours to its border"
            )
            paste_back = gr.Checkbox(
                value=DEFAULTS.paste_back, label="Paste back", info="keep every pixel outside the mask exactly"
            )
        with gr.Row():
            spacing = gr.Dropdown(
                list(SPACINGS), value=DEFAULTS.spacing, label="Timestep spacing", info="trailing: Lightning, Turbo"
            )
            loras = gr.Textbox(
                value="",
                lines=2,
                label="LoRAs",
                info=(
                    "NAME:WEIGHT, one per line; in --loras-dir: " + (", ".join(lora_names) or "none (start with it)")
                ),
            )
        option_groups, option_fields = {}, {}
        for owner in dict.fromkeys(METHOD_OPTIONS.values()):
            with gr.Row(visible=DEFAULTS.method == owner) as option_groups[owner]:
                for option in (name for name, its_owner in METHOD_OPTIONS.items() if its_owner == owner):
                    option_fields[option] = method_option_field(option)

    method.change(
        lambda chosen: [gr.update(visible=chosen == owner) for owner in option_groups],
        method,
        list(option_groups.values()),
        api_name=False,
        queue=False,
    )
    random_seed.click(lambda: -1, None, seed, api_name=False, queue=False)
    reuse_seed.click(lambda used: int(used) if used else -1, seed_used, seed, api_name=False, queue=False)
    return {
        "method": method,
        "scheduler": scheduler,
        "steps": steps,
        "guidance": guidance,
        "true_cfg": true_cfg,
        "strength": strength,
        "num_images": num_images,
        "seed": seed,
        "mask_grow": mask_grow,
        "mask_blur": mask_blur,
        "only_masked": only_masked,
        "crop_padding": crop_padding,
        "fill": fill,
        "color_match": color_match,
        "paste_back": paste_back,
        "spacing": spacing,
        "loras": loras,
        **option_fields,
    }
