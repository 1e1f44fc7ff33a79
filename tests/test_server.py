"""The HTTP service in-process (TestClient): every endpoint, every bad input as a 4xx with one sentence, and the
queue, deadline, out-of-memory, API-key and logging behaviour. Live-server tests are in test_server_live.py."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
import time
from dataclasses import fields

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from inpaintkit.errors import Cancelled
from inpaintkit.io import MAX_IMAGE_PIXELS
from inpaintkit.server import ServiceConfig, create_app
from inpaintkit.settings import InpaintSettings

from .conftest import box_mask, gradient_image
from .helpers import png_claiming_size

SIZE = 64
BOX = (16, 16, 48, 40)
LIMITS = ServiceConfig(max_queue=2, max_pixels=128 * 128, max_body=256 * 1024, timeout=30.0, max_images=2)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


IMAGE = gradient_image(SIZE, SIZE)
MASK = box_mask(SIZE, SIZE, BOX)
IMAGE_PNG, MASK_PNG = png_bytes(IMAGE), png_bytes(MASK)


def job_files(image: bytes = IMAGE_PNG, mask: bytes | None = MASK_PNG) -> dict:
    files = {"image": ("photo.png", image, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return files


def inpaint(client, data=None, files=None, accept="image/png", headers=None):
    data = {"steps": "1", "seed": "3", **(data or {})}
    return client.post(
        "/v1/inpaint",
        data=data,
        files=job_files() if files is None else files,
        headers={"Accept": accept, **(headers or {})},
    )


def assert_background_kept(png: bytes, image: np.ndarray = IMAGE, mask: np.ndarray = MASK) -> None:
    """Paste-back (mask_grow 0, mask_blur 0): every pixel outside the mask is byte-identical to the input."""
    output = decode_png(png)
    assert output.shape == image.shape
    outside = mask < 128
    assert np.array_equal(output[outside], image[outside])


def assert_error(response, status: int, phrase: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and phrase in body["error"], body
    assert "Traceback" not in body["error"] and "\n" not in body["error"]


@pytest.fixture(scope="module")
def client(inpainter9):
    with TestClient(create_app(inpainter9, LIMITS)) as test_client:
        yield test_client


# -- endpoints ---------------------------------------------------------------------------------------------------


def test_inpaint_returns_png_keeping_the_background(client):
    response = inpaint(client, data={"prompt": "a red ball"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-inpaintkit-seed"] == "3"
    assert_background_kept(response.content)
    with Image.open(io.BytesIO(response.content)) as image:  # the settings travel in the PNG, as with the CLI
        assert json.loads(image.text["inpaintkit"])["prompt"] == "a red ball"


def test_inpaint_json_has_base64_images_seeds_and_settings(client):
    response = inpaint(client, data={"num_images": "2", "seed": "10"}, accept="application/json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seeds"] == [10, 11] and body["seed"] == 10
    assert len(body["images"]) == 2
    for encoded in body["images"]:
        assert_background_kept(base64.b64decode(encoded))
    assert body["settings"]["seed"] == 10 and body["settings"]["steps"] == 1 and body["settings"]["method"] == "native"


def test_json_is_the_default_reply(client):
    assert inpaint(client, accept="*/*").headers["content-type"] == "application/json"
    assert inpaint(client, accept="application/json, image/png").headers["content-type"] == "application/json"
    assert inpaint(client, accept="image/png, application/json").headers["content-type"] == "image/png"


def test_alpha_channel_is_the_mask_when_no_mask_is_sent(client):
    rgba = np.dstack([IMAGE, 255 - MASK])  # transparent = repaint
    response = inpaint(client, files=job_files(png_bytes(rgba), mask=None))
    assert response.status_code == 200, response.text
    assert_background_kept(response.content)


def test_jpeg_and_webp_are_accepted(client):
    for image_format in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.fromarray(IMAGE).save(buffer, format=image_format, quality=95)
        response = inpaint(client, files=job_files(buffer.getvalue()))
        assert response.status_code == 200, (image_format, response.text)
        with Image.open(buffer) as decoded:  # the background is the decoded input's, byte for byte
            assert_background_kept(response.content, image=np.asarray(decoded.convert("RGB")))


def test_form_fields_are_converted_by_their_settings_kind(client):
    data = {
        "guidance": "3.5",
        "paste_back": "True",
        "color_match": "no",
        "mask_grow": "2",
        "crop_padding": "",
        "negative_prompt": "blur",
    }
    settings = inpaint(client, data=data, accept="application/json").json()["settings"]
    assert settings["guidance"] == 3.5 and settings["paste_back"] is True and settings["color_match"] is False
    assert settings["mask_grow"] == 2 and settings["crop_padding"] is None and settings["negative_prompt"] == "blur"


def test_settings_as_one_json_field_and_defaults_as_the_cli(client):
    response = client.post(
        "/v1/inpaint", data={"settings": json.dumps({"seed": 4, "strength": 0.5, "steps": 2})}, files=job_files()
    )
    settings = response.json()["settings"]
    assert settings["seed"] == 4 and settings["strength"] == 0.5 and settings["steps"] == 2
    defaults = InpaintSettings()
    assert settings["guidance"] == 7.5  # left unset, it is the SD family's default, recorded with the outputs
    for name in (
        "prompt",
        "scheduler",
        "mask_grow",
        "mask_blur",
        "paste_back",
        "fill",
        "color_match",
        "num_images",
    ):
        assert settings[name] == getattr(defaults, name), name


def test_health_readiness_models_and_docs(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "queued": 0}
    models = client.get("/v1/models").json()
    (model,) = models["models"]
    assert model["ready"] and model["untrained"] and model["capabilities"]["unet_in_channels"] == 9
    assert {method["name"] for method in models["methods"]} >= {"native", "blend", "repaint"}
    assert models["defaults"] == {**InpaintSettings().as_dict(), "guidance": 7.5}  # the SD family's guidance
    assert models["limits"]["max_pixels"] == LIMITS.max_pixels
    assert client.get("/docs").status_code == 200


def test_openapi_form_lists_every_setting(client):
    body = client.get("/openapi.json").json()["paths"]["/v1/inpaint"]["post"]["requestBody"]
    properties = body["content"]["multipart/form-data"]["schema"]["properties"]
    assert set(properties) == {"image", "mask", "settings"} | {field.name for field in fields(InpaintSettings)}
    assert properties["steps"] == {"type": "integer", "default": 50}
    assert properties["image"]["format"] == "binary"


# -- bad input: each gets its 4xx and one sentence, and the service answers normally afterwards ------------------


def truncated_png() -> bytes:
    data = png_bytes(IMAGE)
    return data[: len(data) // 2]


def chunked_junk():
    """A body with no Content-Length, larger than the limit: only counting the received bytes can stop it."""
    for _ in range(40):
        yield b"x" * 8192


MULTIPART = {"content-type": "multipart/form-data; boundary=b"}
BAD_REQUESTS = {
    "json body": (
        dict(content=b'{"image": "x"}', headers={"content-type": "application/json"}),
        415,
        "Send multipart/form-data",
    ),
    "no content type": (dict(content=b"abc"), 415, "Send multipart/form-data"),
    "non-image bytes": (dict(files=job_files(b"hello, I am text")), 415, "not a PNG, JPEG or WebP"),
    "gif": (dict(files=job_files(b"GIF89a" + bytes(40))), 415, "not a PNG, JPEG or WebP"),
    "non-image mask": (dict(files=job_files(mask=b"\x00" * 40)), 415, "The mask is not a PNG"),
    "empty image": (dict(files=job_files(b"")), 422, "The image file is empty"),
    "truncated png": (dict(files=job_files(truncated_png())), 422, "could not be decoded"),
    "bomb over the service limit": (dict(files=job_files(png_claiming_size(200, 200))), 413, "200x200 = 40,000 pixels"),
    "bomb over pillow's limit": (dict(files=job_files(png_claiming_size(20000, 20000))), 413, "decompression bombs"),
    "bomb as mask": (dict(files=job_files(mask=png_claiming_size(20000, 20000))), 413, "The mask declares more pixels"),
    "oversize body": (
        dict(files=job_files(b"\x89PNG\r\n\x1a\n" + bytes(300_000))),
        413,
        "more than this service's limit of 262,144",
    ),
    "oversize chunked body": (dict(content=chunked_junk(), headers=MULTIPART), 413, "at least"),
    "malformed multipart": (
        dict(content=b"garbage", headers=MULTIPART),
        400,
        "could not be parsed (Invalid multipart data",
    ),
    "multipart without boundary": (
        dict(content=b"--b\r\n", headers={"content-type": "multipart/form-data"}),
        400,
        "Missing boundary",
    ),
    "mask size mismatch": (
        dict(files=job_files(mask=png_bytes(box_mask(32, 32, (0, 0, 8, 8))))),
        422,
        "The mask is 32x32 pixels but the image is 64x64",
    ),
    "no mask and no alpha": (dict(files=job_files(mask=None)), 422, "no alpha channel"),
    "missing image": (
        dict(files={"mask": ("mask.png", MASK_PNG, "image/png")}),
        400,
        "The image file field is missing",
    ),
    "image as text field": (
        dict(files={"mask": ("mask.png", MASK_PNG)}, data={"image": "photo.png"}),
        400,
        "must be sent as a file part",
    ),
    "strength out of range": (dict(data={"strength": "1.5"}), 422, "Strength must be in (0, 1]"),
    "steps zero": (dict(data={"steps": "0"}), 422, "Steps must be at least 1"),
    "steps past training": (dict(data={"steps": "5000"}), 422, "at most the model's"),
    "negative guidance": (dict(data={"guidance": "-1"}), 422, "Guidance must be between 0 and 100"),
    "seed out of range": (dict(data={"seed": "-1"}), 422, "Seed must be between 0"),
    "not a number": (dict(data={"guidance": "lots"}), 422, "Setting guidance must be a number, got 'lots'"),
    "not a whole number": (dict(data={"steps": "2.5"}), 422, "Setting steps must be a whole number"),
    "not a boolean": (dict(data={"paste_back": "maybe"}), 422, "Setting paste_back must be true or false"),
    "infinite guidance": (dict(data={"guidance": "inf"}), 422, "finite number"),
    "huge whole number": (dict(data={"steps": "1" + "0" * 400}), 422, "Setting steps is far outside any useful range"),
    "huge number in json": (
        dict(data={"settings": '{"guidance": 1' + "0" * 400 + "}"}),
        422,
        "Setting guidance is far outside",
    ),
    "unknown scheduler": (dict(data={"scheduler": "fastest"}), 422, "Unknown scheduler 'fastest'"),
    "unknown setting": (dict(data={"colour": "red"}), 422, "Unknown setting(s) colour"),
    "option of another method": (dict(data={"jump_length": "3"}), 422, "applies only to --method repaint"),
    "scheduler the method cannot use": (
        dict(data={"method": "repaint", "scheduler": "euler", "steps": "20"}),
        422,
        "use --scheduler ddim",
    ),
    "too many images": (
        dict(data={"num_images": "3"}, headers={"Accept": "application/json"}),
        422,
        "at most 2 images",
    ),
    "several images as one png": (dict(data={"num_images": "2"}), 406, "Accept: image/png returns one image"),
    "settings not json": (dict(data={"settings": "{steps: 2"}), 400, "not valid JSON"),
    "settings not an object": (dict(data={"settings": "[2]"}), 400, "must be a JSON object"),
    "setting given twice": (dict(data={"settings": '{"steps": 2}'}), 400, "Setting steps is given more than once"),
    "json steps as text": (
        dict(data={"steps": None, "settings": '{"steps": "2"}'}),
        422,
        "Setting steps must be a whole number, got '2'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_its_4xx_and_the_service_carries_on(case, client):
    request, status, phrase = BAD_REQUESTS[case]
    request = dict(request)
    headers = {"Accept": "image/png", **request.pop("headers", {})}
    if "content" in request:
        response = client.post("/v1/inpaint", headers=headers, **request)
    else:
        data = {key: value for key, value in {"steps": "1", **request.pop("data", {})}.items() if value is not None}
        files = request.pop("files", job_files())
        response = client.post("/v1/inpaint", data=data, files=files, headers=headers)
    assert_error(response, status, phrase)
    after = inpaint(client)
    assert after.status_code == 200, after.text
    assert_background_kept(after.content)


def test_declared_length_over_the_limit_is_refused_before_reading(client):
    # The declared length alone decides: the (small) body is never read.
    response = client.post("/v1/inpaint", content=b"--b--", headers={**MULTIPART, "Content-Length": str(10**9)})
    assert_error(response, 413, "1,000,000,000 bytes")


def test_unknown_paths_and_methods_answer_json(client):
    assert_error(client.get("/v2/inpaint"), 404, "Not Found")
    assert_error(client.get("/v1/inpaint"), 405, "Method Not Allowed")


# -- queue, deadline, out of memory ------------------------------------------------------------------------------


class GatedInpainter:
    """The real inpainter, but each run first waits for `gate` (so a test can hold the worker busy)."""

    def __init__(self, inpainter):
        self.inpainter, self.components = inpainter, inpainter.components
        self.gate, self.entered = threading.Event(), threading.Event()

    def check(self, settings):
        return self.inpainter.check(settings)

    def run(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(20), "test gate never opened"
        return self.inpainter.run(*args, **kwargs)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_full_queue_answers_429_with_retry_after(inpainter9):
    gated = GatedInpainter(inpainter9)
    app = create_app(lambda: gated, ServiceConfig(max_queue=1))
    with TestClient(app) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200)  # the worker thread calls the loader
        results = []
        senders = [threading.Thread(target=lambda: results.append(inpaint(test_client)), daemon=True) for _ in range(2)]
        try:
            senders[0].start()
            wait_until(gated.entered.is_set)  # the first job runs, held at the gate
            senders[1].start()
            wait_until(lambda: app.state.worker.queued == 1)  # the second waits: the queue (max 1) is full
            busy = test_client.get("/readyz")  # a running job is reported, still ready (200)
            assert busy.status_code == 200 and busy.json()["status"] == "busy" and busy.json()["queued"] == 1
            refused = inpaint(test_client)
        finally:
            gated.gate.set()
        assert_error(refused, 429, "The queue is full (1 jobs waiting)")
        assert int(refused.headers["retry-after"]) >= 1
        for sender in senders:
            sender.join(20)
        assert [each.status_code for each in results] == [200, 200]
        assert inpaint(test_client).status_code == 200


def test_deadline_cancels_the_job_between_steps_504(inpainter9, monkeypatch):
    endings: list[str] = []  # how each job ended, seen from inside the worker: the 504 alone does not prove it stopped
    run = inpainter9.run

    def recorded_run(*args, **kwargs):
        try:
            images = run(*args, **kwargs)
        except Cancelled as stopped:
            endings.append(str(stopped))
            raise
        endings.append("finished")
        return images

    monkeypatch.setattr(inpainter9, "run", recorded_run)
    with TestClient(create_app(inpainter9, ServiceConfig(timeout=0.5))) as test_client:
        started = time.monotonic()
        # 500 steps take about 4 s on one CPU thread; the deadline stops the job after about 0.5 s.
        response = inpaint(test_client, data={"steps": "500"})
        assert_error(response, 504, "0.5 s deadline")
        assert time.monotonic() - started < 2.0
        wait_until(lambda: endings)
        done, total = map(int, re.fullmatch(r"Stopped after step (\d+) of (\d+)\.", endings[0]).groups())
        assert done < total  # stopped between steps, well before the end (PNDM makes 501 UNet calls for 500 steps)
        # The worker is free again at once: the long job was stopped, not left running.
        assert inpaint(test_client).status_code == 200
        assert time.monotonic() - started < 3.0


class OutOfMemoryOnce(GatedInpainter):
    def run(self, *args, **kwargs):
        if not self.gate.is_set():
            self.gate.set()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inpainter.run(*args, **kwargs)


def test_out_of_memory_frees_the_cache_answers_503_and_keeps_serving(inpainter9, monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine, where the cache is emptied
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    with TestClient(create_app(lambda: OutOfMemoryOnce(inpainter9))) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200)
        assert_error(inpaint(test_client), 503, "ran out of memory")
        assert emptied == [True]
        after = inpaint(test_client)
        assert after.status_code == 200
        assert_background_kept(after.content)


# -- readiness while loading, API key, logs --------------------------------------------------------------------


def test_readyz_waits_for_the_model_and_reports_a_failed_load(inpainter9):
    loaded = threading.Event()

    def slow_load():
        assert loaded.wait(20)
        return inpainter9

    with TestClient(create_app(slow_load, model_name="slow")) as test_client:
        assert test_client.get("/healthz").status_code == 200
        assert (
            test_client.get("/readyz").status_code == 503 and test_client.get("/readyz").json()["status"] == "loading"
        )
        assert_error(inpaint(test_client), 503, "still loading")
        assert test_client.get("/v1/models").json()["models"] == [
            {"id": "slow", "ready": False, "untrained": None, "device": None, "dtype": None, "capabilities": None}
        ]
        loaded.set()
        wait_until(lambda: test_client.get("/readyz").status_code == 200)
        assert inpaint(test_client).status_code == 200

    def failing_load():
        raise OSError("no such model")

    with TestClient(create_app(failing_load)) as test_client:
        wait_until(lambda: test_client.get("/readyz").json()["status"] == "failed")
        assert test_client.get("/readyz").json()["error"] == "no such model"
        assert_error(inpaint(test_client), 503, "failed to load")


def test_api_key_is_required_on_v1_only(inpainter9):
    with TestClient(create_app(inpainter9, ServiceConfig(api_key="s3cret"))) as test_client:
        assert_error(test_client.get("/v1/models"), 401, "valid API key is required")
        assert_error(test_client.get("/v1/models", headers={"X-API-Key": "wrong"}), 401, "valid API key")
        assert_error(inpaint(test_client), 401, "valid API key")
        assert test_client.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert test_client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert inpaint(test_client, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert test_client.get("/healthz").status_code == 200 and test_client.get("/readyz").status_code == 200
        assert "securitySchemes" in test_client.get("/openapi.json").json()["components"]


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_one_json_log_line_per_request(client):
    handler, logger = Lines(), logging.getLogger("inpaintkit.server.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # `serve` sets INFO; in-process the level is the test's to set
    try:
        good, bad = inpaint(client), inpaint(client, data={"steps": "0"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    first, second = (json.loads(line) for line in handler.lines)
    assert first["id"] == good.headers["x-request-id"] and second["id"] == bad.headers["x-request-id"] != first["id"]
    assert (first["method"], first["path"], first["status"]) == ("POST", "/v1/inpaint", 200)
    assert first["queue_wait_s"] >= 0 and 0 < first["run_s"] <= first["total_s"]
    assert second["status"] == 422 and "Steps must be at least 1" in second["error"] and "run_s" not in second


def test_config_limits_are_validated():
    from inpaintkit import InputError

    for bad in (dict(max_queue=0), dict(timeout=0), dict(max_pixels=MAX_IMAGE_PIXELS + 1), dict(api_key=" ")):
        with pytest.raises(InputError):
            ServiceConfig(**bad)
