"""The HTTP service (`inpaintkit serve`): a FastAPI app over one Inpainter, with a bounded queue and one worker.

Importing this package loads no web library, so the CLI works without the `serve` extra; `create_app` and
`serve` import FastAPI and uvicorn when first used.
"""

from __future__ import annotations

from typing import Any

from .config import ServiceConfig

__all__ = ["ServiceConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
