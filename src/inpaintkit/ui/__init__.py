"""The Gradio web UI (`inpaintkit ui`): upload an image, paint the mask, type a prompt, Run."""

from .app import build_app
from .launch import launch, start

__all__ = ["build_app", "launch", "start"]
