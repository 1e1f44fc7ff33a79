"""A1111's settings ("options"): the ones this service reports, and which values a client may set.

GET /sdapi/v1/options answers these; POST /sdapi/v1/options and a request's override_settings may only confirm them
(the loaded model by its title, the values below): anything else is a setting this service cannot honour, a 422 in
one sentence, where A1111 would change its global state for every later request.
"""

from __future__ import annotations

from typing import Any

from ..errors import ServiceError

FIXED_OPTIONS: dict[str, Any] = {
    "sd_vae": "Automatic",
    "samples_format": "png",
    "enable_pnginfo": True,
    "CLIP_stop_at_last_layers": 1,
    "img2img_color_correction": False,  # openOutpaint offers to change these two if they differ
    "inpainting_mask_weight": 1.0,
    "img2img_background_color": "#ffffff",
    "initial_noise_multiplier": 1.0,
    "eta_noise_seed_delta": 0,
    "sd_checkpoint_hash": None,
}


def model_title(model_name: str) -> str:
    """The loaded model as /sd-models and sd_model_checkpoint name it."""
    return model_name


def options_for(model_name: str) -> dict[str, Any]:
    return {"sd_model_checkpoint": model_title(model_name), **FIXED_OPTIONS}


def check_options(options: Any, model_name: str, what: str = "options") -> None:
    """Refuse (422) settings this service cannot honour; the ones it already has are accepted and change nothing."""
    if not isinstance(options, dict):
        raise ServiceError(422, f"{what} must be a JSON object of setting names and values.")
    current = options_for(model_name)
    for key, value in options.items():
        if key == "sd_model_checkpoint":
            if not names_model(value, model_name):
                raise ServiceError(
                    422,
                    f"{what}: sd_model_checkpoint {value!r} is not loaded; this service runs one model, "
                    f"{model_title(model_name)!r}.",
                )
        elif key not in current:
            raise ServiceError(
                422,
                f"{what}: {key!r} is not a setting this service can change (it can confirm: {', '.join(current)}).",
            )
        elif value != current[key]:
            raise ServiceError(
                422, f"{what}: {key} is {current[key]!r} on this service and cannot be set to {value!r}."
            )


def names_model(value: Any, model_name: str) -> bool:
    """A title, with or without A1111's ' [hash]' suffix, or the folder/file name alone."""
    if not isinstance(value, str):
        return False
    title = value.split(" [")[0].strip()
    return title in (model_name, model_name.rstrip("/").split("/")[-1])
