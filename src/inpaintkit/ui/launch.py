"""`inpaintkit ui`: load the model once, then serve the web UI with safe defaults until Ctrl-C."""

from __future__ import annotations

import argparse
import logging

import gradio as gr

from ..errors import InputError
from ..listening import check_can_listen, is_loopback
from .app import build_app

log = logging.getLogger("inpaintkit")


def start(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, max_file_size_mb: int = 50) -> str:
    """Serve the app in a background thread and return its URL; `demo.close()` stops it.

    Safe defaults: no public share link, uploads capped at `max_file_size_mb`, no files served beyond Gradio's own
    cache (no allowed_paths), no monitoring endpoint, no MCP server, no progressive web app.
    """
    try:
        _, url, _ = demo.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            share=False,
            quiet=True,
            inbrowser=False,
            max_file_size=f"{max_file_size_mb}mb",
            ssr_mode=False,
            enable_monitoring=False,
            mcp_server=False,
            pwa=False,
            footer_links=["api", "settings"],
            show_error=False,
        )
    except OSError as error:
        raise InputError(
            f"Cannot serve on {host}:{port} ({error.strerror or 'the port is in use'}); pass another --port or --host."
        ) from None
    return url


def launch(arguments: argparse.Namespace) -> int:
    """Load the model (once: every job reuses it), serve the UI, and block until Ctrl-C."""
    from ..cli import inpainter_from_arguments, warn_if_untrained

    check_can_listen(arguments.host, arguments.port)
    inpainter = inpainter_from_arguments(arguments)  # the CLI's loading, speed options included
    warn_if_untrained(inpainter, arguments.model)
    demo = build_app(inpainter, model_name=str(arguments.model), max_queue=arguments.max_queue)
    url = start(demo, host=arguments.host, port=arguments.port, max_file_size_mb=arguments.max_file_size)
    if not is_loopback(arguments.host):
        log.warning(
            "The UI listens on %s: anyone who can reach this machine can use it (it has no login).", arguments.host
        )
    log.info("web UI at %s (Ctrl-C to stop)", url)
    demo.block_thread()
    return 0
