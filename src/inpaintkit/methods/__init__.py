"""The registry of inpainting methods. Adding a method: one module here and one line below."""

from __future__ import annotations

from ..errors import InputError
from ..models import Capabilities
from .base import Method
from .blend import Blend
from .native import Native

METHODS: dict[str, Method] = {method.name: method for method in (Native(), Blend())}
METHOD_NAMES = ("auto", *METHODS)


def resolve_method(name: str, capabilities: Capabilities) -> Method:
    """The method to run; 'auto' is native for a 9-channel UNet and blend otherwise."""
    if name == "auto":
        name = "native" if capabilities.inpainting_unet else "blend"
    if name not in METHODS:
        raise InputError(f"Unknown method '{name}'; choose one of: {', '.join(METHOD_NAMES)}.")
    method = METHODS[name]
    method.check(capabilities)
    return method


__all__ = ["METHODS", "METHOD_NAMES", "Method", "resolve_method"]
