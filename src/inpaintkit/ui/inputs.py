"""The web UI's inputs checked before Gradio reads them: a wrong value is one sentence naming the API parameter.

Gradio's own checks (a slider's range, a dropdown's choices, the shape of a file) print a traceback on the server for
each ordinary mistake and, for a wrong type, tell the caller only that the app "has raised an exception". The browser
always sends well-formed values, so these messages are for API callers (gradio_client, raw HTTP): they name the
parameter as the API does (`steps`, `mask`).
"""

from __future__ import annotations

import html
import logging
import math
import re
from pathlib import Path
from typing import Any, Optional

import gradio as gr
from gradio.exceptions import ComponentProcessingError, InvalidPathError
from gradio_client.utils import is_valid_file

from ..errors import first_line, shown

log = logging.getLogger("inpaintkit")

NOT_UPLOADED = "A file in the request was not uploaded to this app; upload it first (gradio_client: handle_file(path))."
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"/]+/)+([^\s'\"/]+)")  # a message names the file, not the folder


class CheckedBlocks(gr.Blocks):
    """gr.Blocks whose event inputs are checked first: ordinary mistakes become one-sentence gr.Errors that Gradio
    shows without printing a traceback; `input_names` maps a component's id to the API parameter it is.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_names: dict[int, str] = {}
        self.jobs = None  # the Run/Stop handlers (jobs.InpaintJobs), so that stopping the server can stop their jobs

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        for block, value in zip(block_fn.inputs, inputs):
            problem = input_problem(block, value, self.input_name(block))
            if problem:
                raise user_error(problem)
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error as error:  # Gradio's own checks
            raise user_error(error.message) from None
        except InvalidPathError:  # a path sent as is (raw HTTP), not uploaded: its message would name the folder
            raise user_error(NOT_UPLOADED) from None
        except ComponentProcessingError as error:  # worded by _format_processing_error below
            raise user_error(str(error)) from None
        except Exception as error:  # e.g. fewer values than inputs, only possible through raw HTTP
            log.info("A request's values could not be read: %s: %s", type(error).__name__, first_line(error))
            raise user_error("The request's values could not be read; see the API page for what each takes.") from None

    def _format_processing_error(self, block_fn, index, block, value, is_input, original_error) -> str:
        """A component that could not read its (well-formed) value, e.g. an editor picture that is not an image."""
        if not is_input:  # our handlers' results: a bug, worth Gradio's full report
            return super()._format_processing_error(block_fn, index, block, value, is_input, original_error)
        return f"{self.input_name(block)} could not be read: {first_line(original_error)}."

    def input_name(self, block) -> str:
        return f"`{self.input_names[block._id]}`" if block._id in self.input_names else (block.label or "A value")


def user_error(message: str) -> gr.Error:
    """One line, paths reduced to file names, escaped (the browser shows it as HTML), no traceback on the server."""
    lines = str(message).strip().splitlines() or [type(message).__name__]
    text = ABSOLUTE_PATH.sub(r"\1", lines[0].strip())  # its own full stop, or a quoted value's "...", is kept
    return gr.Error(html.escape(text if text.endswith(".") else text + ".", quote=False), print_exception=False)


def input_problem(block, value: Any, name: str) -> Optional[str]:
    """Why `value` cannot be `block`'s input, in one sentence; None when Gradio and our handlers can take it."""
    if isinstance(block, (gr.Slider, gr.Number)):
        return number_problem(block, value, name)
    if isinstance(block, gr.Dropdown):
        choices = [choice for _, choice in block.choices]
        if block.multiselect or block.allow_custom_value or value in choices:
            return None
        return f"{name} must be one of {', '.join(map(str, choices))}; got {shown(value)}"
    if isinstance(block, gr.Checkbox):
        return None if isinstance(value, bool) else f"{name} must be true or false; got {shown(value)}"
    if isinstance(block, gr.Textbox):
        return None if value is None or isinstance(value, str) else f"{name} must be text; got {shown(value)}"
    if isinstance(block, gr.ImageEditor):
        return file_problem(
            block,
            value,
            f'{name} must be the editor\'s value, {{"background": a file, "layers": [files], "composite": a file or '
            f"null}} (gradio_client: handle_file(path) for each file); got {shown(value)}",
        )
    if isinstance(block, gr.File):
        return file_problem(
            block, value, f"{name} must be an uploaded file (gradio_client: handle_file(path)); got {shown(value)}"
        ) or file_type_problem(block, value, name)
    return None


def number_problem(block, value: Any, name: str) -> Optional[str]:
    """A Slider or Number value: a finite number (a Number may also be empty) within the component's range."""
    low, high = block.minimum, block.maximum
    bounds = (
        f" from {low:g} to {high:g}"
        if low is not None and high is not None
        else (f" of at least {low:g}" if low is not None else (f" of at most {high:g}" if high is not None else ""))
    )
    if value is None and isinstance(block, gr.Number):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{name} must be a number{bounds}; got {shown(value)}"
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{name} must be a number{bounds}; got {value:g}"
    return None


def file_problem(block, value: Any, message: str) -> Optional[str]:
    """A file component's value must have its data model's shape (a dict naming an uploaded file, or None)."""
    if value is None:
        return None
    try:
        block.data_model.model_validate(value, context={"validate_meta": True})
    except Exception:  # pydantic's ValidationError, and whatever a malformed value makes it raise
        return message
    return None


def file_type_problem(block, value: dict, name: str) -> Optional[str]:
    """The File component's own type check (file_types), said in one sentence before it raises with a traceback."""
    if value is None or not block.file_types:
        return None
    file_name = value.get("orig_name") or Path(str(value.get("path", ""))).name
    if is_valid_file(file_name, block.file_types):
        return None
    return f"{name} must be an image file (PNG, JPEG, WebP...); got {shown(file_name)}"
