"""The Gradio web UI (`inpaintkit ui`): upload an image, paint the mask, type a prompt, Run."""

from __future__ import annotations

from typing import Any

from .launch import launch, start  # imports no gradio, so `inpaintkit ui` can set its cache folder first

__all__ = ["build_app", "launch", "start"]


def __getattr__(name: str) -> Any:
    # build_app imports gradio, so it is loaded on first use, not with the package.
    if name == "build_app":
        from .app import build_app

        return build_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
