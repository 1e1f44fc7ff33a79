"""One thread owns the model and runs jobs one at a time (GPU work is serial); requests wait in a bounded queue."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..devices import free_memory
from ..errors import Cancelled, InputError, first_line
from ..inpainter import Inpainter
from ..settings import InpaintSettings
from ..stopping import FINISH_NOW
from .errors import CLIENT_CLOSED, ServiceError

log = logging.getLogger("inpaintkit.server")
STOP = None  # put on the queue to end the worker thread

# A job's cost is counted in units of one denoiser (UNet) call on a one-megapixel image, and the VAE in the same
# units: on Stable Diffusion at 512 px, decoding one image costs about as much as two guided UNet calls (the decoder
# runs at full resolution, the UNet at 1/8), and encoding the image and the masked image about two more, once per
# job. The weights need not be exact: the seconds per unit are learned from finished jobs, so the weights only set
# how much of a short job's time is the VAE's, and they keep a one-step job from looking free.
VAE_DECODE_CALLS = 2.0  # per image
VAE_ENCODE_CALLS = 2.0  # per job
# A finished job's speed speaks for jobs up to this many times its cost. A small job's time is mostly fixed work
# (the text encoders, a new size's first run, PNG encoding) that its cost does not count, so its seconds per unit,
# scaled to a big job, would refuse jobs that fit easily (one slow 72x72 job locked 256x256 jobs out).
COMPARABLE_COST = 4.0
RECENT_JOBS = 32  # the finished jobs an estimate looks at
RECENT_SECONDS = 600.0  # and only those this recent: a refused job never runs, so old slow ones must age out


def job_cost(denoiser_calls: int, num_images: int, model_pixels: int) -> float:
    """The estimated cost of a job in cost units (see VAE_DECODE_CALLS), from what is known before it queues."""
    megapixels = model_pixels / 1e6
    return megapixels * (denoiser_calls * num_images + VAE_DECODE_CALLS * num_images + VAE_ENCODE_CALLS)


class Job:
    """One request's work. Created on the event loop; the worker settles its future through the loop."""

    def __init__(
        self,
        pixels: np.ndarray,
        mask: np.ndarray,
        settings: InpaintSettings,
        deadline: float,
        timeout: float,
        cost: Optional[float] = None,
    ):
        self.pixels, self.mask, self.settings = pixels, mask, settings  # as io.load_image_and_mask returns them
        self.deadline, self.timeout = deadline, timeout
        self.cost = cost  # job_cost(...), for the worker's seconds-per-unit estimate; None: not counted
        self.steps_done = 0
        self.steps_total = 0  # the loop's step count, known from the first step on (progress)
        self.switch_to: Optional[str] = None  # set on a model switch (a job of its own in the queue, see switch_job)
        self.latents: Any = None  # the latest step's latents, for a progress preview
        self.interrupted: Optional[str] = None  # the route that ended its denoising early (A1111's /interrupt, /skip)
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future = self.loop.create_future()
        self.cancelled = False  # set by the request side; the worker reads it between steps
        self.queued_at = time.monotonic()
        self.started_at: Optional[float] = None
        self.finished_at: Optional[float] = None

    def keep_going(self) -> bool:
        """False once the job's deadline has passed or its request gave up: the job should stop where it is."""
        return not self.cancelled and time.monotonic() < self.deadline

    def after_step(self, step: int, total: int, latents: Any) -> bool:
        """The step callback: counts the steps (a job that ran none says nothing about speed), keeps the latents for a
        progress preview; False stops the job; after an interrupt the denoising ends here and what there is is
        decoded (A1111's interrupt answers the partly denoised image)."""
        self.steps_done, self.steps_total, self.latents = step + 1, total, latents
        if not self.keep_going():
            return False
        return FINISH_NOW if self.interrupted is not None else True

    def cancel(self) -> None:
        """Called on the event loop when nobody will read the result (deadline passed or client gone).

        Use InferenceWorker.cancel, which also frees the job's place in the queue."""
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
    return ServiceError(504, f"The job did not finish within this service's {timeout:g} s deadline and was cancelled.")


class Speeds:
    """How fast recent jobs ran, in seconds per cost unit (job_cost), to refuse up front a job that cannot fit its
    deadline. An estimate uses the fastest recent job of comparable cost (at least 1/COMPARABLE_COST of it): the
    refusal is for jobs that would not fit even at the best speed seen, and a job larger than any seen is accepted
    (it teaches the speed of its size)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._jobs: deque = deque(maxlen=RECENT_JOBS)  # (finished at, cost, seconds)

    def record(self, cost: float, seconds: float) -> None:
        if cost > 0 and seconds > 0:
            self._jobs.append((self.clock(), cost, seconds))

    def estimate(self, cost: float) -> Optional[float]:
        """Seconds for a job of this cost; None when no recent job is comparable."""
        oldest = self.clock() - RECENT_SECONDS
        rates = [seconds / done for at, done, seconds in self._jobs if at >= oldest and done * COMPARABLE_COST >= cost]
        return cost * min(rates) if rates else None


class WaitingJobs:
    """The jobs waiting for the worker, oldest first. A job cancelled while it waits leaves at once, so its place is
    free for the next client instead of counting until the worker reaches it (issue 13)."""

    def __init__(self) -> None:
        self._items: deque = deque()
        self._changed = threading.Condition()

    def __len__(self) -> int:
        with self._changed:
            return sum(item is not STOP for item in self._items)

    def put(self, item: Optional[Job], limit: Optional[int] = None) -> bool:
        """Append `item`; False (and nothing appended) when `limit` jobs already wait. STOP always fits."""
        with self._changed:
            if limit is not None and len(self) >= limit:
                return False
            self._items.append(item)
            self._changed.notify()
            return True

    def remove(self, job: Job) -> bool:
        """Take a job out of the line; False when it is not there (the worker took it already)."""
        with self._changed:
            try:
                self._items.remove(job)
            except ValueError:
                return False
            return True

    def take_all(self) -> list[Job]:
        """Every waiting job, out of the line (STOP stays)."""
        with self._changed:
            jobs = [item for item in self._items if item is not STOP]
            self._items = deque(item for item in self._items if item is STOP)
            return jobs

    def take(self) -> Optional[Job]:
        """The oldest job (or STOP), waiting for one if none is there."""
        with self._changed:
            while not self._items:
                self._changed.wait()
            return self._items.popleft()


class InferenceWorker:
    """The model's owner: loads it (if given a loader), then runs queued jobs in order until stopped."""

    def __init__(
        self,
        inpainter: Inpainter | Callable[[], Inpainter],
        max_queue: int,
        model_name: str = "model",
        catalog=None,
        load_model: Optional[Callable[[str], Inpainter]] = None,
        keep_models: int = 1,
    ):
        self.inpainter: Optional[Inpainter] = serving(inpainter) if isinstance(inpainter, Inpainter) else None
        self.model_name = model_name  # the loaded model, as clients name it (a catalog name after a switch)
        self.catalog = catalog  # catalog.ModelCatalog: the models a client may switch to; None: one model only
        self.load_model = load_model  # loads a catalog entry's source (the CLI's loading, speed options included)
        self.keep_models = keep_models  # models kept in memory, the loaded one included
        self._kept: dict[str, Inpainter] = {}  # switched-away models still in memory, oldest first
        self.load_seconds: Optional[float] = None  # how long the loaded model took to load (None: given loaded)
        self.on_job_run: Optional[Callable[[float], None]] = None  # told each job's run seconds (the metrics)
        self._load = None if isinstance(inpainter, Inpainter) else inpainter
        self.load_error: Optional[BaseException] = None
        self.max_queue = max_queue
        self.closing = False
        self._jobs = WaitingJobs()  # submit() enforces max_queue; STOP always fits
        self._submit_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._average_run_s = 1.0
        self.running: Optional[Job] = None  # the job the model works on now, for /readyz
        self.speeds = Speeds()  # how fast recent jobs ran, for the deadline estimate
        # What /readyz measures a running job's age and lateness with (time.monotonic, as the jobs' deadlines); a
        # test replaces it to look at a job an hour late without waiting an hour.
        self.clock: Callable[[], float] = time.monotonic

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
        """Jobs really waiting: a cancelled one has left the line already."""
        return len(self._jobs)

    def estimated_seconds(self, cost: float) -> Optional[float]:
        """How long a job of this cost would run at the best recent speed; None when no comparable job finished."""
        return self.speeds.estimate(cost)

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

        Safe in a signal handler: one attribute write, no lock. reject_waiting() then answers the queued jobs at
        once, outside the handler.
        """
        self.closing = True

    def reject_waiting(self) -> None:
        """Answer every queued job 503 now, instead of after the running job (which may take minutes)."""
        for job in self._jobs.take_all():
            job.settle(error=shutting_down())

    def stop(self, timeout: Optional[float] = None) -> None:
        """close(), then wait for the running job to finish and the thread to end.

        While the model is still loading there is no job to finish: the (daemon) thread is left to the process's exit.
        """
        self.close()
        self.reject_waiting()
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
            if not self._jobs.put(job, limit=self.max_queue):
                retry_after = max(1, math.ceil((self.max_queue + 1) * self._average_run_s))
                raise ServiceError(
                    429,
                    f"The queue is full ({self.max_queue} jobs waiting); retry in about {retry_after} s.",
                    {"Retry-After": str(retry_after)},
                )

    def catalog_names(self) -> list[str]:
        """The models a client may switch to (none without a catalog)."""
        return [] if self.catalog is None else self.catalog.names()

    def switch_job(self, name: str, deadline: float, timeout: float) -> Job:
        """A queued job that replaces the model with `name` (from the catalog): jobs queued before it run on the old
        model, jobs after it on the new one. The old model is freed before the new one loads (unless --keep-models
        keeps it), so one model is in memory at a time."""
        if self.catalog is None or self.load_model is None:
            raise ServiceError(422, "This service runs one model; start it with --models-dir to switch models.")
        try:
            self.catalog.resolve(name)
        except InputError as error:
            raise ServiceError(422, str(error)) from None
        job = Job(None, None, None, deadline, timeout)  # type: ignore[arg-type]
        job.switch_to = name
        return job

    def interrupt(self, route: str) -> bool:
        """End the running job's denoising after its current step (its request gets the partly denoised images,
        naming `route`); False when none runs."""
        job = self.running
        if job is None:
            return False
        job.interrupted = route
        return True

    def cancel(self, job: Job) -> None:
        """Nobody will read this job's result: stop it where it is, and free its place in the queue now."""
        job.cancel()
        self._jobs.remove(job)

    def _main(self) -> None:
        if self.inpainter is None and not self._load_model():
            return
        while True:
            job = self._jobs.take()
            if job is STOP:
                return
            self.running = job
            try:
                self._serve(job)
            finally:
                self.running = None

    def _load_model(self) -> bool:
        started = time.monotonic()
        try:
            self.inpainter = serving(self._load())
        except BaseException as error:  # reported by /readyz and by `serve`, which exits
            self.load_error = error
            log.error("loading the model failed: %s", first_line(error))
            return False
        self.load_seconds = time.monotonic() - started
        log.info("model loaded in %.1f s", self.load_seconds)
        return True

    def _serve(self, job: Job) -> None:
        if self.closing:
            return job.settle(error=shutting_down())
        if job.switch_to is not None:  # not stopped by its deadline: a half-made switch would leave no model
            return self._switch(job)
        if not job.keep_going():  # its deadline passed or its client left while it waited
            return job.settle(error=job.stopped_error())
        job.started_at = time.monotonic()
        try:
            self._run(job)
        finally:  # every job that ran, however it ended (a 504 or 499 included: those are the slow ones)
            if self.on_job_run is not None:
                self.on_job_run(time.monotonic() - job.started_at)

    def _run(self, job: Job) -> None:
        out_of_memory = False
        try:
            # The callback stops the loop between steps; should_stop also inside the long stages (VAE tiles, bld's
            # decoder optimisation), so a deadline is kept however the job spends its time.
            images = self.inpainter.run(
                job.pixels, job.mask, job.settings, callback=job.after_step, should_stop=lambda: not job.keep_going()
            )
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
            if job.interrupted is not None and job.steps_done < job.steps_total:  # each image says it is a partial one
                for image in images:
                    image.info["inpaintkit"]["interrupted"] = (
                        f"by POST {job.interrupted} after step {job.steps_done} of {job.steps_total}"
                    )
            else:
                self._learn_speed(job)  # before the reply: a client that reads the estimate next must see this job
            self.running = None  # before the reply too: a client that asks /progress next must find the worker idle
            job.settle(result=images)
            return
        if out_of_memory:
            free_memory()  # after the except block, so the traceback's tensors are already released
        self.running = None
        job.settle(error=error)

    def _switch(self, job: Job) -> None:
        """Replace the model. Resolved before anything is freed; the old model freed before the new one loads; on a
        failure the previous one is loaded again, outside the except block so the failed load's memory is gone."""
        name, previous = job.switch_to, self.model_name
        job.started_at = time.monotonic()
        try:
            source, previous_source = self.catalog.resolve(name), self.catalog.resolve(previous)
        except InputError as error:  # e.g. its folder was removed while the switch waited: nothing was touched
            return self._settle_switch(job, error=ServiceError(422, str(error)))
        if name == previous:
            return self._settle_switch(job)
        target = self._kept.pop(name, None)  # still in memory from an earlier switch
        if self.keep_models > 1 and self.inpainter is not None:
            self._kept[previous] = self.inpainter
        while len(self._kept) > self.keep_models - 1:  # free the oldest first: memory for the one to load
            self._kept.pop(next(iter(self._kept)))
        self.inpainter = None
        free_memory()
        failure = None
        try:
            self.inpainter = target or serving(self.load_model(source))
        except BaseException as error:
            failure = first_line(error)
        if failure is None:
            self.model_name, self.load_seconds, self.load_error = name, time.monotonic() - job.started_at, None
            log.info("switched the model from %s to %s in %.1f s", previous, name, self.load_seconds)
            return self._settle_switch(job)
        free_memory()  # the failed load's objects went with the except block
        try:
            self.inpainter = self._kept.pop(previous, None) or serving(self.load_model(previous_source))
        except BaseException as again:  # no model at all: /readyz says failed until a switch succeeds
            self.load_error = again
            return self._settle_switch(
                job,
                error=ServiceError(
                    503,
                    f"Model {name} could not be loaded ({failure}), nor {previous} again ({first_line(again)}); "
                    "the service has no model until a switch succeeds.",
                ),
            )
        self._settle_switch(
            job, error=ServiceError(422, f"Model {name} could not be loaded ({failure}); {previous} is back.")
        )

    def _settle_switch(self, job: Job, error: Optional[ServiceError] = None) -> None:
        self.running = None
        job.settle(result=job.switch_to) if error is None else job.settle(error=error)

    def _learn_speed(self, job: Job) -> None:
        """Fold a finished job's run time into the averages behind Retry-After and the deadline estimate."""
        run_s = time.monotonic() - job.started_at
        self._average_run_s = 0.8 * self._average_run_s + 0.2 * run_s
        if job.cost and job.steps_done > 0:  # e.g. an empty mask: no model work, no news about its speed
            self.speeds.record(job.cost, run_s)


def serving(inpainter: Inpainter) -> Inpainter:
    """The inpainter, its LoRAs limited to --loras-dir: a request never names a path of its choosing."""
    loras = getattr(inpainter, "loras", None)  # a test's stand-in may have none
    if loras is not None:
        loras.served = True
    return inpainter


def shutting_down() -> ServiceError:
    return ServiceError(503, "The service is shutting down; the job was not run.", {"Retry-After": "5"})
