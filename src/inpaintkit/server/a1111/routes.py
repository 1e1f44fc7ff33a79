"""The AUTOMATIC1111 web UI's API routes (/sdapi/v1/...) on the same app, worker, queue, limits, keys and logs as
/v1: clients that speak A1111 (webuiapi, openOutpaint, editor plugins, scripts) inpaint through inpaintkit unchanged.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any, Optional

import anyio
import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from ...errors import InputError
from ...io import load_image_and_mask
from ...preview import latent_preview
from ..admission import model_pixels, not_ready, require_fits_deadline, require_step_budget, switch, wait_for
from ..config import ServiceConfig
from ..errors import ServiceError
from ..limits import read_body
from ..worker import InferenceWorker, Job, job_cost
from .names import samplers_listing, schedulers_listing
from .options import check_options, model_title, names_model, options_for
from .reply import reply
from .request import A1111Job, Generation, Img2Img, Txt2Img, job_for, parse_request

PREFIX = "/sdapi/v1"


def a1111_router(worker: InferenceWorker, config: ServiceConfig, guarded: list) -> APIRouter:
    router = APIRouter(prefix=PREFIX, dependencies=guarded, tags=["AUTOMATIC1111 API"])

    async def generate(request: Request, model: type[Generation]) -> JSONResponse:
        deadline = time.monotonic() + config.timeout
        try:
            with anyio.fail_after(config.timeout):
                body = await read_body(request, config.max_body)
        except TimeoutError:
            raise ServiceError(408, f"The request body did not arrive within {config.timeout:g} s.") from None
        parsed = parse_request(model, body)
        spec, cost = await anyio.to_thread.run_sync(admit, worker, config, parsed)
        job = Job(spec.pixels, spec.mask, spec.settings, deadline, config.timeout, cost)
        try:
            worker.submit(job)
            images = await wait_for(job, request, worker)
        finally:
            request.state.log.update(job.timings())
        title = model_title(worker.model_name)
        return JSONResponse(await anyio.to_thread.run_sync(reply, spec, parsed, images, title))

    @router.post(
        "/img2img",
        summary="A1111 img2img: inpaint init_images[0] where mask is white",
        openapi_extra=json_body(Img2Img),
    )
    async def img2img(request: Request) -> JSONResponse:
        return await generate(request, Img2Img)

    @router.post(
        "/txt2img",
        summary="A1111 txt2img: inpaint a blank canvas of width x height, all of it",
        openapi_extra=json_body(Txt2Img),
    )
    async def txt2img(request: Request) -> JSONResponse:
        return await generate(request, Txt2Img)

    @router.get("/samplers")
    async def samplers() -> list[dict]:
        inpainter = worker.inpainter
        return samplers_listing(inpainter is not None and inpainter.components.family.flow_matching)

    @router.get("/schedulers")
    async def schedulers() -> list[dict]:
        return schedulers_listing()

    @router.get("/sd-models")
    async def sd_models() -> list[dict]:
        """The loaded model and those it may switch to (POST /options with sd_model_checkpoint)."""
        names = [worker.model_name] + await anyio.to_thread.run_sync(worker.catalog_names)
        return [
            {"title": model_title(name), "model_name": name.rstrip("/").split("/")[-1], "hash": None, "sha256": None,
             "filename": name, "config": None}
            for name in dict.fromkeys(names)
        ]  # fmt: skip

    async def get_options() -> dict[str, Any]:
        return options_for(worker.model_name)

    router.add_api_route("/options", get_options, methods=["GET"])
    router.add_api_route("/options/", get_options, methods=["GET"], include_in_schema=False)

    async def set_options(request: Request) -> None:
        with anyio.fail_after(config.timeout):
            body = await read_body(request, 64 * 1024)
        try:
            options = json.loads(body or b"{}")
        except ValueError:
            raise ServiceError(422, "The options must be a JSON object.") from None
        wanted = options.get("sd_model_checkpoint") if isinstance(options, dict) else None
        others = {key: value for key, value in options.items() if key != "sd_model_checkpoint"} if wanted else options
        check_options(others, worker.model_name)
        if wanted is not None and not names_model(wanted, worker.model_name):  # A1111's way to switch the model
            await switch(request, worker, config, catalog_name(worker, wanted))
        return None

    # openOutpaint posts to "/options/" (A1111's FastAPI redirects it): answered here, without a redirect.
    router.add_api_route("/options", set_options, methods=["POST"])
    router.add_api_route("/options/", set_options, methods=["POST"], include_in_schema=False)

    @router.get("/progress")
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(progress_of, worker, not skip_current_image)

    @router.post("/interrupt")
    async def interrupt() -> dict:
        worker.interrupt(f"{PREFIX}/interrupt")
        return {}

    @router.post("/skip")
    async def skip() -> None:
        worker.interrupt(f"{PREFIX}/skip")  # one job is all of a request's images: skipping it ends it
        return None

    @router.get("/scripts")
    async def scripts() -> dict[str, list]:
        return {"txt2img": [], "img2img": []}  # no scripts run here (webuiapi reads this list at start)

    @router.get("/loras")
    async def loras() -> list[dict]:
        """The LoRAs in --loras-dir, as A1111 lists them; a prompt uses one as <lora:NAME:WEIGHT>."""
        inpainter = worker.inpainter
        names = [] if inpainter is None else inpainter.loras.available()
        return [{"name": Path(n).stem, "alias": Path(n).stem, "path": n, "metadata": {}} for n in names]

    for path in ("/upscalers", "/prompt-styles", "/sd-vae", "/hypernetworks", "/latent-upscale-modes"):
        router.add_api_route(path, empty_listing, methods=["GET"], summary="None on this service")

    @router.get("/embeddings")
    async def embeddings() -> dict[str, dict]:
        return {"loaded": {}, "skipped": {}}

    return router


def json_body(model: type[Generation]) -> dict:
    """The OpenAPI request body of a route that reads its JSON itself (to check the body's size before parsing)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def empty_listing() -> list:
    return []


def add_a1111_routes(app: FastAPI, worker: InferenceWorker, config: ServiceConfig, guarded: list) -> APIRouter:
    router = a1111_router(worker, config, guarded)
    app.include_router(router)
    return router


def catalog_name(worker: InferenceWorker, wanted: Any) -> str:
    """The catalog's name for an A1111 title ("name [hash]", or the name alone); one sentence when none fits."""
    names = [] if worker.catalog is None else worker.catalog.names()
    for name in names:
        if names_model(wanted, name):
            return name
    listed = ", ".join(dict.fromkeys([worker.model_name, *names]))
    raise ServiceError(422, f"sd_model_checkpoint {wanted!r} is not a model this service can load ({listed}).")


def admit(worker: InferenceWorker, config: ServiceConfig, request: Generation) -> tuple[A1111Job, float]:
    """The /v1 route's checks, in the same order, for an A1111 request: ready, settings, cost, images, deadline."""
    inpainter = worker.inpainter
    if inpainter is None or worker.state != "ready":
        raise not_ready(worker)
    spec = job_for(request, model_title(worker.model_name), config.max_pixels, inpainter.components.family)
    settings = spec.settings
    if settings.num_images > config.max_images:
        raise ServiceError(
            422,
            f"This service makes at most {config.max_images} images per request, got batch_size x n_iter = "
            f"{settings.num_images}.",
        )
    try:
        method = inpainter.check(settings)
        pixels, mask = load_image_and_mask(spec.pixels, np.round(spec.mask * 255).astype(np.uint8))
    except InputError as error:
        raise ServiceError(422, str(error)) from None
    spec.pixels, spec.mask = pixels, mask
    calls = require_step_budget(method, settings, config.max_steps)
    pixel_count = model_pixels(pixels.shape, settings, inpainter.components.capabilities.native_size)
    cost = job_cost(calls, settings.num_images, pixel_count)
    require_fits_deadline(worker, cost, config.timeout)
    return spec, cost


IDLE_STATE = {
    "skipped": False,
    "interrupted": False,
    "stopping_generation": False,
    "job": "",
    "job_count": 0,
    "job_timestamp": "0",
    "job_no": 0,
    "sampling_step": 0,
    "sampling_steps": 0,
}


def progress_of(worker: InferenceWorker, with_image: bool) -> dict[str, Any]:
    """A1111's ProgressResponse for the running job (ours or an A1111 client's), from its step callback."""
    job: Optional[Job] = worker.running
    if job is None or job.started_at is None:
        return {
            "progress": 0.0,
            "eta_relative": 0.0,
            "state": dict(IDLE_STATE),
            "current_image": None,
            "textinfo": None,
        }
    if job.switch_to is not None:  # a model loading: no steps to count
        state = {**IDLE_STATE, "job": f"load {job.switch_to}", "job_count": 1}
        return {"progress": 0.01, "eta_relative": 0.0, "state": state, "current_image": None,
                "textinfo": f"Loading model {job.switch_to}"}  # fmt: skip
    total = job.steps_total or job.settings.steps
    done = min(job.steps_done, total)
    fraction = min(0.01 + done / total, 1.0)  # A1111 starts at 0.01, so the ETA is defined before the first step
    elapsed = time.monotonic() - job.started_at
    state = {
        **IDLE_STATE,
        "interrupted": job.interrupted is not None,
        "job": "inpaintkit",
        "job_count": 1,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() - elapsed)),
        "sampling_step": done,
        "sampling_steps": total,
    }
    current_image = None
    latents = job.latents
    inpainter = worker.inpainter
    if with_image and latents is not None and inpainter is not None:
        picture = latent_preview(inpainter.components.family, latents)
        if picture is not None:
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            current_image = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {
        "progress": round(fraction, 4),
        "eta_relative": round(max(elapsed / fraction - elapsed, 0.0), 3),
        "state": state,
        "current_image": current_image,
        "textinfo": f"Step {done} of {total}",
    }
