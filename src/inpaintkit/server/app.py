"""The FastAPI app: routes, API key, error replies; the work itself is Inpainter's, run by the worker."""

from __future__ import annotations

import base64
import hmac
import io
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, Callable, Optional

import anyio
import numpy as np
from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import InputError
from ..inpainter import Inpainter
from ..io import load_image_and_mask, png_metadata
from ..methods import METHODS
from ..schedulers import SCHEDULER_NAMES
from ..settings import MAX_TEXT_LENGTH, InpaintSettings
from .a1111.routes import PREFIX as A1111_PREFIX
from .a1111.routes import add_a1111_routes
from .admission import model_pixels, not_ready, require_fits_deadline, require_step_budget, switch, wait_for
from .config import ServiceConfig
from .errors import ServiceError
from .forms import MAX_SETTINGS_BYTES, request_body_schema, settings_from_form, uploaded_file
from .limits import decode_image, read_body
from .logs import AccessLog
from .metrics import ServiceMetrics
from .worker import InferenceWorker, Job, job_cost

log = logging.getLogger("inpaintkit.server")


class ErrorBody(BaseModel):
    error: str


class InpaintResult(BaseModel):
    images: list[str]  # base64 PNGs, each with its settings in the PNG's metadata
    seeds: list[int]  # image k's seed
    seed: int  # the first image's seed
    settings: dict[str, Any]  # the first image's settings, as stored in its metadata


class Status(BaseModel):
    status: str  # alive; or ready, busy (a job runs), stuck, loading, failed, closing
    queued: Optional[int] = None  # jobs waiting for the worker (a cancelled one no longer counts)
    running_s: Optional[float] = None  # busy or stuck: how long the running job has run
    error: Optional[str] = None


class ModelInfo(BaseModel):
    id: str
    ready: bool
    untrained: Optional[bool] = None
    device: Optional[str] = None
    dtype: Optional[str] = None
    capabilities: Optional[dict[str, Any]] = None


class MethodInfo(BaseModel):
    name: str
    summary: str
    options: dict[str, Any]  # this method's options and their defaults
    trained_parts: Optional[str] = None  # a trained part loaded with the model (latentpaint's propagation file)


class ModelChoice(BaseModel):
    model: str  # a name from /v1/models' available_models


class ModelsResult(BaseModel):
    models: list[ModelInfo]
    methods: list[MethodInfo]
    schedulers: list[str]
    loras: list[str]  # the LoRA files a request may name (--loras-dir)
    available_models: list[str]  # what POST /v1/model may switch to (--models-dir, the Hugging Face cache)
    defaults: dict[str, Any]  # every setting and its default
    limits: dict[str, Any]


def create_app(
    inpainter: Inpainter | Callable[[], Inpainter],
    config: ServiceConfig = ServiceConfig(),
    model_name: Optional[str] = None,
    catalog=None,
    load_model: Optional[Callable[[str], Inpainter]] = None,
    keep_models: int = 1,
) -> FastAPI:
    """The service over a loaded Inpainter, or over a loader the worker thread calls at startup (see /readyz).
    `catalog` (catalog.ModelCatalog) and `load_model` let clients switch models (POST /v1/model, A1111's options)."""
    model_name = model_name or (inpainter.components.name if isinstance(inpainter, Inpainter) else "model")
    worker = InferenceWorker(inpainter, config.max_queue, model_name, catalog, load_model, keep_models)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await anyio.to_thread.run_sync(worker.stop, config.timeout)

    app = FastAPI(
        title="inpaintkit",
        version=__version__,
        lifespan=lifespan,
        description=(
            "Text-guided image inpainting. POST an image, a mask and settings to /v1/inpaint; see the README's HTTP "
            "service section."
        ),
    )
    app.state.worker, app.state.config = worker, config
    app.add_middleware(UnexpectedErrors)
    if config.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(config.cors_allow_origins), allow_methods=["*"], allow_headers=["*"]
        )
    metrics = ServiceMetrics(worker)
    app.state.metrics = metrics
    # added last, so it runs first: it also logs (and counts) UnexpectedErrors' 500
    app.add_middleware(AccessLog, on_request=metrics.record)
    add_error_handlers(app)
    guarded = [Security(require_api_key)] if config.api_key else []
    errors = {status: {"model": ErrorBody} for status in (400, 406, 408, 413, 415, 422, 429, 503, 504)}
    if config.api_key:
        errors[401] = {"model": ErrorBody}

    @app.get("/healthz", response_model=Status, response_model_exclude_none=True, summary="Alive (the process answers)")
    async def healthz() -> Status:
        return Status(status="alive")

    @app.get(
        "/readyz",
        response_model=Status,
        responses={503: {"model": Status}},
        summary="Ready (the model is loaded and jobs are taken)",
    )
    async def readyz():
        status = readiness(worker)
        ready = status.status in ("ready", "busy")
        return JSONResponse(status.model_dump(exclude_none=True), status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics: queue, jobs by outcome, job and wait seconds, model load, GPU")
    async def prometheus_metrics() -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/models",
        response_model=ModelsResult,
        dependencies=guarded,
        responses={401: {"model": ErrorBody}} if config.api_key else {},
    )
    async def models() -> ModelsResult:
        # In a thread: the first listing scans the Hugging Face cache, which must not hold up other requests.
        return await anyio.to_thread.run_sync(describe_service, worker, config)

    @app.post(
        "/v1/model",
        response_model=ModelsResult,
        dependencies=guarded,
        summary="Switch the model (a queued job: jobs sent before it finish on the old one)",
    )
    async def switch_model(request: Request, choice: ModelChoice) -> ModelsResult:
        await switch(request, worker, config, choice.model)
        return await anyio.to_thread.run_sync(describe_service, worker, config)

    @app.post(
        "/v1/inpaint",
        dependencies=guarded,
        openapi_extra={"requestBody": request_body_schema()},
        summary="Inpaint an image",
        description="Returns the PNG with `Accept: image/png`, else JSON with base64 PNGs, seeds and settings.",
        responses={
            200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}, "model": InpaintResult},
            **errors,
        },
    )
    async def inpaint(request: Request) -> Response:
        deadline = time.monotonic() + config.timeout
        require_multipart(request)
        png_wanted = wants_png(request.headers.get("accept", ""))
        try:
            with anyio.fail_after(config.timeout):
                body = await read_body(request, config.max_body)
        except TimeoutError:
            raise ServiceError(408, f"The request body did not arrive within {config.timeout:g} s.") from None
        form = await parse_form(request, body)
        try:
            pixels, mask_values, settings, cost = await anyio.to_thread.run_sync(
                prepare_job, worker, config, form, png_wanted
            )
        finally:
            await form.close()
        job = Job(pixels, mask_values, settings, deadline, config.timeout, cost)
        try:
            worker.submit(job)
            images = await wait_for(job, request, worker)
        finally:
            request.state.log.update(job.timings())
        return await anyio.to_thread.run_sync(render, images, png_wanted)

    a1111_guarded = [Security(require_a1111_credentials)] if config.api_key or config.api_auth else []
    a1111 = add_a1111_routes(app, worker, config, a1111_guarded)
    metrics.known_paths |= {route.path for route in (*app.routes, *a1111.routes) if hasattr(route, "path")}
    return app


async def require_api_key(
    request: Request,
    key: Optional[str] = Security(APIKeyHeader(name="X-API-Key", auto_error=False)),
    bearer: Optional[HTTPAuthorizationCredentials] = Security(HTTPBearer(auto_error=False)),
) -> None:
    """The configured key, from X-API-Key or Authorization: Bearer, compared in constant time."""
    given = key or (bearer.credentials if bearer else None)
    expected = request.app.state.config.api_key
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ServiceError(
            401,
            "A valid API key is required: send it as the X-API-Key header or Authorization: Bearer KEY.",
            {"WWW-Authenticate": "Bearer"},
        )


async def require_a1111_credentials(
    request: Request,
    key: Optional[str] = Security(APIKeyHeader(name="X-API-Key", auto_error=False)),
    basic: Optional[HTTPBasicCredentials] = Security(HTTPBasic(auto_error=False)),
) -> None:
    """The A1111 routes take HTTP Basic (--api-auth, as A1111 clients send it) or the service's key (X-API-Key, or
    Authorization: Bearer); every comparison in constant time."""
    config = request.app.state.config
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
    given_key = key or bearer
    if config.api_key and given_key is not None and hmac.compare_digest(given_key.encode(), config.api_key.encode()):
        return
    if basic is not None and any(
        hmac.compare_digest(basic.username.encode(), user.encode())
        & hmac.compare_digest(basic.password.encode(), password.encode())
        for user, password in config.api_auth
    ):
        return
    accepted = " or ".join(
        way
        for way, configured in (
            ("HTTP Basic credentials (--api-auth)", config.api_auth),
            ("the API key (X-API-Key, or Authorization: Bearer)", config.api_key),
        )
        if configured
    )
    challenge = "Basic" if config.api_auth else "Bearer"  # Basic makes a browser ask for a user and password
    raise ServiceError(401, f"Authentication is required: send {accepted}.", {"WWW-Authenticate": challenge})


def require_multipart(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise ServiceError(
            415,
            "Send multipart/form-data with an image file field, "
            f"not {content_type or 'a body without a Content-Type'}.",
        )


def wants_png(accept: str) -> bool:
    """PNG when Accept names image/png before any application/json; JSON otherwise (also for */* or none)."""
    media_types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if "image/png" not in media_types:
        return False
    return "application/json" not in media_types or media_types.index("image/png") < media_types.index(
        "application/json"
    )


async def parse_form(request: Request, body: bytes) -> FormData:
    """Parse the (already size-checked) body as multipart."""

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=3, max_fields=64)
    except HTTPException as error:  # Starlette's multipart errors: malformed body, too many parts, a huge field
        raise ServiceError(400, f"The multipart body could not be parsed ({error.detail}).") from None
    if not has_closing_boundary(request.headers["content-type"], body):
        await form.close()
        raise ServiceError(400, "The multipart body ends before its closing boundary.")
    return form


def has_closing_boundary(content_type: str, body: bytes) -> bool:
    """Whether the body holds its close delimiter (RFC 2046: CRLF "--" boundary "--").

    The multipart parser accepts a body cut short and silently drops its unfinished last part (a truncated upload
    would then run with a setting or the mask missing), so the end is checked here."""
    boundary = parse_options_header(content_type)[1].get(b"boundary", b"")
    close = b"--" + boundary + b"--"
    return body.startswith(close) or b"\r\n" + close in body


def prepare_job(
    worker: InferenceWorker, config: ServiceConfig, form: FormData, png_wanted: bool
) -> tuple[np.ndarray, np.ndarray, InpaintSettings, float]:
    """Everything checked before the job may queue, cheapest first: settings and their cost, images (limits first),
    the CLI's own checks, then whether the job can finish within its deadline.

    Returns the pixels and mask as the CLI loads them, so the model's thread does not decode them again, and the
    job's cost (worker.job_cost)."""
    settings = settings_from_form(form)
    if settings.num_images > config.max_images:
        raise ServiceError(
            422,
            f"This service makes at most {config.max_images} images per request, got num_images {settings.num_images}.",
        )
    if png_wanted and settings.num_images > 1:
        raise ServiceError(406, "Accept: image/png returns one image; ask for application/json to get several.")
    inpainter = worker.inpainter
    if inpainter is None or worker.state != "ready":
        raise not_ready(worker)
    try:
        method = inpainter.check(settings)  # a method or scheduler this model cannot run, unbounded work
    except InputError as error:
        raise ServiceError(422, str(error)) from None
    calls = require_step_budget(method, settings, config.max_steps)
    image_bytes = uploaded_file(form, "image")
    if image_bytes is None:
        raise ServiceError(400, "The image file field is missing.")
    mask_bytes = uploaded_file(form, "mask")
    image = decode_image(image_bytes, "image", config.max_pixels)
    mask = None if mask_bytes is None else decode_image(mask_bytes, "mask", config.max_pixels)
    try:
        pixels, mask_values = load_image_and_mask(image, mask)  # mask size, alpha as the mask: the CLI's checks
    except InputError as error:
        raise ServiceError(422, str(error)) from None
    pixel_count = model_pixels(pixels.shape, settings, inpainter.components.capabilities.native_size)
    cost = job_cost(calls, settings.num_images, pixel_count)
    require_fits_deadline(worker, cost, config.timeout)
    return pixels, mask_values, settings, cost


def readiness(worker: InferenceWorker) -> Status:
    """ready, or busy while a job runs; stuck (an orchestrator should restart the service) when the running job is
    past its deadline by stuck_margin; else the worker's state (loading, failed, closing)."""
    state = worker.state
    if state != "ready":
        return Status(
            status=state, queued=worker.queued, error=None if worker.load_error is None else str(worker.load_error)
        )
    job = worker.running
    started = None if job is None else job.started_at
    if started is None:
        return Status(status="ready", queued=worker.queued)
    now = worker.clock()
    running_s = round(now - started, 3)
    overdue = now - job.deadline
    if overdue > stuck_margin(job.timeout):
        return Status(
            status="stuck",
            queued=worker.queued,
            running_s=running_s,
            error=f"The running job is {overdue:,.0f} s past its deadline and has not stopped; restart the service.",
        )
    return Status(status="busy", queued=worker.queued, running_s=running_s)


def stuck_margin(timeout: float) -> float:
    """How far past its deadline a running job may be before /readyz reports the service stuck.

    A job past its deadline stops at its next should_stop poll, and polls are one unit of work apart: a denoising step,
    a VAE tile, a step of bld's decoder optimisation. On a CPU one unit of a large image takes seconds to tens of
    seconds, so a margin under 30 s could restart a healthy, slow service. A service given a long timeout is one whose
    jobs (and units) are slow, so the margin grows with it: half the timeout once that is over 60 s."""
    return max(30.0, 0.5 * timeout)


def render(images: list[Image.Image], png_wanted: bool) -> Response:
    parameters = [each.info["inpaintkit"] for each in images]
    seeds = [each["seed"] for each in parameters]
    if png_wanted:
        return Response(png_bytes(images[0]), media_type="image/png", headers={"X-Inpaintkit-Seed": str(seeds[0])})
    encoded = [base64.b64encode(png_bytes(each)).decode("ascii") for each in images]
    return JSONResponse(InpaintResult(images=encoded, seeds=seeds, seed=seeds[0], settings=parameters[0]).model_dump())


def png_bytes(image: Image.Image) -> bytes:
    """The PNG with its settings in the metadata, as `inpaintkit run` writes it."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_metadata(image.info["inpaintkit"]))
    return buffer.getvalue()


def describe_service(worker: InferenceWorker, config: ServiceConfig) -> ModelsResult:
    inpainter = worker.inpainter
    model = ModelInfo(id=worker.model_name, ready=worker.state == "ready")
    if inpainter is not None:
        components = inpainter.components
        model = model.model_copy(
            update={
                "untrained": components.capabilities.untrained,
                "device": str(components.device),
                "dtype": str(components.dtype).removeprefix("torch."),
                "capabilities": components.capabilities.describe(),
            }
        )
    return ModelsResult(
        models=[model],
        methods=[
            MethodInfo(
                name=method.name,
                summary=method.summary,
                options=dict(method.defaults),
                trained_parts=trained_parts(inpainter, method.name),
            )
            for method in METHODS.values()
        ],
        schedulers=list(SCHEDULER_NAMES),
        loras=[] if inpainter is None else inpainter.loras.available(),
        available_models=[] if worker.catalog is None else worker.catalog.names(),
        # the loaded model family's guidance, which an unset one becomes (None while no model is loaded)
        defaults=(
            InpaintSettings()
            if inpainter is None
            else components.family.settled(InpaintSettings(), components.capabilities)
        ).as_dict(),
        limits={
            "max_queue": config.max_queue,
            "max_pixels": config.max_pixels,
            "max_body": config.max_body,
            "timeout_s": config.timeout,
            "max_images": config.max_images,
            "max_steps": config.max_steps,
            "max_text_length": MAX_TEXT_LENGTH,
            "max_settings_bytes": MAX_SETTINGS_BYTES,
        },
    )


def trained_parts(inpainter: Optional[Inpainter], method: str) -> Optional[str]:
    weights = None if inpainter is None else inpainter.components.method_weights.get(method)
    return None if weights is None else weights.source


def add_error_handlers(app: FastAPI) -> None:
    """Every error is `{"error": "..."}` with its status, and its message goes into the request's log line."""

    def reply(request: Request, status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
        request.state.log["error"] = message
        return JSONResponse(error_body(request.url.path, status, message), status_code=status, headers=headers)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError):
        return reply(request, error.status, error.message, error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return reply(request, error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {"msg": "invalid request"}
        return reply(
            request, 422, f"{' '.join(str(part) for part in first.get('loc', ()))}: {first['msg']}".strip(": ")
        )


def error_body(path: str, status: int, message: str) -> dict[str, str]:
    """`{"error": message}`; on the A1111 routes, A1111's shape with the same sentence, which its clients show."""
    if path.startswith(A1111_PREFIX):
        return {"error": "HTTPException", "detail": message, "body": "", "errors": f"{status}: {message}"}
    return {"error": message}


class UnexpectedErrors:
    """ASGI middleware: an exception no handler knows becomes a JSON 500 (`{"error": ...}`, like every other error),
    logged once as a JSON line with its traceback, instead of Starlette's plain-text reply and uvicorn's print."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as error:
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if started:
                raise  # the reply has begun: nothing better to send; the server ends the connection
            message = (
                f"An unexpected error occurred ({type(error).__name__}); the service's log has it under this request's "
                "X-Request-Id."
            )
            scope.get("state", {}).get("log", {})["error"] = message
            await JSONResponse(error_body(scope["path"], 500, message), status_code=500)(scope, receive, send)
