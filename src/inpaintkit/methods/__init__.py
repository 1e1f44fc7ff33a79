"""The registry of inpainting methods. Adding a method: one module here and one line below."""

from __future__ import annotations

from ..errors import InputError
from ..models import Capabilities
from .base import METHOD_OPTIONS, Method, flag
from .blend import Blend
from .bld import BlendedLatentDiffusion
from .native import Native
from .repaint import RePaint
from .soft import Soft
from .tdpaint import TDPaint

METHODS: dict[str, Method] = {
    method.name: method for method in (Native(), Blend(), BlendedLatentDiffusion(), Soft(), RePaint(), TDPaint())
}
METHOD_NAMES = ("auto", *METHODS)


def resolve_method(name: str, capabilities: Capabilities, settings) -> Method:
    """The method to run, checked against the checkpoint and settings; 'auto' is native for a 9-channel UNet, else blend."""
    if name == "auto":
        name = "native" if capabilities.inpainting_unet else "blend"
    if name not in METHODS:
        raise InputError(f"Unknown method '{name}'; choose one of: {', '.join(METHOD_NAMES)}.")
    method = METHODS[name]
    method.check(capabilities, settings)
    return method


__all__ = ["METHODS", "METHOD_NAMES", "METHOD_OPTIONS", "Method", "flag", "resolve_method"]
