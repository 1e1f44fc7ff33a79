"""`inpaintkit ui`: load the model once, then serve the web UI with safe defaults until Ctrl-C or SIGTERM.

Nothing here imports gradio at module level: `launch` must point GRADIO_TEMP_DIR at the process's private cache before
gradio is imported, as some of gradio's modules read it once, on import.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Iterator

from starlette.middleware import Middleware

from ..errors import InputError
from ..listening import check_can_listen, is_loopback
from .limits import SessionUploadLimits

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger("inpaintkit")

CACHE_ENV = "GRADIO_TEMP_DIR"
UPLOAD_WINDOW_S = 7200  # as long as the cache keeps an upload (app.CACHE_CLEANUP): the limits bound what is on disk


def start(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_file_size_mb: int = 50,
    max_session_uploads: int = 1000,
    max_session_mb: int = 2000,
) -> str:
    """Serve the app in a background thread and return its URL; `demo.close()` stops it.

    Safe defaults: no public share link, uploads capped at `max_file_size_mb` each and at `max_session_uploads` files
    and `max_session_mb` megabytes per browser session (in any two hours), no files served beyond Gradio's cache (no
    allowed_paths), no monitoring endpoint, no MCP server, no progressive web app.
    """
    limits = Middleware(
        SessionUploadLimits, max_uploads=max_session_uploads, max_mb=max_session_mb, window_s=UPLOAD_WINDOW_S
    )
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
            app_kwargs={"middleware": [limits]},
        )
    except OSError as error:
        raise InputError(
            f"Cannot serve on {host}:{port} ({error.strerror or 'the port is in use'}); pass another --port or --host."
        ) from None
    return url


@contextlib.contextmanager
def private_cache() -> Iterator[str]:
    """Gradio's cache folder for this process: the user's GRADIO_TEMP_DIR if set (left in place: Gradio deletes the
    files it wrote there), else a new folder only this user can open (mkdtemp: mode 0700), removed at the end.

    Gradio's default, /tmp/gradio, is shared by every app on the machine: each would serve, and accept as input, the
    others' files, and delete them when it stops.
    """
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        yield chosen
        return
    folder = tempfile.mkdtemp(prefix="inpaintkit-ui-")
    os.environ[CACHE_ENV] = folder
    try:
        yield folder
    finally:
        if os.environ.get(CACHE_ENV) == folder:
            del os.environ[CACHE_ENV]
        shutil.rmtree(folder, ignore_errors=True)


def launch(arguments: argparse.Namespace) -> int:
    """Load the model (once: every job reuses it), serve the UI, and block until Ctrl-C or SIGTERM."""
    from ..model_arguments import inpainter_from_arguments, model_switching, warn_if_untrained

    check_can_listen(arguments.host, arguments.port)
    catalog, load_other = model_switching(arguments)  # a Model dropdown only with --models-dir
    exit_on_sigterm()  # during start-up (the model load takes long), so the private cache below is still removed
    with private_cache() as cache:
        from .app import build_app  # gradio is imported here, after GRADIO_TEMP_DIR is set

        inpainter = inpainter_from_arguments(arguments)  # the CLI's loading, speed options included
        warn_if_untrained(inpainter, arguments.model)
        demo = build_app(
            inpainter, model_name=str(arguments.model), max_queue=arguments.max_queue, catalog=catalog,
            load_model=load_other,
        )  # fmt: skip
        url = start(
            demo,
            host=arguments.host,
            port=arguments.port,
            max_file_size_mb=arguments.max_file_size,
            max_session_uploads=arguments.max_session_uploads,
            max_session_mb=arguments.max_session_mb,
        )
        if not is_loopback(arguments.host):
            log.warning(
                "The UI listens on %s: anyone who can reach this machine can use it (it has no login).", arguments.host
            )
        log.info("web UI at %s (Ctrl-C to stop); uploads and results are kept in %s until it stops", url, cache)
        serve_until_stopped(demo)
    return 0


def exit_on_sigterm() -> None:
    """SIGTERM ends the process through SystemExit(0), so `finally` blocks run (Python's default kills it outright);
    serve_until_stopped installs its own handler once the app serves."""
    if threading.current_thread() is threading.main_thread():  # only it may set signal handlers
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def serve_until_stopped(demo: gr.Blocks) -> None:
    """Block until Ctrl-C or SIGTERM, then stop running jobs and close the app (Gradio deletes the files it wrote)."""
    stopping = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set()) if in_main_thread else None
    try:
        while demo.is_running and not stopping.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        log.info("stopping the web UI")
        if getattr(demo, "jobs", None) is not None:
            demo.jobs.stop_all()  # a running job ends after its current step instead of holding the shutdown
        demo.close(verbose=False)
