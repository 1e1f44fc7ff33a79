"""One thread owns the model and runs jobs one at a time (GPU work is serial); requests wait in a bounded queue."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import queue
import threading
import time
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..errors import Cancelled, InputError, first_line
from ..inpainter import Inpainter
from ..settings import InpaintSettings
from .errors import CLIENT_CLOSED, ServiceError

log = logging.getLogger("inpaintkit.server")
STOP = None  # put on the queue to end the worker thread


class Job:
    """One request's work. Created on the event loop; the worker settles its future through the loop."""

    def __init__(
        self, pixels: np.ndarray, mask: np.ndarray, settings: InpaintSettings, deadline: float, timeout: float
    ):
        self.pixels, self.mask, self.settings = pixels, mask, settings  # as io.load_image_and_mask returns them
        self.deadline, self.timeout = deadline, timeout
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future = self.loop.create_future()
        self.cancelled = False  # set by the request side; the worker reads it between steps
        self.queued_at = time.monotonic()
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None

    def keep_going(self) -> bool:
        """The step callback: False stops the job between two steps."""
        return not self.cancelled and time.monotonic() < self.deadline

    def cancel(self) -> None:
        """Called on the event loop when nobody will read the result (deadline passed or client gone)."""
        self.cancelled = True
        self.future.cancel()

    def stopped_error(self) -> ServiceError:
        if self.cancelled:
            return ServiceError(CLIENT_CLOSED, "The client disconnected; the job was cancelled.")
        return deadline_error(self.timeout)

    def settle(self, result: Any = None, error: Optional[BaseException] = None) -> None:
        """From the worker thread: hand the result (or error) to the waiting request, if it still waits."""
        self.finished_at = time.monotonic()

        def deliver() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(deliver)
        except RuntimeError:
            pass  # the event loop has closed: nobody is waiting any more

    def timings(self) -> dict[str, float]:
        """Queue wait and run time in seconds, as far as the job got."""
        started = self.started_at or self.finished_at or time.monotonic()
        timing = {"queue_wait_s": round(started - self.queued_at, 4)}
        if self.started_at is not None and self.finished_at is not None:
            timing["run_s"] = round(self.finished_at - self.started_at, 4)
        return timing


def deadline_error(timeout: float) -> ServiceError:
    return ServiceError(
        504, f"The job did not finish within this service's {timeout:g} s deadline and was cancelled between steps."
    )


class InferenceWorker:
    """The model's owner: loads it (if given a loader), then runs queued jobs in order until stopped."""

    def __init__(self, inpainter: Inpainter | Callable[[], Inpainter], max_queue: int):
        self.inpainter: Optional[Inpainter] = inpainter if isinstance(inpainter, Inpainter) else None
        self._load = None if isinstance(inpainter, Inpainter) else inpainter
        self.load_error: Optional[BaseException] = None
        self.max_queue = max_queue
        self.closing = False
        self._jobs: queue.Queue = queue.Queue()  # unbounded: submit() enforces max_queue, so STOP always fits
        self._submit_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._average_run_s = 1.0

    @property
    def state(self) -> str:
        """loading, ready, failed or closing."""
        if self.load_error is not None:
            return "failed"
        if self.closing:
            return "closing"
        return (
            "ready"
            if self.inpainter is not None and self._thread is not None and self._thread.is_alive()
            else "loading"
        )

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    def start(self) -> None:
        """Start the thread (again, after stop()); a no-op while it runs."""
        with self._submit_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.closing = False
            self._thread = threading.Thread(target=self._main, name="inpaintkit-worker", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop taking jobs; queued ones are answered 503 as the worker reaches them, the running one finishes.

        Safe in a signal handler: one attribute write, no lock.
        """
        self.closing = True

    def stop(self, timeout: Optional[float] = None) -> None:
        """close(), then wait for the running job to finish and the thread to end.

        While the model is still loading there is no job to finish: the (daemon) thread is left to the process's exit.
        """
        self.close()
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._jobs.put(STOP)
            if self.inpainter is not None:
                thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue a job, or refuse at once: 503 while closing, 429 (with Retry-After) when the queue is full."""
        if self.closing:
            raise shutting_down()
        with self._submit_lock:
            waiting = self.queued
            if waiting >= self.max_queue:
                retry_after = max(1, math.ceil((waiting + 1) * self._average_run_s))
                raise ServiceError(
                    429,
                    f"The queue is full ({self.max_queue} jobs waiting); retry in about {retry_after} s.",
                    {"Retry-After": str(retry_after)},
                )
            self._jobs.put(job)

    def _main(self) -> None:
        if self.inpainter is None and not self._load_model():
            return
        while True:
            job = self._jobs.get()
            if job is STOP:
                return
            self._serve(job)

    def _load_model(self) -> bool:
        started = time.monotonic()
        try:
            self.inpainter = self._load()
        except BaseException as error:  # reported by /readyz and by `serve`, which exits
            self.load_error = error
            log.error("loading the model failed: %s", first_line(error))
            return False
        log.info("model loaded in %.1f s", time.monotonic() - started)
        return True

    def _serve(self, job: Job) -> None:
        if self.closing:
            return job.settle(error=shutting_down())
        if not job.keep_going():  # its deadline passed or its client left while it waited
            return job.settle(error=job.stopped_error())
        job.started_at = time.monotonic()
        out_of_memory = False
        try:
            images = self.inpainter.run(job.pixels, job.mask, job.settings, callback=lambda *_: job.keep_going())
        except Cancelled:
            error = job.stopped_error()
        except (torch.OutOfMemoryError, MemoryError):
            out_of_memory = True
            error = ServiceError(
                503,
                "The model ran out of memory on this job; retry with a smaller image or fewer images.",
                {"Retry-After": "1"},
            )
        except InputError as input_error:  # checked before queuing, so rare: kept a client error all the same
            error = ServiceError(422, str(input_error))
        except Exception as unexpected:
            log.exception("inference failed")
            error = ServiceError(
                500,
                f"Inference failed ({type(unexpected).__name__}: {first_line(unexpected)}); the service keeps running.",
            )
        else:
            job.settle(result=images)
            self._average_run_s = 0.8 * self._average_run_s + 0.2 * (job.finished_at - job.started_at)
            return
        if out_of_memory:
            free_memory()  # after the except block, so the traceback's tensors are already released
        job.settle(error=error)


def shutting_down() -> ServiceError:
    return ServiceError(503, "The service is shutting down; the job was not run.", {"Retry-After": "5"})


def free_memory() -> None:
    """Give cached GPU memory back after an out-of-memory error, so the next job starts clean."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
