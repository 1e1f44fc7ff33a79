"""The multipart form of POST /v1/inpaint: settings from text fields or one JSON field, and its OpenAPI schema.

Field names, kinds and defaults come from InpaintSettings and settings.FIELD_KINDS, so the service cannot drift
from the CLI and the Python API.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

from starlette.datastructures import FormData, UploadFile

from ..errors import InputError, shown
from ..fill import FILLS
from ..method_options import OPTIONS
from ..methods import METHOD_NAMES
from ..schedulers import SCHEDULER_NAMES, SPACINGS
from ..settings import FIELD_KINDS, KIND_NAMES, MAX_TEXT_LENGTH, OPTIONAL_FIELDS, InpaintSettings
from .errors import ServiceError

FILE_FIELDS = ("image", "mask")
SETTINGS_FIELD = "settings"  # one JSON object holding any of the settings, instead of (or beside) single fields
# The settings JSON's size in bytes. Every setting at its longest (two prompts of MAX_TEXT_LENGTH characters, up to
# 4 bytes each in UTF-8 or 6 as JSON escapes) would need more, but JSON escapes and far-off characters are rare in
# prompts, and 64 KiB bounds what json.loads and the tokenizer get: a 10 MB prompt took 101 s (issue 13).
MAX_SETTINGS_BYTES = 64 * 1024
CHOICES = {
    "method": METHOD_NAMES,
    "scheduler": SCHEDULER_NAMES,
    "spacing": SPACINGS,
    "fill": FILLS,
    **{option.name: option.choices for option in OPTIONS if option.choices},
}
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_boolean(text: str) -> bool:
    word = text.lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(text)


# Python's int() and float() also take "1_0" and non-ASCII digits ("٣"); a form field is a plain decimal number.
WHOLE = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


def parse_whole(text: str) -> int:
    if not WHOLE.fullmatch(text):
        raise ValueError(text)
    return int(text)


def parse_number(text: str) -> float:
    if not NUMBER.fullmatch(text):  # nan and inf pass, to be refused by the settings' own check with its sentence
        raise ValueError(text)
    return float(text)


def parse_texts(text: str) -> tuple[str, ...]:
    """A list as one form field: comma-separated (LoRAs: `a.safetensors:0.8, b.safetensors`)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


PARSERS = {
    "text": str, "number": parse_number, "whole": parse_whole, "boolean": parse_boolean, "texts": parse_texts
}  # fmt: skip


def settings_from_form(form: FormData) -> InpaintSettings:
    """InpaintSettings from the form's text fields and its `settings` JSON field; each bad value is a 422 naming it."""
    options = json_settings(form)
    for name, value in form.multi_items():
        if name in FILE_FIELDS or name == SETTINGS_FIELD:
            continue
        if name in options:
            raise ServiceError(400, f"Setting {name} is given more than once (as a field or in the settings JSON).")
        options[name] = field_value(name, value)
    try:
        return InpaintSettings.from_options(**options)
    except InputError as error:
        raise ServiceError(422, str(error)) from None


def field_value(name: str, value: str | UploadFile) -> Any:
    """A form field's text converted to its setting's kind; an unknown name is left for from_options to name."""
    if not isinstance(value, str):
        raise ServiceError(400, f"Form field {name} must be a text field, not a file.")
    if len(value) > MAX_TEXT_LENGTH:  # before any conversion (or tokenizing) sees it
        raise ServiceError(
            422, f"Form field {name} is {len(value):,} characters long, more than the limit of {MAX_TEXT_LENGTH:,}."
        )
    kind = FIELD_KINDS.get(name)
    if not value.strip() and name in OPTIONAL_FIELDS:
        return None  # an empty optional field (as HTML forms send) means the default
    if kind is None or kind == "text":
        return value
    try:
        return PARSERS[kind](value.strip())
    except ValueError:
        raise ServiceError(422, f"Setting {name} must be {KIND_NAMES[kind]}, got {shown(value)}.") from None


def json_settings(form: FormData) -> dict[str, Any]:
    """The `settings` field as a dict: JSON values keep their JSON types, which InpaintSettings checks."""
    values = form.getlist(SETTINGS_FIELD)
    if not values:
        return {}
    if len(values) > 1:
        raise ServiceError(400, "The settings field is given more than once.")
    text = settings_bytes(values[0])
    try:
        options = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ServiceError(400, f"The settings field is not valid JSON ({error}).") from None
    if not isinstance(options, dict):
        raise ServiceError(400, f"The settings field must be a JSON object, got {type(options).__name__}.")
    return options


def settings_bytes(value: str | UploadFile) -> bytes:
    """The settings field's bytes, as text or as a file part, refused (422) above MAX_SETTINGS_BYTES before parsing.

    A file part is read only up to one byte past the limit; a text part arrives decoded (the multipart parser caps it
    at 1 MiB), so its UTF-8 length is what is measured."""
    data = value.encode() if isinstance(value, str) else value.file.read(MAX_SETTINGS_BYTES + 1)
    if len(data) > MAX_SETTINGS_BYTES:
        size = f" ({len(data):,} bytes)" if isinstance(value, str) else ""
        raise ServiceError(
            422, f"The settings field{size} is larger than the limit of {MAX_SETTINGS_BYTES:,} bytes (64 KiB)."
        )
    return data


def uploaded_file(form: FormData, name: str) -> bytes | None:
    """A file field's bytes, or None when it is absent (a browser's empty 'no file chosen' part counts as absent)."""
    values = form.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise ServiceError(400, f"The {name} field is given more than once.")
    value = values[0]
    if isinstance(value, str):
        raise ServiceError(
            400, f"The {name} must be sent as a file part (multipart/form-data with a filename), not as a text field."
        )
    data = value.file.read()
    return None if not data and not value.filename else data


KIND_SCHEMAS = {
    "text": {"type": "string"},
    "number": {"type": "number"},
    "whole": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "texts": {"type": "string", "description": "comma-separated; in the settings JSON, a list"},
}


def request_body_schema() -> dict[str, Any]:
    """The OpenAPI requestBody of POST /v1/inpaint, built from InpaintSettings' fields."""
    properties: dict[str, Any] = {
        "image": {
            "type": "string",
            "format": "binary",
            "description": "PNG, JPEG or WebP; without a mask, its alpha is the mask (transparent = repaint)",
        },
        "mask": {"type": "string", "format": "binary", "description": "white (>= 128) = repaint; the image's size"},
        SETTINGS_FIELD: {
            "type": "string",
            "description": "a JSON object with any of the settings below (instead of separate fields)",
        },
    }
    for field in fields(InpaintSettings):
        schema = dict(KIND_SCHEMAS[FIELD_KINDS[field.name]])
        if field.default is not None and FIELD_KINDS[field.name] != "texts":
            schema["default"] = field.default
        if field.name in CHOICES:
            schema["enum"] = list(CHOICES[field.name])
        properties[field.name] = schema
    form_schema = {"type": "object", "required": ["image"], "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": form_schema}}}
