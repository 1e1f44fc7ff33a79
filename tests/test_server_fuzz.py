"""Fuzzing the service with schemathesis against its own OpenAPI schema: whatever arrives, no 5xx.

In-process (ASGI), seeded (hypothesis derandomize), a few hundred requests in all. The first test sends what the
schema allows and what it forbids, as generated (random bytes as images, random fields); the second sends a real
image, so that the generated settings reach validation, the model check and inference.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from PIL import Image

from inpaintkit.server import ServiceConfig, create_app

from .conftest import gradient_image

# A generous deadline: the fuzz looks for crashes (500), not for slow settings, which the deadline turns into 504.
CONFIG = ServiceConfig(max_queue=4, max_pixels=64 * 64, max_body=64 * 1024, timeout=60.0, max_images=2)
FUZZ = settings(
    max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def schema(inpainter9):
    app = create_app(inpainter9, CONFIG)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


def assert_no_server_error(case) -> None:
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.path} -> {response.status_code} {response.text[:300]}\n{case.body!r:.500}"
    )
    if response.status_code >= 400:
        assert set(response.json()) >= {"error"} or case.path == "/readyz"


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_server_error_on_generated_requests(schema, mode):
    paths = set()
    for operation in operations(schema):
        if mode == schemathesis.GenerationMode.NEGATIVE and (operation.method != "post" or not operation.body):
            continue  # the GET endpoints and the bodiless POSTs take no input, so nothing can break their schema
        paths.add(operation.path)

        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode).map(with_small_work))
        def fuzz(case):
            assert_no_server_error(case)

        fuzz()
    posts = {"/v1/inpaint", "/sdapi/v1/img2img", "/sdapi/v1/txt2img"}
    expected = {"/healthz", "/readyz", "/v1/models", "/sdapi/v1/samplers", "/sdapi/v1/progress", "/sdapi/v1/interrupt"}
    assert paths >= (expected | posts if mode.is_positive else posts)


def with_small_work(case):
    """A1111 requests need no image (txt2img), so their generated settings reach inference: kept to a few steps."""
    if case.path.startswith("/sdapi/") and isinstance(case.body, dict):
        for name, cap in {"steps": 3, "n_iter": 1, "batch_size": 1}.items():
            value = case.body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                case.body[name] = cap
            elif name == "steps" and name not in case.body:
                case.body[name] = cap
    return case


def rgba_png(size: int) -> bytes:
    """A small image whose alpha is the mask (the right half transparent = repaint)."""
    alpha = np.full((size, size), 255, dtype=np.uint8)
    alpha[:, size // 2 :] = 0
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([gradient_image(size, size), alpha])).save(buffer, format="PNG")
    return buffer.getvalue()


VALID_IMAGE = rgba_png(32)  # not smaller: at 16 px the tiny model's GroupNorms get one value per group and fail
# Settings that multiply the work (steps, RePaint's resampling) are kept small so the fuzz stays within seconds.
CAPS = {"steps": 3, "jump_n_sample": 3}


def with_real_image(case):
    if isinstance(case.body, dict):
        case.body["image"] = VALID_IMAGE
        case.body.pop("mask", None)
        case.body.setdefault("steps", CAPS["steps"])  # not the default 50 steps: too slow for a fuzz
        for name, cap in CAPS.items():
            value = case.body.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                case.body[name] = min(value, cap)
    return case


def test_no_server_error_on_generated_settings_with_a_real_image(schema):
    (operation,) = [each for each in operations(schema) if each.path == "/v1/inpaint"]
    statuses = []

    @FUZZ
    @given(case=operation.as_strategy().map(with_real_image))
    def fuzz(case):
        response = case.call()
        statuses.append(response.status_code)
        assert response.status_code < 500, (
            f"{response.status_code} {response.text[:300]}\n{ {k: v for k, v in case.body.items() if k != 'image'} }"
        )

    fuzz()
    assert 200 in statuses and any(400 <= status < 500 for status in statuses), sorted(set(statuses))
