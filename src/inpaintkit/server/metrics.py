"""GET /metrics in Prometheus' text format: what an autoscaler and a dashboard need from each replica.

One registry per app (not the process-wide default), so several apps in one process (tests, an embedding) count
apart. Requests are counted where they are logged (AccessLog): every request, whatever answered it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from .worker import InferenceWorker

# Seconds: a tiny job takes tens of milliseconds, SDXL on a CPU minutes; the deadline defaults to 300 s.
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))
# Request paths counted by name: the app's own routes; anything else (scanners, typos, CORS preflights of made-up
# paths) is "other", so the label set stays bounded.
COUNTED_PATHS = ("/v1/inpaint", "/v1/model", "/v1/models", "/healthz", "/readyz", "/metrics")


class ServiceMetrics:
    def __init__(self, worker: InferenceWorker):
        self.registry = CollectorRegistry()
        self.known_paths: set[str] = set(COUNTED_PATHS)  # the app's routes (create_app sets them): labels stay few
        self.requests = Counter(
            "inpaintkit_requests", "Requests answered, by route and status code.", ["path", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.job_seconds = Histogram(
            "inpaintkit_job_seconds", "Seconds a job ran on the model, however it ended (504 and 499 included).",
            buckets=JOB_BUCKETS, registry=self.registry,
        )  # fmt: skip
        worker.on_job_run = self.job_seconds.observe
        self.queue_wait_seconds = Histogram(
            "inpaintkit_queue_wait_seconds", "Seconds a job waited for the model.", buckets=JOB_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        queue = Gauge("inpaintkit_queue_length", "Jobs waiting for the model.", registry=self.registry)
        queue.set_function(lambda: worker.queued)
        busy = Gauge("inpaintkit_busy", "1 while a job runs on the model.", registry=self.registry)
        busy.set_function(lambda: 1.0 if worker.running is not None else 0.0)
        ready = Gauge("inpaintkit_ready", "1 once the model is loaded and jobs are taken.", registry=self.registry)
        ready.set_function(lambda: 1.0 if worker.state == "ready" else 0.0)
        load = Gauge("inpaintkit_model_load_seconds", "Seconds the loaded model took to load.", registry=self.registry)
        load.set_function(lambda: worker.load_seconds or 0.0)
        gpu = Gauge(
            "inpaintkit_gpu_memory_bytes", "GPU memory torch holds (allocated), 0 without a GPU.",
            registry=self.registry,
        )  # fmt: skip
        gpu.set_function(gpu_memory)

    def record(self, fields: dict) -> None:
        """One finished request, from its access-log fields."""
        path, status = fields.get("path", ""), fields.get("status")
        self.requests.labels(path if path in self.known_paths else "other", str(status)).inc()
        if (
            "queue_wait_s" in fields and status != 429 and "switch_to" not in fields
        ):  # a job refused at the door never waited
            self.queue_wait_seconds.observe(fields["queue_wait_s"])

    def text(self) -> bytes:
        return generate_latest(self.registry)


def gpu_memory() -> float:
    import torch

    return float(torch.cuda.memory_allocated()) if torch.cuda.is_available() else 0.0
