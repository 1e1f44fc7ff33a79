"""inpaintkit: text-guided image inpainting with latent diffusion models."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import Cancelled, InputError

__version__ = "0.1.0"

__all__ = ["Cancelled", "Inpainter", "InpaintSettings", "InputError", "__version__"]

# Inpainter imports torch and diffusers (seconds), InpaintSettings numpy and OpenCV. Every submodule import,
# `inpaintkit --help` included, runs this file first, so these two load on first use (PEP 562) instead.
_LAZY = {"Inpainter": ".inpainter", "InpaintSettings": ".settings"}

if TYPE_CHECKING:  # for type checkers and IDEs, which do not run __getattr__
    from .inpainter import Inpainter
    from .settings import InpaintSettings


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
