"""Admitting a job: what the /v1 and the A1111 routes both check before a job may queue, and how a request waits
for its job."""

from __future__ import annotations

import asyncio
import re
import time

import anyio
from fastapi import Request
from PIL import Image

from ..methods import Method
from ..settings import InpaintSettings
from .errors import CLIENT_CLOSED, ServiceError
from .worker import InferenceWorker, Job, deadline_error

DISCONNECT_POLL_S = 0.1  # how often a waiting request checks whether its client is still there


def require_step_budget(method: Method, settings: InpaintSettings, max_steps: int) -> int:
    """The job's denoiser calls per image, refused (422) when all its images together pass the service's budget."""
    calls = method.total_denoiser_calls(settings)
    total = calls * settings.num_images
    if total > max_steps:
        # The core names the options that multiply the work as CLI flags; the service's fields have `_` for `-`.
        others = re.sub(r"--([a-z-]+)", lambda flag: flag.group(1).replace("-", "_"), method.work_options_hint())
        raise ServiceError(
            422,
            f"This job needs {total:,} denoiser steps ({calls:,} per image x {settings.num_images}), more than this "
            f"service's limit of {max_steps:,} per request; lower steps, num_images{others}.",
        )
    return calls


def model_pixels(shape: tuple[int, ...], settings: InpaintSettings, native_size: int) -> int:
    """The pixels the model works on: the whole image, or with crop_padding a window scaled so its longer side is the
    model's native size (at most native_size squared)."""
    if settings.crop_padding is not None:
        return native_size * native_size
    return shape[0] * shape[1]


def require_fits_deadline(worker: InferenceWorker, cost: float, timeout: float) -> None:
    """Refuse (422) a job that would not finish within the deadline at the speed recent jobs ran.

    422, not 503: the verdict is about this request at this service's speed, and sending it again would fail again,
    where a 503 invites the client to retry it; it needs less work (or another service). Before any job has finished
    there is no speed to judge by, and the job is accepted (its deadline still stops it)."""
    estimate = worker.estimated_seconds(cost)
    if estimate is not None and estimate > timeout:
        raise ServiceError(
            422,
            f"This job would take about {estimate:,.0f} s at this service's recent speed, more than its {timeout:g} s "
            "deadline; lower steps, num_images or the image size, or set crop_padding.",
        )


def not_ready(worker: InferenceWorker) -> ServiceError:
    if worker.state == "closing":
        return ServiceError(503, "The service is shutting down.", {"Retry-After": "5"})
    if worker.state == "failed":
        return ServiceError(503, "The model failed to load; see /readyz.")
    return ServiceError(503, "The model is still loading; retry in a moment.", {"Retry-After": "5"})


async def wait_for(job: Job, request: Request, worker: InferenceWorker) -> list[Image.Image]:
    """The job's images; cancels the job when its deadline passes (504) or its client disconnects."""
    try:
        while True:
            remaining = job.deadline - time.monotonic()
            if remaining <= 0:
                raise deadline_error(job.timeout)
            done, _ = await asyncio.wait({job.future}, timeout=min(DISCONNECT_POLL_S, remaining))
            if done:
                return job.future.result()
            if await request.is_disconnected():
                request.state.log["status"] = CLIENT_CLOSED
                raise ServiceError(CLIENT_CLOSED, "The client disconnected; the job was cancelled.")
    finally:
        if not job.future.done():
            worker.cancel(job)  # stops it where it is, or frees its place in the queue at once


async def switch(request: Request, worker: InferenceWorker, config, name: str) -> None:
    """Queue a model switch and wait for it (its own deadline: loading a model may take minutes, and a switch is never
    stopped half-way)."""
    # Queued even when it names the loaded model: a switch sent earlier may still be waiting, and this one must win.
    await anyio.to_thread.run_sync(worker.catalog_names)  # the cache scan, once, off the event loop
    job = worker.switch_job(name, time.monotonic() + max(config.timeout, SWITCH_TIMEOUT_S), config.timeout)
    try:
        worker.submit(job)
        await wait_for(job, request, worker)
    finally:
        request.state.log.update({**job.timings(), "switch_to": name})


SWITCH_TIMEOUT_S = 1800.0  # a request waits this long at most for a model to load (a first download included)
