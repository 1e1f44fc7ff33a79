"""Errors a user can cause. Front ends turn them into one sentence (CLI exit 2, HTTP 4xx)."""


class InputError(ValueError):
    """A file, parameter or model the user gave cannot be used; the message says why in one sentence."""


class Cancelled(RuntimeError):
    """The job was stopped: between two denoising steps (the progress callback returned False), or where
    `should_stop` is polled (before each text-encoder and VAE call, in bld's optimisation; stopping.py)."""


QUOTED_CHARACTERS = 40  # how much of a bad value a message quotes: enough to recognise it, never an echo


def shown(value: object) -> str:
    """The value's repr for a message, cut short: a message quotes a value, it does not echo 10,000 characters."""
    text = repr(value)
    return text if len(text) <= QUOTED_CHARACTERS else text[: QUOTED_CHARACTERS - 3] + "..."


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line, without a trailing full stop, for one-sentence errors."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].rstrip(".")
