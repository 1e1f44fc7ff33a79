"""The registry of inpainting methods. Adding a method: one module here, one line below, and its name and summary
in names.py (which --help reads without importing torch)."""

from __future__ import annotations

from ..errors import InputError
from ..models import Capabilities
from ..names import METHOD_NAMES  # light, for the CLI's --help; METHODS must list the same names
from .base import METHOD_OPTIONS, Method, flag
from .bld import BlendedLatentDiffusion
from .blend import Blend
from .lanpaint import LanPaint
from .latentpaint import LatentPaint
from .native import Native
from .repaint import RePaint
from .soft import Soft
from .tdpaint import TDPaint

METHODS: dict[str, Method] = {
    method.name: method
    for method in (Native(), Blend(), BlendedLatentDiffusion(), Soft(), RePaint(), TDPaint(), LatentPaint(), LanPaint())
}


def resolve_method(name: str, capabilities: Capabilities, settings) -> Method:
    """The method to run, checked against the checkpoint and settings; 'auto' is native for a 9-channel UNet, else
    blend.
    """
    if name == "auto":
        name = "native" if capabilities.inpainting_unet else "blend"
    if name not in METHODS:
        raise InputError(f"Unknown method '{name}'; choose one of: {', '.join(METHOD_NAMES)}.")
    method = METHODS[name]
    method.check(capabilities, settings)
    return method


__all__ = ["METHODS", "METHOD_NAMES", "METHOD_OPTIONS", "Method", "flag", "resolve_method"]
