"""`inpaintkit serve`: the app under uvicorn, with a graceful SIGTERM and JSON-line logs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import threading
from typing import Iterator

import uvicorn

from ..errors import InputError, first_line
from ..inpainter import Inpainter
from ..listening import check_can_listen, is_loopback
from ..model_arguments import inpainter_from_arguments, model_switching, warn_if_untrained
from .app import create_app
from .config import MIB, ServiceConfig, parse_api_auth
from .logs import JsonLineFormatter, StderrHandler
from .worker import InferenceWorker

API_KEY_VARIABLE = "INPAINTKIT_API_KEY"
log = logging.getLogger("inpaintkit.server")


class GracefulServer(uvicorn.Server):
    """On SIGTERM or Ctrl-C: stop taking jobs, answer the queued ones 503, let the running one finish, exit 0.

    uvicorn itself re-raises the caught signal after its graceful shutdown, which would end the process with
    -SIGTERM; a graceful stop is a normal exit here, so the handlers are installed without that step.
    """

    def __init__(self, config: uvicorn.Config, worker: InferenceWorker):
        super().__init__(config)
        self.worker = worker

    def handle_exit(self, sig: int, frame) -> None:
        self.worker.close()  # signal-safe: one attribute write
        try:  # the queued jobs are answered 503 at once, by the event loop, not inside the handler
            asyncio.get_running_loop().call_soon_threadsafe(self.worker.reject_waiting)
        except RuntimeError:  # no loop runs yet (still starting): nothing can be queued
            pass
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(arguments: argparse.Namespace) -> int:
    """Run the service until SIGTERM/Ctrl-C (exit 0); a model that fails to load ends it with exit code 2."""
    config = config_from_arguments(arguments)
    check_can_listen(arguments.host, arguments.port)  # else uvicorn reports it in its own words, after the load began
    catalog, load_other = model_switching(arguments)  # switching only with --models-dir
    configure_logging()
    if config.api_key is None and not is_loopback(arguments.host):
        log.warning(
            "listening on %s without an API key: anyone who can reach this port can use the model; set %s",
            arguments.host,
            API_KEY_VARIABLE,
        )
    if config.api_auth and config.api_key is None:
        log.warning("--api-auth guards the AUTOMATIC1111 routes only; /v1 stays open without --api-key")
    server: GracefulServer

    def load() -> Inpainter:
        try:
            inpainter = inpainter_from_arguments(arguments)  # the CLI's loading, speed options included
        except BaseException:
            server.should_exit = True  # nothing to serve: stop, and report the reason below
            raise
        warn_if_untrained(inpainter, arguments.model)
        return inpainter

    app = create_app(
        load, config, model_name=arguments.model, catalog=catalog, load_model=load_other,
        keep_models=getattr(arguments, "keep_models", 1),
    )  # fmt: skip
    uvicorn_config = uvicorn.Config(
        app,
        host=arguments.host,
        port=arguments.port,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=config.timeout + 5,
    )
    server = GracefulServer(uvicorn_config, app.state.worker)
    server.run()
    error = app.state.worker.load_error
    if error is not None:
        raise (
            error
            if isinstance(error, InputError)
            else InputError(f"The model could not be loaded ({first_line(error)}).")
        )
    return 0


def config_from_arguments(arguments: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig(
        max_queue=arguments.max_queue,
        max_pixels=arguments.max_pixels,
        max_body=round(arguments.max_body * MIB),
        timeout=arguments.timeout,
        max_images=arguments.max_images,
        max_steps=arguments.max_steps,
        api_key=api_key_from(arguments),
        api_auth=parse_api_auth(arguments.api_auth),
        cors_allow_origins=tuple(o.strip() for o in (arguments.cors_allow_origins or "").split(",") if o.strip()),
    )


def api_key_from(arguments: argparse.Namespace) -> str | None:
    """--api-key as given (an empty one is refused by ServiceConfig), else the variable; a variable set empty means
    none.
    """
    return arguments.api_key if arguments.api_key is not None else os.environ.get(API_KEY_VARIABLE) or None


def configure_logging() -> None:
    """The service's own lines (one per request, and its events) as JSON on stderr; uvicorn keeps its startup lines."""
    handler = StderrHandler()
    handler.setFormatter(JsonLineFormatter())
    for name in ("inpaintkit.server", "inpaintkit.server.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler] if name == "inpaintkit.server" else []
        logger.setLevel(logging.INFO)
    logging.getLogger("inpaintkit.server").propagate = False
    # python-multipart logs a malformed body's details itself; the request's own line already says 400 and why.
    for name in ("python_multipart", "multipart"):
        logging.getLogger(name).handlers[:] = [handler]
        logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger(name).propagate = False
