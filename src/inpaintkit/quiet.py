"""diffusers' and transformers' loading bars, info lines and warnings off while inpaintkit loads or writes models.

The CLI turns them off for good; the Python API only around its own loading and saving, so an application
that embeds inpaintkit keeps its own settings for everything else (issue 13: the API printed diffusers'
loading bars and transformers' "requires torchvision" warnings on every load).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

NOISY_MODULES = "(diffusers|transformers|huggingface_hub|torch)"


def silence_libraries() -> Callable[[], None]:
    """Turn the libraries' output off; returns a function that puts the previous settings back."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    saved = [
        (library, library.get_verbosity(), library.is_progress_bar_enabled())
        for library in (diffusers_logging, transformers_logging)
    ]
    for library, _, _ in saved:
        library.set_verbosity_error()
        library.disable_progress_bar()

    def restore() -> None:
        for library, verbosity, progress_bar in saved:
            library.set_verbosity(verbosity)
            (library.enable_progress_bar if progress_bar else library.disable_progress_bar)()

    return restore


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """The libraries' output off for the block, their Python warnings too; everything as it was after."""
    restore = silence_libraries()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=NOISY_MODULES)
            yield
    finally:
        restore()


@contextlib.contextmanager
def errors_muted() -> Iterator[None]:
    """diffusers' and peft's own error lines off too, for a step whose failure inpaintkit reports in one sentence (a
    LoRA that does not fit: diffusers logs the whole size-mismatch dump at ERROR level before raising)."""
    import logging

    loggers = [logging.getLogger(name) for name in ("diffusers", "peft")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
