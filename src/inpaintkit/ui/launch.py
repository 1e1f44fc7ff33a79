"""`inpaintkit ui`: load the model once, then serve the web UI with safe defaults until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import socket

import gradio as gr

from ..errors import InputError
from .app import build_app

log = logging.getLogger("inpaintkit")


def start(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, max_file_size_mb: int = 50) -> str:
    """Serve the app in a background thread and return its URL; `demo.close()` stops it.

    Safe defaults: no public share link, uploads capped at `max_file_size_mb`, no files served beyond Gradio's own
    cache (no allowed_paths), no monitoring endpoint, no MCP server, no progressive web app.
    """
    try:
        _, url, _ = demo.launch(
            server_name=host, server_port=port, prevent_thread_lock=True, share=False, quiet=True, inbrowser=False,
            max_file_size=f"{max_file_size_mb}mb", ssr_mode=False, enable_monitoring=False, mcp_server=False, pwa=False,
            footer_links=["api", "settings"], show_error=False,
        )
    except OSError as error:
        raise InputError(f"Cannot serve on {host}:{port} ({error.strerror or 'the port is in use'}); pass another --port or --host.") from None
    return url


def check_can_listen(host: str, port: int) -> None:
    """Refuse an address this process cannot listen on before the (slow) model load, in one sentence."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
            probe.bind(address)
    except OSError as error:
        raise InputError(f"Cannot serve on {host}:{port} ({error.strerror or error}); pass another --port or --host.") from None


def launch(arguments: argparse.Namespace) -> int:
    """Load the model (once: every job reuses it), serve the UI, and block until Ctrl-C."""
    from ..cli import inpainter_from_arguments

    check_can_listen(arguments.host, arguments.port)
    inpainter = inpainter_from_arguments(arguments)  # the CLI's loading, speed options included
    if inpainter.capabilities.untrained:
        log.warning("Model %s is UNTRAINED (random weights, made by make-tiny-model): its outputs are noise.", arguments.model)
    demo = build_app(inpainter, model_name=str(arguments.model), max_queue=arguments.max_queue)
    url = start(demo, host=arguments.host, port=arguments.port, max_file_size_mb=arguments.max_file_size)
    if arguments.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("The UI listens on %s: anyone who can reach this machine can use it (it has no login).", arguments.host)
    log.info("web UI at %s (Ctrl-C to stop)", url)
    demo.block_thread()
    return 0
