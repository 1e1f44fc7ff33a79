"""GET /metrics (issue 18): Prometheus counters and histograms that move with real requests."""

from __future__ import annotations

import re
import threading

from fastapi.testclient import TestClient

from inpaintkit.server import ServiceConfig, create_app

from .test_server import GatedInpainter, inpaint, wait_until


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus' text format (0 when it is not there yet)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_200_422_and_429_and_time_the_jobs(inpainter9):
    gated = GatedInpainter(inpainter9)
    app = create_app(lambda: gated, ServiceConfig(max_queue=1))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200)
        before = client.get("/metrics")
        assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
        assert sample(before.text, "inpaintkit_ready") == 1.0
        assert sample(before.text, "inpaintkit_model_load_seconds") > 0  # the worker loaded it (through the loader)

        gated.gate.set()
        assert inpaint(client).status_code == 200
        assert inpaint(client, data={"steps": "0"}).status_code == 422
        gated.gate.clear()
        gated.entered.clear()
        senders = [threading.Thread(target=lambda: inpaint(client), daemon=True) for _ in range(2)]
        try:
            senders[0].start()
            wait_until(gated.entered.is_set)
            senders[1].start()
            wait_until(lambda: app.state.worker.queued == 1)
            during = client.get("/metrics").text
            assert sample(during, "inpaintkit_queue_length") == 1.0 and sample(during, "inpaintkit_busy") == 1.0
            assert inpaint(client).status_code == 429
        finally:
            gated.gate.set()
        for sender in senders:
            sender.join(20)

        # A job's run time is recorded as the worker lets it go, a moment after its reply: polled, not timed.
        wait_until(lambda: sample(client.get("/metrics").text, "inpaintkit_job_seconds_count") == 3)
        after = client.get("/metrics").text
        assert sample(after, "inpaintkit_requests_total", path="/v1/inpaint", status="200") == 3
        assert sample(after, "inpaintkit_requests_total", path="/v1/inpaint", status="422") == 1
        assert sample(after, "inpaintkit_requests_total", path="/v1/inpaint", status="429") == 1
        assert sample(after, "inpaintkit_job_seconds_count") == 3  # the three jobs that ran
        assert sample(after, "inpaintkit_job_seconds_sum") > 0
        assert sample(after, "inpaintkit_queue_wait_seconds_count") == 3
        assert sample(after, "inpaintkit_queue_length") == 0.0


def test_unknown_paths_share_one_label(inpainter9):
    with TestClient(create_app(inpainter9, ServiceConfig())) as client:
        for path in ("/wp-admin", "/.env", "/sdapi/v1/nothing"):
            assert client.get(path).status_code == 404
        text = client.get("/metrics").text
        assert sample(text, "inpaintkit_requests_total", path="other", status="404") == 3
        assert "wp-admin" not in text  # a scanner cannot grow the label set
