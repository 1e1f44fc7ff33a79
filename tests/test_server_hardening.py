"""No request can wedge the service (issue 13): work is bounded before a job queues, a job that cannot fit its
deadline is refused up front, a dead job frees its place at once, /readyz tells busy and stuck from ready, and odd
bodies (huge text, a cut multipart, a client that hangs up mid-upload) get one sentence, never a traceback.

In-process (TestClient or a bare ASGI call); no assertion depends on how fast this machine is: a gate holds the
worker, the speed estimate and the clock /readyz reads are injected."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading

import pytest
from fastapi.testclient import TestClient

from inpaintkit.errors import Cancelled
from inpaintkit.server import ServiceConfig, create_app
from inpaintkit.server.app import model_pixels, stuck_margin
from inpaintkit.server.forms import MAX_SETTINGS_BYTES
from inpaintkit.server.worker import RECENT_SECONDS, VAE_DECODE_CALLS, VAE_ENCODE_CALLS, Speeds, job_cost
from inpaintkit.settings import MAX_TEXT_LENGTH, InpaintSettings

from .test_server import (
    IMAGE_PNG,
    LIMITS,
    MASK_PNG,
    SIZE,
    GatedInpainter,
    assert_background_kept,
    assert_error,
    inpaint,
    job_files,
    wait_until,
)


class RecordingInpainter:
    """The real inpainter, counting the jobs that reach it: a refusal up front must leave `runs` at 0."""

    def __init__(self, inpainter):
        self.inpainter, self.components, self.loras = inpainter, inpainter.components, inpainter.loras
        self.runs = 0

    def check(self, settings):
        return self.inpainter.check(settings)

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.inpainter.run(*args, **kwargs)


class Records(logging.Handler):
    def __init__(self, name: str):
        super().__init__()
        self.name_wanted, self.records = name, []

    def emit(self, record):
        if record.name == self.name_wanted:  # not a child logger's record passing by
            self.records.append(record)


@contextlib.contextmanager
def records_of(name: str):
    """The records of one logger, caught on the logger itself: `serve` stops inpaintkit.server from propagating."""
    handler, logger = Records(name), logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def access_log():
    """The access log's JSON lines, parsed."""
    with records_of("inpaintkit.server.access") as records:
        yield Parsed(records)


@pytest.fixture
def service_log():
    """The service's own events (errors with their tracebacks)."""
    with records_of("inpaintkit.server") as records:
        yield records


class Parsed:
    def __init__(self, records: list[logging.LogRecord]):
        self.records = records

    def __iter__(self):
        return iter([json.loads(record.getMessage()) for record in self.records])


@pytest.fixture(scope="module")
def client(inpainter9):
    with TestClient(create_app(inpainter9, LIMITS)) as test_client:
        yield test_client


# -- item 1: a per-request budget of denoiser calls, checked before the job queues --------------------------------


def test_step_budget_refuses_before_queuing_naming_both_numbers(inpainter9):
    recording = RecordingInpainter(inpainter9)
    config = ServiceConfig(max_steps=10, max_images=2, timeout=10)
    with TestClient(create_app(lambda: recording, config)) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200)
        over = inpaint(test_client, data={"steps": "6", "num_images": "2"}, accept="application/json")
        assert_error(over, 422, "needs 12 denoiser steps (6 per image x 2), more than this service's limit of 10")
        assert "lower steps, num_images" in over.json()["error"]
        # The request: RePaint with jump_length 1 revisits every step; 50 + 99 x 49 = 4,901 calls, within the
        # core's per-image bound (10,000) but over this budget. Refused at once, never run.
        repaint = {"method": "repaint", "steps": "50", "jump_length": "1", "jump_n_sample": "100"}
        assert_error(inpaint(test_client, data=repaint), 422, "needs 4,901 denoiser steps")
        assert "jump_n_sample" in inpaint(test_client, data=repaint).json()["error"]  # the field, not --jump-n-sample
        assert recording.runs == 0
        within = inpaint(test_client, data={"steps": "5", "num_images": "2"}, accept="application/json")
        assert within.status_code == 200 and recording.runs == 1
        assert test_client.get("/v1/models").json()["limits"]["max_steps"] == 10


def test_default_budget_fits_the_default_repaint_job_at_max_images():
    from inpaintkit.methods import METHODS

    settings = InpaintSettings(method="repaint", num_images=ServiceConfig.max_images)
    assert METHODS["repaint"].denoiser_calls(settings) * settings.num_images <= ServiceConfig.max_steps


# -- item 2: should_stop reaches the job; a job that cannot fit its deadline is refused up front -----------------


class StuckInEncode(RecordingInpainter):
    """A job that never reaches a step (as a huge tiled VAE encode): only should_stop can end it."""

    def __init__(self, inpainter):
        super().__init__(inpainter)
        self.stopped = threading.Event()

    def run(self, pixels, mask, settings, callback=None, should_stop=None):
        self.runs += 1
        if should_stop is None:
            return self.inpainter.run(pixels, mask, settings, callback)  # the old worker: the job just finishes
        assert callback is not None  # the step callback is kept beside should_stop
        wait_until(should_stop, timeout=20)  # polled as the engine polls it between VAE tiles
        self.stopped.set()
        raise Cancelled("Stopped while encoding the image.")


def test_the_worker_passes_should_stop_so_a_deadline_ends_a_job_outside_the_steps(inpainter9):
    stuck = StuckInEncode(inpainter9)
    with TestClient(create_app(lambda: stuck, ServiceConfig(timeout=0.5))) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200)
        assert_error(inpaint(test_client), 504, "0.5 s deadline")
        wait_until(stuck.stopped.is_set)  # the worker's should_stop turned True once the deadline passed
        wait_until(lambda: app_idle(test_client))


def app_idle(test_client) -> bool:
    return test_client.app.state.worker.running is None


def test_a_job_that_cannot_fit_its_deadline_is_refused_and_a_cheap_one_accepted(inpainter9):
    recording = RecordingInpainter(inpainter9)
    app = create_app(lambda: recording, ServiceConfig(timeout=30))
    with TestClient(app) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200)
        worker = app.state.worker
        # Injected speed: a 10-step job on this 64x64 image took 24 s, so 20 steps take at the least
        # 24 s x (20 + decode + encode) / (10 + decode + encode) = 41 s, past the 30 s deadline.
        worker.speeds.record(job_cost(10, 1, SIZE * SIZE), 24.0)
        refused = inpaint(test_client, data={"steps": "20"})
        assert_error(refused, 422, "would take about 41 s at this service's recent speed, more than its 30 s deadline")
        assert recording.runs == 0  # refused before queuing
        accepted = inpaint(test_client, data={"steps": "1"})
        assert accepted.status_code == 200 and recording.runs == 1
        assert_background_kept(accepted.content)


def test_the_first_job_is_accepted_and_teaches_the_speed(inpainter9):
    with TestClient(create_app(inpainter9, ServiceConfig(timeout=30))) as test_client:
        worker = test_client.app.state.worker
        cost = job_cost(2, 1, SIZE * SIZE)
        assert worker.estimated_seconds(cost) is None  # nothing to judge by yet: accept
        assert inpaint(test_client, data={"steps": "2"}).status_code == 200
        assert worker.estimated_seconds(cost) > 0


def test_a_slow_small_job_does_not_lock_bigger_jobs_out():
    """A small job's time is mostly fixed work its cost does not count (the reviewer's case: a 72x72 one-step job
    took 6.5 s on a new size, then every 256x256 job was refused as '38 s' though it ran in 6 s)."""
    speeds = Speeds()
    speeds.record(job_cost(1, 1, 72 * 72), 6.5)
    assert speeds.estimate(job_cost(5, 1, 256 * 256)) is None  # not comparable: accepted, and it teaches
    speeds.record(job_cost(5, 1, 256 * 256), 6.4)
    assert speeds.estimate(job_cost(5, 1, 256 * 256)) == pytest.approx(6.4)
    speeds.record(job_cost(5, 1, 256 * 256), 30.0)  # one slow run (another process took the CPU)
    assert speeds.estimate(job_cost(5, 1, 256 * 256)) == pytest.approx(6.4)  # the best recent speed counts


def test_old_speeds_age_out():
    now = [0.0]
    speeds = Speeds(clock=lambda: now[0])
    speeds.record(10.0, 100.0)
    assert speeds.estimate(10.0) == pytest.approx(100.0)
    now[0] = RECENT_SECONDS + 1
    assert speeds.estimate(10.0) is None  # a refused job never runs: without this it could be refused forever


def test_job_cost_counts_the_pixels_that_reach_the_model():
    photo = (3072, 4096, 3)
    assert model_pixels(photo, InpaintSettings(), 512) == 3072 * 4096
    assert model_pixels(photo, InpaintSettings(crop_padding=32), 512) == 512 * 512  # the window at native size
    # Per image the steps and one decode; the encode once per job.
    assert job_cost(50, 2, 10**6) == pytest.approx(50 * 2 + VAE_DECODE_CALLS * 2 + VAE_ENCODE_CALLS)


# -- item 3: a dead job frees its place in the queue at once ---------------------------------------------------------


def test_a_job_whose_deadline_passed_in_the_queue_frees_its_place(inpainter9):
    gated = GatedInpainter(inpainter9)
    app = create_app(lambda: gated, ServiceConfig(max_queue=1, timeout=0.5))
    with TestClient(app) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200)
        first = threading.Thread(target=lambda: inpaint(test_client), daemon=True)
        try:
            first.start()
            wait_until(gated.entered.is_set)  # the worker is held: whatever comes next waits in the queue
            # Its deadline passes in the queue: 504, and its place is free before the reply leaves.
            assert_error(inpaint(test_client), 504, "deadline")
            assert test_client.get("/readyz").json()["queued"] == 0
            # Nobody waits, so the next client is queued (and times out in its turn), not refused with 429.
            assert_error(inpaint(test_client), 504, "deadline")
        finally:
            gated.gate.set()
        first.join(20)


# -- item 5: /readyz reports a running job, and a stuck one as not ready -------------------------------------------


def test_readyz_reports_busy_while_a_job_runs_and_stuck_past_its_deadline(inpainter9):
    gated = GatedInpainter(inpainter9)
    app = create_app(lambda: gated, ServiceConfig(timeout=30))
    with TestClient(app) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200)
        worker = app.state.worker
        results = []
        sender = threading.Thread(target=lambda: results.append(inpaint(test_client)), daemon=True)
        try:
            sender.start()
            wait_until(gated.entered.is_set)
            busy = test_client.get("/readyz")
            assert busy.status_code == 200, busy.text
            assert busy.json()["status"] == "busy" and busy.json()["queued"] == 0 and busy.json()["running_s"] >= 0
            job = worker.running
            margin = stuck_margin(30)
            worker.clock = lambda: job.deadline + margin - 1  # late, but within the margin: still busy
            assert test_client.get("/readyz").json()["status"] == "busy"
            worker.clock = lambda: job.deadline + margin + 1  # past it: an orchestrator should restart the service
            stuck = test_client.get("/readyz")
            assert stuck.status_code == 503 and stuck.json()["status"] == "stuck"
            assert "past its deadline" in stuck.json()["error"] and stuck.json()["running_s"] > margin
        finally:
            gated.gate.set()
        sender.join(20)
        assert [each.status_code for each in results] == [200]
        wait_until(lambda: app_idle(test_client))
        assert test_client.get("/readyz").json() == {"status": "ready", "queued": 0}
        status_schema = test_client.get("/openapi.json").json()["components"]["schemas"]["Status"]
        assert "running_s" in status_schema["properties"]


def test_stuck_margin_is_30_s_or_half_the_timeout():
    assert stuck_margin(10) == 30 and stuck_margin(300) == 150


# -- item 4: text fields and the settings JSON are bounded before they are parsed ----------------------------------


def test_an_oversized_settings_field_is_refused_before_parsing(client):
    junk = b"\xff" * (MAX_SETTINGS_BYTES + 1)  # not even UTF-8: the size is judged before any decoding
    as_file = client.post("/v1/inpaint", files={**job_files(), "settings": ("settings.json", junk)})
    assert_error(as_file, 422, "The settings field is larger than the limit of 65,536 bytes")
    big_json = json.dumps({"prompt": "a" * MAX_SETTINGS_BYTES})
    as_text = client.post("/v1/inpaint", data={"settings": big_json}, files=job_files())
    assert_error(as_text, 422, f"The settings field ({len(big_json):,} bytes) is larger than the limit")


def test_a_text_field_longer_than_the_text_limit_is_refused_in_one_short_sentence(client):
    too_long = MAX_TEXT_LENGTH + 1
    assert_error(
        inpaint(client, data={"prompt": "a" * too_long}),
        422,
        f"Form field prompt is {too_long:,} characters long, more than the limit of {MAX_TEXT_LENGTH:,}",
    )
    number = inpaint(client, data={"guidance": "1" * too_long})
    assert_error(number, 422, "Form field guidance is")
    assert len(number.json()["error"]) < 200  # the value is not echoed back
    at_limit = inpaint(client, data={"prompt": "a" * MAX_TEXT_LENGTH})  # the limit itself is allowed
    assert at_limit.status_code == 200, at_limit.text


def test_a_bad_value_is_quoted_short(client):
    response = inpaint(client, data={"steps": "x" * 5000})
    assert_error(response, 422, "Setting steps must be a whole number, got 'xxxx")
    assert len(response.json()["error"]) < 200


# -- item 7: a client that hangs up mid-upload is a 499 line, not a 500 with a traceback ---------------------------


def asgi_post(app, chunks: list[bytes], content_type: bytes) -> list[dict]:
    """POST /v1/inpaint to the bare ASGI app: the body's chunks, then the client disconnects. Returns what was sent."""
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/inpaint",
        "raw_path": b"/v1/inpaint",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", content_type)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_client_disconnecting_mid_upload_is_logged_499_without_a_traceback(inpainter9, access_log, service_log):
    app = create_app(inpainter9, LIMITS)  # no lifespan needed: the body is read before the worker is involved
    first_chunks = [b"--b\r\nContent-Disposition: form-data; ", b'name="steps"\r\n\r\n']  # then the client is gone
    asgi_post(app, first_chunks, b"multipart/form-data; boundary=b")
    (line,) = access_log
    sent = sum(map(len, first_chunks))
    assert line["status"] == 499 and f"disconnected after sending {sent} bytes" in line["error"], line
    assert service_log == []  # no "unexpected error", no traceback


# -- item 10: a multipart body cut short, Pillow's object reprs ----------------------------------------------------


def multipart_body(boundary: str, closed: bool) -> bytes:
    """A valid multipart body (image, mask, then the steps field last), with or without its close delimiter."""
    parts = []
    for name, filename, data in (("image", "photo.png", IMAGE_PNG), ("mask", "mask.png", MASK_PNG)):
        disposition = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
        parts.append(f"--{boundary}\r\n{disposition}\r\nContent-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="steps"\r\n\r\n1'.encode())
    return b"".join(parts) + (f"\r\n--{boundary}--\r\n".encode() if closed else b"")


def test_a_multipart_body_without_its_closing_boundary_is_refused(client):
    headers = {"content-type": "multipart/form-data; boundary=xyz", "accept": "image/png"}
    complete = client.post("/v1/inpaint", content=multipart_body("xyz", closed=True), headers=headers)
    assert complete.status_code == 200, complete.text  # the same body, closed, is a good request
    cut = client.post("/v1/inpaint", content=multipart_body("xyz", closed=False), headers=headers)
    assert_error(cut, 400, "The multipart body ends before its closing boundary")


def test_a_truncated_png_message_shows_no_object_repr(client):
    response = inpaint(client, files=job_files(IMAGE_PNG[:40]))
    assert_error(response, 422, "The image could not be decoded as PNG")
    assert "<_io" not in response.json()["error"] and " at 0x" not in response.json()["error"]


# -- an unexpected error is still JSON ---------------------------------------------------------------------------


class BrokenCheck(RecordingInpainter):
    def check(self, settings):
        raise RuntimeError("a bug in the checks")


def test_an_unexpected_error_is_a_json_500_logged_with_its_traceback(inpainter9, access_log, service_log):
    app = create_app(lambda: BrokenCheck(inpainter9))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200)
        response = inpaint(test_client)
        assert_error(response, 500, "An unexpected error occurred (RuntimeError)")
        assert "a bug in the checks" not in response.json()["error"]  # the details stay in the log
        assert inpaint(test_client, data={"steps": "x"}).status_code == 422  # and the service carries on
    (logged,) = [record for record in service_log if record.levelno >= logging.ERROR]
    assert logged.exc_info is not None and "a bug in the checks" in str(logged.exc_info[1])  # the traceback is logged
    line = next(each for each in access_log if each["id"] == response.headers["x-request-id"])
    assert line["status"] == 500 and "RuntimeError" in line["error"]


def test_shutting_down_answers_the_queued_jobs_at_once(inpainter9):
    """The reviewer's case: after SIGTERM the queued jobs waited for the running job (minutes at the default
    timeout) just to be told 503. GracefulServer.handle_exit calls close() then reject_waiting()."""
    gated = GatedInpainter(inpainter9)
    app = create_app(lambda: gated, ServiceConfig(max_queue=2))
    with TestClient(app) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200)
        worker, answers = app.state.worker, []
        running = threading.Thread(target=lambda: inpaint(test_client), daemon=True)
        queued = threading.Thread(target=lambda: answers.append(inpaint(test_client)), daemon=True)
        try:
            running.start()
            wait_until(gated.entered.is_set)
            queued.start()
            wait_until(lambda: worker.queued == 1)
            worker.close()
            worker.reject_waiting()
            queued.join(10)
            assert not gated.gate.is_set()  # the running job still holds the worker
            assert_error(answers[0], 503, "shutting down")
        finally:
            gated.gate.set()
            running.join(20)


@pytest.mark.parametrize("field, value", [("steps", "1_0"), ("steps", "٣"), ("guidance", "1_0.5"), ("steps", "2.0")])
def test_form_numbers_are_plain_ascii_decimals(field, value, inpainter9):
    """Python's int() and float() accept digit separators and other scripts' digits; a form field is a number as
    the README describes it (the reviewer ran 10 steps from '1_0' and 3 from an Arabic-Indic digit)."""
    with TestClient(create_app(inpainter9, LIMITS)) as test_client:
        assert_error(inpaint(test_client, data={field: value}), 422, f"Setting {field} must be")
