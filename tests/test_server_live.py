"""The service on a real socket: `inpaintkit serve` under load and under SIGTERM (subprocesses), and a client that
disconnects (uvicorn in a thread). Ports are chosen by the OS (port 0); every process is stopped by its test."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from inpaintkit.server import ServiceConfig, create_app

from .conftest import gradient_image
from .helpers import assert_one_line_error, run_cli, socket_listening
from .test_server import IMAGE_PNG, MASK_PNG, assert_background_kept, png_bytes, wait_until

SIZE = 64


class ServeProcess:
    """`inpaintkit serve` on the tiny model and a free port, its stderr collected line by line."""

    def __init__(self, model: Path, *options: str):
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "INPAINTKIT_API_KEY": ""}
        command = [
            sys.executable,
            "-m",
            "inpaintkit.cli",
            "serve",
            "--model",
            str(model),
            "--device",
            "cpu",
            "--port",
            "0",
            *options,
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = self._wait_for_url()
        wait_until(lambda: httpx.get(f"{self.url}/readyz").status_code == 200, timeout=60)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in self.lines:
                found = re.search(r"Uvicorn running on (http://[\d.]+:\d+)", line)
                if found:
                    return found.group(1)
            assert self.process.poll() is None, f"serve exited early: {self.lines}"
            time.sleep(0.05)
        raise AssertionError(f"serve did not start: {self.lines}")

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def request_log(self) -> list[dict]:
        return [json.loads(line) for line in self.lines if line.startswith("{") and '"path"' in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.reader.join(5)


@contextlib.contextmanager
def serve_process(model: Path, *options: str):
    server = ServeProcess(model, *options)
    try:
        yield server
    finally:
        server.stop()


def post_job(client: httpx.Client, image_png: bytes, steps: int = 1, seed: int = 0) -> httpx.Response:
    files = {"image": ("photo.png", image_png, "image/png"), "mask": ("mask.png", MASK_PNG, "image/png")}
    return client.post(
        "/v1/inpaint", files=files, data={"steps": str(steps), "seed": str(seed)}, headers={"Accept": "image/png"}
    )


def post_a1111_job(client: httpx.Client, image_png: bytes, seed: int = 0) -> httpx.Response:
    """The same job through the AUTOMATIC1111 route, as webuiapi sends it (data-URI images, JSON)."""
    as_uri = "data:image/png;base64,{}".format
    body = {
        "init_images": [as_uri(base64.b64encode(image_png).decode())],
        "mask": as_uri(base64.b64encode(MASK_PNG).decode()),
        "steps": 1, "seed": seed, "denoising_strength": 1.0, "mask_blur": 0, "inpaint_full_res": False,
        "width": SIZE, "height": SIZE, "sampler_name": "Euler a", "alwayson_scripts": {},
    }  # fmt: skip
    return client.post("/sdapi/v1/img2img", json=body)


CLIENTS, REQUESTS_PER_CLIENT = 20, 10  # 200 requests in all, in two halves of 100


def test_load_every_request_answered_backgrounds_kept_memory_flat(tiny9):
    with serve_process(tiny9, "--max-queue", "4", "--timeout", "30") as server:

        def client_session(client_index: int, requests: range) -> list[tuple[int, bool]]:
            outcomes = []
            with httpx.Client(base_url=server.url, timeout=30) as client:  # a hang fails the test within 30 s
                for k in requests:
                    image = gradient_image(SIZE, SIZE, seed=client_index * 100 + k)  # each request its own input
                    a1111 = client_index % 2 == 1  # half the clients speak A1111's API: one queue for both
                    response = (post_a1111_job if a1111 else post_job)(client, png_bytes(image), seed=k)
                    if response.status_code == 200:
                        png = base64.b64decode(response.json()["images"][0]) if a1111 else response.content
                        assert_background_kept(png, image=image)
                    else:
                        assert response.status_code == 429, response.text
                        message = response.json()["detail" if a1111 else "error"]
                        assert int(response.headers["retry-after"]) >= 1 and "queue is full" in message
                        time.sleep(0.02)  # a client that backs off a little, as Retry-After asks (but shorter)
                    outcomes.append((response.status_code, True))
            return outcomes

        def half(first: int) -> list[tuple[int, bool]]:
            requests = range(first, first + REQUESTS_PER_CLIENT // 2)
            with ThreadPoolExecutor(CLIENTS) as pool:
                return [
                    outcome
                    for each in pool.map(lambda index: client_session(index, requests), range(CLIENTS))
                    for outcome in each
                ]

        started = time.monotonic()
        first_half = half(0)
        rss_after_first = server.rss_bytes()
        second_half = half(REQUESTS_PER_CLIENT // 2)
        rss_after_second = server.rss_bytes()
        elapsed = time.monotonic() - started

        statuses = [status for status, _ in first_half + second_half]
        assert len(statuses) == CLIENTS * REQUESTS_PER_CLIENT and set(statuses) <= {200, 429}
        # The queue does serve: in each half at least its four places and the worker take jobs (about 40 in all here).
        assert statuses.count(200) >= 8, statuses.count(200)
        assert elapsed < 60
        # The first half warms everything up (allocator pools, torch's caches). A leak of one 64x64 job's images
        # and latents per request would add well over 20 MB over 100 requests; allocator noise stays below it.
        growth = rss_after_second - rss_after_first
        print(
            f"load: {statuses.count(200)} x 200, {statuses.count(429)} x 429 in {elapsed:.1f} s; "
            f"RSS {rss_after_first / 2**20:.0f} -> {rss_after_second / 2**20:.0f} MiB"
        )
        assert growth < 20 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over the second 100 requests"

        lines = [line for line in server.request_log() if line["path"] in ("/v1/inpaint", "/sdapi/v1/img2img")]
        assert sorted(line["status"] for line in lines) == sorted(statuses)  # one log line per request
        served = [line for line in lines if line["status"] == 200]
        assert all(line["queue_wait_s"] >= 0 and line["run_s"] > 0 and len(line["id"]) == 16 for line in served)


def test_sigterm_finishes_the_running_job_rejects_the_queued_and_exits_0(tiny9):
    with serve_process(tiny9, "--max-queue", "8", "--timeout", "60") as server:
        with ThreadPoolExecutor(5) as pool, httpx.Client(base_url=server.url, timeout=30) as client:
            # 100 steps take about 0.8 s on one CPU thread: one job runs while four wait.
            replies = [pool.submit(post_job, client, IMAGE_PNG, 100) for _ in range(5)]
            wait_until(lambda: httpx.get(f"{server.url}/readyz").json().get("queued") == 4, timeout=20)
            server.process.send_signal(signal.SIGTERM)
            responses = [reply.result(timeout=30) for reply in replies]  # every request is answered, none hangs
        exit_code = server.process.wait(30)
    statuses = sorted(response.status_code for response in responses)
    assert exit_code == 0, server.lines[-5:]
    assert statuses[0] == 200 and statuses.count(503) >= 3, statuses  # the running job (maybe the next) finishes
    for response in responses:
        if response.status_code == 200:
            assert_background_kept(response.content)
        else:
            assert "shutting down" in response.json()["error"]
    assert not any("Traceback" in line for line in server.lines)


@contextlib.contextmanager
def uvicorn_thread(app):
    """The app under a real uvicorn on a free loopback port, in a thread of this process."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=20)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(json.loads(record.getMessage()))


def test_client_disconnect_cancels_its_job(inpainter9):
    handler, logger = Lines(), logging.getLogger("inpaintkit.server.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with uvicorn_thread(create_app(inpainter9, ServiceConfig(timeout=60))) as url:
            wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200)
            with httpx.Client(base_url=url, timeout=0.5) as impatient:  # gives up (and hangs up) after 0.5 s
                with pytest.raises(httpx.ReadTimeout):
                    post_job(impatient, IMAGE_PNG, steps=500)  # about 4 s of work
            started = time.monotonic()
            with httpx.Client(base_url=url, timeout=30) as client:
                response = post_job(client, IMAGE_PNG)
            # Behind an abandoned-but-running 500-step job this would wait seconds; cancelled, it runs at once.
            assert response.status_code == 200 and time.monotonic() - started < 2.0
            assert_background_kept(response.content)
            wait_until(lambda: len(handler.records) >= 3)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    jobs = [record for record in handler.records if record["path"] == "/v1/inpaint"]
    assert [record["status"] for record in jobs] == [499, 200]
    assert jobs[1]["queue_wait_s"] < 1.0  # it waited only for the cancelled job's current step


class Problems(logging.Handler):
    """Every record at WARNING or above, from any logger: a client's hang-up must leave none."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_client_hanging_up_mid_upload_is_one_499_line_without_a_traceback(inpainter9):
    access, logger = Lines(), logging.getLogger("inpaintkit.server.access")
    problems = Problems()
    watched = [logging.getLogger(name) for name in ("uvicorn.error", "inpaintkit.server")]
    logger.addHandler(access)
    for each in watched:
        each.addHandler(problems)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with uvicorn_thread(create_app(inpainter9, ServiceConfig(timeout=60))) as url:
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=10) as connection:
                head = (
                    f"POST /v1/inpaint HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n"
                    "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
                )
                connection.sendall(head.encode() + b"--b\r\n" + b"x" * 1000)  # a hundredth of the promised body
            wait_until(lambda: access.records)  # the request ends when the server sees the connection close
    finally:
        logger.removeHandler(access)
        for each in watched:
            each.removeHandler(problems)
        logger.setLevel(level)
    (line,) = access.records
    assert line["status"] == 499 and "disconnected after sending" in line["error"], line
    assert problems.records == [], [record.getMessage() for record in problems.records]  # e.g. "Exception in ASGI"


def test_serve_refuses_bad_limits_with_exit_2(capsys):
    code, _, err = run_cli(["serve", "--max-queue", "0"], capsys)  # checked before anything starts
    assert_one_line_error(code, err, "The service's max-queue must be a whole number of at least 1, got 0.")


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--port", "70000"], "argument --port: a port is 0 to 65535, got 70000"),
        (["--port", "-1"], "argument --port: a port is 0 to 65535, got -1"),
        (["--max-body", "nan"], "argument --max-body: must be a positive number, got nan"),
        (["--timeout", "inf"], "argument --timeout: must be a positive number, got inf"),
        (["--api-key", ""], "The API key is empty; give a non-empty key or none."),  # not silently "no key"
    ],
)
def test_serve_refuses_bad_flags_in_one_sentence(flags, phrase, capsys):
    code, _, err = run_cli(["serve", *flags], capsys)
    assert_one_line_error(code, err, phrase)


def test_serve_reports_a_busy_port_before_loading_the_model(tmp_path, capsys):
    with socket_listening() as port:  # the model path does not exist: reaching the load would say so instead
        code, _, err = run_cli(["serve", "--port", port, "--device", "cpu", "--model", tmp_path / "missing"], capsys)
    assert_one_line_error(code, err, f"Cannot serve on 127.0.0.1:{port}")


def test_serve_exits_2_when_the_model_cannot_load(tmp_path, capsys):
    code, _, err = run_cli(["serve", "--port", "0", "--device", "cpu", "--model", tmp_path / "missing"], capsys)
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the service's log lines: the reason, in one line
    assert last.startswith("inpaintkit: error:") and "missing" in last
