"""The AUTOMATIC1111 API (/sdapi/v1, issue 17) driven the way its clients drive it: the real `webuiapi` client against
a live server, openOutpaint's request shapes replayed, and the /v1 bad-input corpus on img2img, each refusal a 4xx in
A1111's error shape with one sentence. Tiny random-weight models, 64x48 images, 1-3 steps."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time

import httpx
import numpy as np
import pytest
import webuiapi
from fastapi.testclient import TestClient
from PIL import Image

from inpaintkit.server import ServiceConfig, create_app

from .conftest import box_mask, gradient_image
from .helpers import png_claiming_size
from .test_server import wait_until
from .test_server_live import uvicorn_thread

WIDTH, HEIGHT = 64, 48
BOX = (16, 12, 44, 36)  # left, top, right, bottom: the hole, well inside the picture
IMAGE = gradient_image(WIDTH, HEIGHT)
MASK = box_mask(WIDTH, HEIGHT, BOX)
INSIDE, OUTSIDE = MASK >= 128, MASK < 128
CONFIG = ServiceConfig(max_pixels=128 * 128, max_body=256 * 1024, timeout=60.0, max_images=4)
A1111_ERROR_KEYS = {"error", "detail", "body", "errors"}


def png_bytes(picture: np.ndarray | Image.Image) -> bytes:
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + b64(data)


IMAGE_B64, MASK_B64 = b64(png_bytes(IMAGE)), b64(png_bytes(MASK))


def decoded_png(text: str) -> Image.Image:
    """A reply image: raw base64 (no data: prefix, as A1111 sends it) of a PNG."""
    assert not text.startswith("data:")
    image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
    assert image.format == "PNG"
    image.load()
    return image


def metadata(image: Image.Image) -> dict:
    """Our settings, from the PNG's `inpaintkit` text chunk."""
    return json.loads(image.info["inpaintkit"])


def body(**fields) -> dict:
    """A small, valid img2img body (mask_blur 0, not "only masked": the outside must come back byte-identical)."""
    return {
        "init_images": [IMAGE_B64],
        "mask": MASK_B64,
        "prompt": "a red ball",
        "steps": 1,
        "seed": 3,
        "mask_blur": 0,
        "inpaint_full_res": False,
        "width": WIDTH,
        "height": HEIGHT,
        "denoising_strength": 1.0,
        **fields,
    }


def assert_outside_kept(image: Image.Image, original: np.ndarray = IMAGE, outside: np.ndarray = OUTSIDE) -> None:
    pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == original.shape
    assert np.array_equal(pixels[outside], original[outside])  # exact: paste-back, mask_blur 0


def assert_a1111_error(response, status: int, phrase: str) -> None:
    """A1111's error shape, with our one sentence (no traceback, no newline) as its detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert set(error) == A1111_ERROR_KEYS, error
    detail = error["detail"]
    assert phrase in detail, error
    assert "Traceback" not in detail and "\n" not in detail and detail.endswith((".", ")")), error
    assert error["errors"] == f"{status}: {detail}"


@pytest.fixture(scope="module")
def server(inpainter9):
    with uvicorn_thread(create_app(inpainter9, CONFIG)) as url:
        yield url


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def api(server):
    port = int(server.rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, steps=2)


def img2img(http, **fields) -> httpx.Response:
    return http.post("/sdapi/v1/img2img", json=body(**fields))


# -- the real webuiapi client ----------------------------------------------------------------------------------------


def test_webuiapi_masked_img2img_keeps_the_outside_and_reports_seeds(api):
    result = api.img2img(
        images=[Image.fromarray(IMAGE)],
        mask_image=Image.fromarray(MASK),
        mask_blur=0,
        inpaint_full_res=False,
        width=WIDTH,
        height=HEIGHT,
        denoising_strength=1.0,
        seed=5,
        batch_size=2,
        prompt="a red ball",
    )
    assert len(result.images) == 2
    assert result.info["seed"] == 5 and result.info["all_seeds"] == [5, 6]  # batch seeds are consecutive
    assert len(result.info["infotexts"]) == 2
    for k, image in enumerate(result.images):
        assert image.size == (WIDTH, HEIGHT)
        assert_outside_kept(image)
        inside = np.asarray(image.convert("RGB"))[INSIDE]
        # Inside was repainted at strength 1: most of its values change (a random model never returns the input).
        assert np.mean(inside != IMAGE[INSIDE]) > 0.5
        assert image.info["parameters"] == result.info["infotexts"][k]  # A1111's infotext, as clients parse it
        assert metadata(image)["seed"] == result.info["all_seeds"][k]
        assert f"Seed: {5 + k}," in image.info["parameters"] and "Sampler: Euler a" in image.info["parameters"]
    assert result.info["width"] == WIDTH and result.info["height"] == HEIGHT


def test_webuiapi_inpaint_full_res_returns_the_input_size(api):
    # A1111's "only masked": the window around the mask (plus padding) is inpainted and pasted back into the whole
    # image, whose size the answer keeps whatever width x height says (96x96 here).
    result = api.img2img(
        images=[Image.fromarray(IMAGE)],
        mask_image=Image.fromarray(MASK),
        mask_blur=0,
        inpaint_full_res=True,
        inpaint_full_res_padding=8,
        width=96,
        height=96,
        denoising_strength=1.0,
        seed=7,
    )
    (image,) = result.images
    assert image.size == (WIDTH, HEIGHT)
    assert_outside_kept(image)
    assert metadata(image)["crop_padding"] == 8
    assert "Inpaint area: Only masked" in image.info["parameters"]
    assert "Masked area padding: 8" in image.info["parameters"]
    assert result.info["all_seeds"] == [7]


def test_webuiapi_lists_samplers_schedulers_and_the_loaded_model(api):
    samplers = {each["name"] for each in api.get_samplers()}
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM"} <= samplers
    assert {each["name"] for each in api.get_schedulers()} >= {"automatic", "karras"}
    models = api.util_get_model_names()
    assert len(models) == 1
    assert api.get_options()["sd_model_checkpoint"] == models[0]
    assert api.util_get_current_model() == models[0]


def test_webuiapi_set_model_accepts_the_loaded_one_and_refuses_another(api, http):
    (title,) = api.util_get_model_names()
    api.util_set_model(title)  # raises on a non-JSON reply; the service answers null
    assert api.set_options({"sd_model_checkpoint": title}) is None
    refused = api.set_options({"sd_model_checkpoint": "other"})
    assert set(refused) == A1111_ERROR_KEYS and "'other' is not a model this service can load" in refused["detail"]
    assert_a1111_error(
        http.post("/sdapi/v1/options", json={"sd_model_checkpoint": "other"}),
        422,
        "'other' is not a model this service can load",
    )
    assert api.get_options()["sd_model_checkpoint"] == title  # nothing changed


# -- interrupt and progress --------------------------------------------------------------------------------------


class SlowJob:
    """A 500-step img2img (seconds of work on the tiny model) in a thread, for progress and interrupt to act on."""

    def __init__(self, url: str):
        self.url = url
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            self.response = client.post("/sdapi/v1/img2img", json=body(steps=500, width=64, height=64, **square()))

    def wait_for_steps(self, http, at_least: int = 1) -> dict:
        """The first /progress that shows the job `at_least` steps in (polled, never timed)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            progress = http.get("/sdapi/v1/progress", params={"skip_current_image": "true"}).json()
            if progress["state"]["sampling_step"] >= at_least:
                return progress
            assert self.thread.is_alive(), f"the job ended before it was seen running: {self.response.text}"
            time.sleep(0.01)
        raise AssertionError("the slow job never showed progress")

    def result(self) -> httpx.Response:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the job did not end"
        return self.response


def square() -> dict:
    image = gradient_image(64, 64, seed=1)
    return {"init_images": [b64(png_bytes(image))], "mask": b64(png_bytes(box_mask(64, 64, (16, 16, 48, 48))))}


def test_progress_moves_while_a_job_runs(http, server):
    idle = http.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    job = SlowJob(server)
    try:
        job.wait_for_steps(http, at_least=2)
        shown = http.get("/sdapi/v1/progress", params={"skip_current_image": "false"}).json()
        assert 0 < shown["progress"] < 1
        assert shown["state"]["job_count"] == 1 and shown["state"]["sampling_step"] > 0
        assert shown["state"]["sampling_steps"] >= shown["state"]["sampling_step"]
        assert shown["eta_relative"] >= 0
        preview = decoded_png(shown["current_image"])  # a cheap latent preview, raw base64 PNG
        assert preview.width > 0 and preview.height > 0
        skipped = http.get("/sdapi/v1/progress", params={"skip_current_image": "true"}).json()
        assert skipped["current_image"] is None and skipped["state"]["job_count"] == 1
        later = job.wait_for_steps(http, at_least=shown["state"]["sampling_step"] + 1)
        assert later["progress"] > shown["progress"]  # it moves
    finally:
        http.post("/sdapi/v1/interrupt")
        job.result()


def interrupted_reply(response: httpx.Response, route: str) -> dict:
    """A1111 answers an interrupted job with its partly denoised image: 200, one image, which says so."""
    assert response.status_code == 200, response.text
    (image,) = response.json()["images"]
    recorded = json.loads(Image.open(io.BytesIO(base64.b64decode(image))).text["inpaintkit"])
    stopped = re.fullmatch(rf"by POST {route} after step (\d+) of 500", recorded["interrupted"])
    assert stopped is not None, recorded["interrupted"]
    assert 1 <= int(stopped.group(1)) < 500  # it did stop early: the denoising ended at the interrupt
    return recorded


def test_interrupt_ends_the_running_job_and_the_service_carries_on(http, server, api):
    assert api.interrupt() == {}  # nothing running: a no-op, as in A1111
    job = SlowJob(server)
    job.wait_for_steps(http)
    assert api.interrupt() == {}
    interrupted_reply(job.result(), "/sdapi/v1/interrupt")
    # The reply can overtake the worker's bookkeeping by a moment: /progress goes idle soon after (polled, not timed).
    wait_until(lambda: http.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0)
    assert http.get("/sdapi/v1/progress").json()["progress"] == 0
    after = img2img(http)
    assert after.status_code == 200, after.text
    assert_outside_kept(decoded_png(after.json()["images"][0]))
    assert "interrupted" not in json.loads(Image.open(io.BytesIO(base64.b64decode(after.json()["images"][0]))).text[
        "inpaintkit"
    ])  # fmt: skip


def test_skip_also_ends_the_running_job(http, server, api):
    job = SlowJob(server)
    job.wait_for_steps(http)
    assert api.skip() is None  # A1111 answers null
    interrupted_reply(job.result(), "/sdapi/v1/skip")


# -- sampler and schedule-type names -----------------------------------------------------------------------------

SAMPLER_CASES = [
    ({"sampler_name": "Euler a"}, "euler-a", "Euler a"),
    ({"sampler_index": "Euler a"}, "euler-a", "Euler a"),
    ({"sampler_name": "k_euler_a"}, "euler-a", "Euler a"),
    ({"sampler_name": "DPM++ 2M", "scheduler": "Karras"}, "dpm++2m-karras", "DPM++ 2M"),
    ({"sampler_name": "DPM++ 2M", "scheduler": "automatic"}, "dpm++2m-karras", "DPM++ 2M"),
    ({"sampler_name": "DPM++ 2M", "scheduler": "normal"}, "dpm++2m", "DPM++ 2M"),
    ({"sampler_name": "DPM++ 2M Karras"}, "dpm++2m-karras", "DPM++ 2M"),  # the pre-1.9 single name
    ({"sampler_name": "Euler", "scheduler": "Karras"}, "euler-karras", "Euler"),
    ({"sampler_name": "DDIM"}, "ddim", "DDIM"),
    ({}, "euler", "Euler"),  # A1111's API default sampler_index
]


@pytest.mark.parametrize("fields, ours, a1111", SAMPLER_CASES, ids=[json.dumps(case[0]) for case in SAMPLER_CASES])
def test_a1111_sampler_names_map_to_our_schedulers(http, fields, ours, a1111):
    response = img2img(http, **fields)
    assert response.status_code == 200, response.text
    image = decoded_png(response.json()["images"][0])
    assert metadata(image)["scheduler"] == ours
    assert f"Sampler: {a1111}," in image.info["parameters"]
    assert json.loads(response.json()["info"])["sampler_name"] == a1111


@pytest.mark.parametrize(
    "fields, phrase",
    [
        ({"sampler_name": "Heun"}, "Unknown sampler 'Heun'"),
        ({"sampler_index": "DPM++ SDE"}, "Unknown sampler 'DPM++ SDE'"),
        ({"sampler_name": "Euler", "scheduler": "Exponential"}, "Unknown schedule type 'Exponential'"),
        ({"sampler_name": "Euler a", "scheduler": "Karras"}, "Sampler 'Euler a' runs here with the schedule types"),
    ],
)
def test_unknown_sampler_is_a_422_naming_the_known_ones(http, fields, phrase):
    response = img2img(http, **fields)
    assert_a1111_error(response, 422, phrase)
    if "Unknown sampler" in phrase:
        listed = [each["name"] for each in http.get("/sdapi/v1/samplers").json()]
        assert all(name in response.json()["detail"] for name in listed)


# -- openOutpaint ------------------------------------------------------------------------------------------------

OPENOUTPAINT_STARTUP = [
    "/sdapi/v1/options",
    "/sdapi/v1/prompt-styles",
    "/sdapi/v1/samplers",
    "/sdapi/v1/upscalers",
    "/sdapi/v1/sd-models",
    "/sdapi/v1/schedulers",
    "/sdapi/v1/scripts",
    "/sdapi/v1/loras",
    "/sdapi/v1/progress",
    "/sdapi/v1/progress?skip_current_image=true",
]


def openoutpaint_request(**changes) -> dict:
    """openOutpaint's dream-tool body (js/index.js): canvas.toDataURL() images (opaque RGBA, black where empty),
    seed as a string, the sampler only as sampler_index, and keys A1111 does not know."""
    init = np.zeros((64, 64, 4), dtype=np.uint8)
    init[..., 3] = 255
    init[:, :40, :3] = gradient_image(40, 64)  # the left part has content; the rest is empty canvas
    mask = np.zeros((64, 64, 4), dtype=np.uint8)
    mask[..., 3] = 255
    mask[:, 40:, :3] = 255  # white = repaint: outpaint to the right
    request = {
        "prompt": "a landscape",
        "negative_prompt": "people",
        "seed": "-1",
        "cfg_scale": 7.0,
        "steps": 2,
        "batch_size": 2,
        "n_iter": 2,
        "sampler_index": "DPM++ 2M",
        "scheduler": "automatic",
        "width": 64,
        "height": 64,
        "denoising_strength": 1,
        "mask_blur": 0,
        "mask": data_uri(png_bytes(mask)),
        "init_images": [data_uri(png_bytes(init))],
        "inpaint_full_res": False,
        "inpainting_fill": 2,
        "styles": [],
        "restore_faces": False,
        "alwayson_scripts": {},
        "outpainting_fill": 2,
        "enable_hr": False,
        "hr_scale": 2.0,
        "hr_upscaler": "None",
        "hr_second_pass_steps": 0,
        "hr_resize_x": 0,
        "hr_resize_y": 0,
        "hr_square_aspect": False,
        "hr_denoising_strength": 0.7,
        "hr_fix_lock_px": 0,
        "resolution": 512,
        "upscale_x": 2,
        "cn_reference_fidelity": 0.5,
        "enable_refiner": False,
        **changes,
    }
    return request


def test_openoutpaint_startup_calls_all_answer(http):
    for path in OPENOUTPAINT_STARTUP:
        response = http.get(path)
        assert response.status_code == 200, (path, response.text)
        response.json()  # openOutpaint parses every one
    options = http.get("/sdapi/v1/options").json()
    assert "use_scale_latent_for_hires_fix" not in options  # truthy would mean an outdated A1111 to openOutpaint
    assert options["img2img_color_correction"] is False and options["inpainting_mask_weight"] == 1.0
    (model,) = http.get("/sdapi/v1/sd-models").json()
    assert options["sd_model_checkpoint"] == model["title"]
    assert http.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    # Selecting the model posts to "/options/" (trailing slash); its recommended settings are ours already.
    selected = http.post("/sdapi/v1/options/", json={"sd_model_checkpoint": model["title"]})
    assert selected.status_code == 200 and selected.content == b"null"
    recommended = http.post("/sdapi/v1/options", json={"img2img_color_correction": False, "inpainting_mask_weight": 1})
    assert recommended.status_code == 200 and recommended.json() is None


def test_openoutpaint_img2img_request_is_answered(http):
    request = openoutpaint_request()
    response = http.post("/sdapi/v1/img2img", json=request)
    assert response.status_code == 200, response.text
    reply = response.json()
    seeds = json.loads(reply["info"])["all_seeds"]  # what openOutpaint reads
    assert len(reply["images"]) == len(seeds) == 4  # batch_size 2 x n_iter 2
    assert seeds == list(range(seeds[0], seeds[0] + 4))  # "-1": a random first seed, then consecutive
    init = np.asarray(Image.open(io.BytesIO(base64.b64decode(request["init_images"][0].split(",")[1]))).convert("RGB"))
    keep = np.zeros((64, 64), dtype=bool)
    keep[:, :40] = True
    for k, encoded in enumerate(reply["images"]):
        image = decoded_png(encoded)
        assert_outside_kept(image, init, keep)
        assert metadata(image)["scheduler"] == "dpm++2m-karras" and metadata(image)["seed"] == seeds[k]
        assert metadata(image)["fill"] == "noise"  # inpainting_fill 2, latent noise


def test_openoutpaint_seed_as_a_number_string_is_the_seed(http):
    response = http.post("/sdapi/v1/img2img", json=openoutpaint_request(seed="12345", batch_size=1, n_iter=1))
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["all_seeds"] == [12345]


# -- refusals and bad input: 4xx, A1111's shape, one sentence; the service answers normally afterwards ----------


def truncated_png() -> str:
    data = png_bytes(IMAGE)
    return b64(data[: len(data) // 2])


REFUSALS = {
    "alwayson_scripts": ({"alwayson_scripts": {"ControlNet": {"args": []}}}, 422, "alwayson_scripts ControlNet"),
    "soft inpainting": ({"alwayson_scripts": {"Soft Inpainting": {"args": [True]}}}, 422, "no A1111 scripts"),
    "script_name": ({"script_name": "outpainting mk2"}, 422, "script_name 'outpainting mk2'"),
    "script_args": ({"script_args": [1, 2]}, 422, "script_args"),
    "restore_faces": ({"restore_faces": True}, 422, "restore_faces"),
    "styles": ({"styles": ["cinematic"]}, 422, "styles"),
    "tiling": ({"tiling": True}, 422, "tiling"),
    "subseed_strength": ({"subseed_strength": 0.5}, 422, "subseed_strength"),
    "save_images": ({"save_images": True}, 422, "save_images"),
    "mask_blur_x differs": ({"mask_blur": None, "mask_blur_x": 4, "mask_blur_y": 8}, 422, "mask_blur_x 4"),
    "other model override": (
        {"override_settings": {"sd_model_checkpoint": "v1-5-pruned.safetensors [6ce0161689]"}},
        422,
        "override_settings: sd_model_checkpoint 'v1-5-pruned.safetensors [6ce0161689]' is not loaded",
    ),
    "unknown override": ({"override_settings": {"CLIP_stop_at_last_layers": 2}}, 422, "CLIP_stop_at_last_layers"),
    "inpainting_fill out of range": ({"inpainting_fill": 7}, 422, "inpainting_fill 7"),
    "resize_mode out of range": ({"resize_mode": 9}, 422, "resize_mode 9"),
    "negative padding": ({"inpaint_full_res": True, "inpaint_full_res_padding": -4}, 422, "padding"),
    "initial_noise_multiplier": ({"initial_noise_multiplier": 0.5}, 422, "initial_noise_multiplier"),
    "truncated png": ({"init_images": [truncated_png()]}, 422, "could not be decoded"),
    "bomb over the service limit": ({"init_images": [b64(png_claiming_size(200, 200))]}, 413, "40,000 pixels"),
    "bomb over pillow's limit": ({"init_images": [b64(png_claiming_size(20000, 20000))]}, 413, "decompression"),
    "bomb as mask": ({"mask": b64(png_claiming_size(20000, 20000))}, 413, "mask"),
    "not base64": ({"init_images": ["this is not base64!"]}, 422, "init_images[0] is not base64"),
    "not an image": ({"init_images": [b64(b"hello, I am text")]}, 415, "not a PNG, JPEG or WebP"),
    "empty image": ({"init_images": [""]}, 422, "init_images[0] is empty"),
    "no init image": ({"init_images": []}, 422, "init_images is missing"),
    "two init images": ({"init_images": [IMAGE_B64, IMAGE_B64]}, 422, "init_images holds 2 images"),
    "wrong mask size": ({"mask": b64(png_bytes(box_mask(32, 32, (0, 0, 8, 8))))}, 422, "The mask is 32x32"),
    "steps not a number": ({"steps": "abc"}, 422, "steps"),
    "steps zero": ({"steps": 0}, 422, "Steps must be at least 1"),
    "steps past training": ({"steps": 5000}, 422, "at most the model's"),
    "cfg not a number": ({"cfg_scale": "lots"}, 422, "cfg_scale"),
    "strength out of range": ({"denoising_strength": 1.5}, 422, "Strength must be in (0, 1]"),
    "too many images": ({"batch_size": 3, "n_iter": 2}, 422, "at most 4 images per request"),
    "width x height too large": ({"width": 512, "height": 512}, 422, "width x height must be"),
    "unknown inpaintkit option": ({"inpaintkit": {"colour": "red"}}, 422, "colour"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusal_is_a_4xx_in_a1111_shape_and_the_service_carries_on(http, case):
    fields, status, phrase = REFUSALS[case]
    assert_a1111_error(img2img(http, **fields), status, phrase)
    after = img2img(http)
    assert after.status_code == 200, after.text
    assert_outside_kept(decoded_png(after.json()["images"][0]))


@pytest.mark.parametrize(
    "content, phrase",
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (json.dumps(body(steps=10**400)).encode(), "far outside any useful range"),
    ],
    ids=["not json", "not an object", "huge number"],
)
def test_malformed_json_body_is_a_422(http, content, phrase):
    response = http.post("/sdapi/v1/img2img", content=content, headers={"content-type": "application/json"})
    assert_a1111_error(response, 422, phrase)


def test_oversize_body_is_a_413(http):
    response = http.post("/sdapi/v1/img2img", json=body(init_images=["A" * 300_000]))
    assert_a1111_error(response, 413, "limit of 262,144")


def test_options_we_cannot_honour_are_refused(http):
    assert_a1111_error(http.post("/sdapi/v1/options", json={"sd_vae": "vae-ft-mse"}), 422, "sd_vae")
    assert_a1111_error(http.post("/sdapi/v1/options", json={"img2img_color_correction": True}), 422, "cannot be set")
    assert_a1111_error(http.post("/sdapi/v1/options/", json={"not_a_setting": 1}), 422, "not_a_setting")
    assert_a1111_error(http.post("/sdapi/v1/options", json=[1]), 422, "must be a JSON object")


def test_txt2img_refusals(http):
    assert_a1111_error(http.post("/sdapi/v1/txt2img", json={"steps": 1, "enable_hr": True}), 422, "enable_hr")
    assert_a1111_error(http.post("/sdapi/v1/txt2img", json={"steps": 1, "width": 4096}), 422, "width x height")


# -- txt2img, inpaintkit's own object, the echoed parameters ----------------------------------------------------


def test_webuiapi_txt2img_returns_width_by_height(api):
    # txt2img here is an inpainting of a blank (grey) canvas of width x height, all of it repainted: what
    # openOutpaint asks for when its selected area is empty.
    result = api.txt2img(prompt="a house", width=WIDTH, height=HEIGHT, steps=2, seed=11)
    (image,) = result.images
    assert image.size == (WIDTH, HEIGHT)
    assert result.info["all_seeds"] == [11] and result.info["width"] == WIDTH and result.info["height"] == HEIGHT
    assert "Size: 64x48" in image.info["parameters"] and image.info["parameters"] == result.info["infotexts"][0]
    assert metadata(image)["strength"] == 1.0


def test_inpaintkit_object_chooses_our_method(http):
    default = decoded_png(img2img(http).json()["images"][0])
    assert metadata(default)["method"] == "native"  # the 9-channel model's own
    response = img2img(http, inpaintkit={"method": "blend"})
    assert response.status_code == 200, response.text
    image = decoded_png(response.json()["images"][0])
    assert metadata(image)["method"] == "blend"
    assert "Inpaint method: blend" in image.info["parameters"]
    assert json.loads(response.json()["info"])["inpaintkit"]["method"] == "blend"
    assert_outside_kept(image)


def test_parameters_echo_the_request_without_images_unless_asked(http):
    response = img2img(http, prompt="a cat", steps=2, seed=21)
    parameters = response.json()["parameters"]
    assert parameters["init_images"] is None and parameters["mask"] is None
    assert parameters["prompt"] == "a cat" and parameters["steps"] == 2 and parameters["seed"] == 21
    assert parameters["mask_blur"] == 0 and parameters["inpaint_full_res"] is False
    included = img2img(http, include_init_images=True).json()["parameters"]
    assert included["init_images"] == [IMAGE_B64] and included["mask"] == MASK_B64


def test_rgba_mask_uses_its_alpha(http):
    # An RGBA mask with transparency is its alpha channel (A1111's create_binary_mask): black RGB everywhere.
    rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgba[..., 3] = MASK
    response = img2img(http, mask=data_uri(png_bytes(rgba)))
    assert response.status_code == 200, response.text
    image = decoded_png(response.json()["images"][0])
    assert_outside_kept(image)
    assert np.mean(np.asarray(image.convert("RGB"))[INSIDE] != IMAGE[INSIDE]) > 0.5  # the alpha's hole repainted


def test_inverted_mask_repaints_the_outside(http):
    response = img2img(http, inpainting_mask_invert=1)
    assert response.status_code == 200, response.text
    image = decoded_png(response.json()["images"][0])
    assert_outside_kept(image, IMAGE, INSIDE)  # the box is now what is kept, exactly
    assert "Mask mode: Inpaint not masked" in image.info["parameters"]


# -- auth --------------------------------------------------------------------------------------------------------


def test_basic_auth_and_key_on_a1111_routes_key_only_on_v1(inpainter9):
    config = ServiceConfig(timeout=60.0, api_auth=(("u", "p"),), api_key="k")
    with uvicorn_thread(create_app(inpainter9, config)) as url:
        port = int(url.rsplit(":", 1)[1])
        api = webuiapi.WebUIApi(host="127.0.0.1", port=port, username="u", password="p", steps=2)
        assert len(api.util_get_model_names()) == 1
        result = api.img2img(
            images=[Image.fromarray(IMAGE)], mask_image=Image.fromarray(MASK), mask_blur=0, inpaint_full_res=False,
            width=WIDTH, height=HEIGHT, seed=1, denoising_strength=1.0,
        )  # fmt: skip
        assert_outside_kept(result.image)
        anonymous = webuiapi.WebUIApi(host="127.0.0.1", port=port, steps=1)
        with pytest.raises(RuntimeError) as refused:
            anonymous.img2img(images=[Image.fromarray(IMAGE)], mask_image=Image.fromarray(MASK))
        assert refused.value.args[0] == 401
        with httpx.Client(base_url=url, timeout=30) as http:
            for credentials in ({}, {"auth": ("u", "wrong")}, {"headers": {"X-API-Key": "wrong"}}):
                response = http.get("/sdapi/v1/options", **credentials)
                assert_a1111_error(response, 401, "Authentication is required")
                assert response.headers["www-authenticate"] == "Basic"
            assert http.get("/sdapi/v1/options", headers={"X-API-Key": "k"}).status_code == 200
            assert http.get("/sdapi/v1/options", headers={"Authorization": "Bearer k"}).status_code == 200
            # /v1 is unchanged: the key only, its own error shape
            refused_v1 = http.get("/v1/models", auth=("u", "p"))
            assert refused_v1.status_code == 401 and list(refused_v1.json()) == ["error"]
            assert http.get("/v1/models", headers={"X-API-Key": "k"}).status_code == 200


def test_basic_auth_alone_leaves_v1_open(inpainter9):
    with TestClient(create_app(inpainter9, ServiceConfig(api_auth=(("u", "p"),)))) as client:
        assert_a1111_error(client.get("/sdapi/v1/sd-models"), 401, "HTTP Basic credentials (--api-auth)")
        assert client.get("/sdapi/v1/sd-models", auth=("u", "p")).status_code == 200
        assert client.get("/sdapi/v1/sd-models", headers={"X-API-Key": "anything"}).status_code == 401
        assert client.get("/v1/models").status_code == 200  # no key configured: /v1 is open, as before


def test_width_and_height_resize_when_not_only_masked(http):
    # Not "only masked": A1111 works, and answers, at width x height; resize_mode 1 crops to the aspect ratio first.
    response = img2img(http, width=96, height=96, resize_mode=1)
    assert response.status_code == 200, response.text
    assert decoded_png(response.json()["images"][0]).size == (96, 96)
    info = json.loads(response.json()["info"])
    assert (info["width"], info["height"]) == (96, 96)


def test_send_images_false_answers_the_info_without_images(http):
    response = img2img(http, send_images=False, seed=9)
    assert response.status_code == 200, response.text
    assert response.json()["images"] == [] and json.loads(response.json()["info"])["all_seeds"] == [9]


def test_negative_batch_size_is_refused(http):
    """Each count is checked, not only their product (-1 x -1 ran one image)."""
    assert_a1111_error(img2img(http, batch_size=-1, n_iter=-1), 422, "batch_size must be at least 1, got -1")


def test_width_and_height_are_not_checked_when_only_the_mask_s_window_is_used(http):
    """inpaint_full_res works at the model's size and answers the input's: webuiapi's 512x512 default must not be
    refused by a service whose pixel limit is smaller."""
    response = img2img(http, inpaint_full_res=True, width=100_000, height=100_000, steps=1, denoising_strength=1.0)
    assert response.status_code == 200, response.text


def test_cors_preflight_for_a_browser_client(inpainter9):
    config = ServiceConfig(cors_allow_origins=("http://localhost:3456",))
    with TestClient(create_app(inpainter9, config)) as client:
        preflight = client.options(
            "/sdapi/v1/img2img",
            headers={
                "Origin": "http://localhost:3456",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3456"
        other = client.get("/sdapi/v1/options", headers={"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers


# -- what the review found ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["eta", "s_churn", "image_cfg_scale"])
def test_nan_or_infinity_even_in_an_unused_field_is_a_422_before_the_job(http, field):
    """JSON has no NaN: echoing one back in `parameters` failed after the whole job had run (a 500)."""
    response = http.post(
        "/sdapi/v1/img2img",
        content=json.dumps(body(**{field: float("nan")})).encode(),  # json.dumps writes NaN, as some clients do
        headers={"Content-Type": "application/json"},
    )
    assert_a1111_error(response, 422, f"{field} must be a finite number")


def test_plain_img2img_without_a_mask_answers_width_by_height_even_with_only_masked_on(http):
    """A1111 has nothing to crop without a mask (or with a blank one) and works at width x height."""
    without = body(width=32, height=24, inpaint_full_res=True)
    del without["mask"]
    response = http.post("/sdapi/v1/img2img", json=without)
    assert response.status_code == 200, response.text
    assert decoded_png(response.json()["images"][0]).size == (32, 24)
    blank = b64(png_bytes(np.zeros((HEIGHT, WIDTH), dtype=np.uint8)))
    response = http.post("/sdapi/v1/img2img", json=body(mask=blank, width=32, height=24, inpaint_full_res=True))
    assert decoded_png(response.json()["images"][0]).size == (32, 24)


def test_mask_round_false_keeps_the_grey_levels_for_the_soft_method(http):
    band = MASK.copy()
    band[:6, :] = 100  # grey, below 128: rounded, it is kept; unrounded, soft changes it a little
    fields = {"mask": b64(png_bytes(band)), "inpaintkit": {"method": "soft"}}
    rounded = http.post("/sdapi/v1/img2img", json=body(**fields))
    kept = http.post("/sdapi/v1/img2img", json=body(mask_round=False, **fields))
    assert rounded.status_code == kept.status_code == 200, (rounded.text, kept.text)
    top = np.s_[:6, :]
    assert np.array_equal(np.asarray(decoded_png(rounded.json()["images"][0]).convert("RGB"))[top], IMAGE[top])
    assert not np.array_equal(np.asarray(decoded_png(kept.json()["images"][0]).convert("RGB"))[top], IMAGE[top])


def test_base64_wrapped_in_lines_is_read(http):
    wrapped = "\r\n".join(IMAGE_B64[k : k + 76] for k in range(0, len(IMAGE_B64), 76))
    response = http.post("/sdapi/v1/img2img", json=body(init_images=[wrapped]))
    assert response.status_code == 200, response.text


def test_a_16_bit_grey_image_is_scaled_not_clipped(http):
    levels = np.array([[1000, 20000] * (WIDTH // 2)] * HEIGHT, dtype=np.uint16)
    sixteen = Image.fromarray(levels, mode="I;16")
    response = http.post("/sdapi/v1/img2img", json=body(init_images=[b64(png_bytes(sixteen))]))
    assert response.status_code == 200, response.text
    outside = np.asarray(decoded_png(response.json()["images"][0]).convert("L"))[OUTSIDE]
    assert set(np.unique(outside)) == {4, 78}  # 1000 and 20000 of 65535, in 8 bits (clipping made them all 255)


def test_null_fields_mean_their_defaults_as_in_a1111(http):
    response = http.post("/sdapi/v1/img2img", json=body(seed=None, prompt=None, alwayson_scripts=None, styles=None))
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["prompt"] == ""


def test_the_infotext_names_what_ran_when_the_inpaintkit_object_changes_it(http):
    response = http.post(
        "/sdapi/v1/img2img",
        json=body(sampler_name="Euler", inpaintkit={"scheduler": "euler-a", "mask_blur": 3, "crop_padding": 4}),
    )
    assert response.status_code == 200, response.text
    text = json.loads(response.json()["info"])["infotexts"][0]
    assert "Sampler: Euler a," in text and "Mask blur: 3" in text and "Masked area padding: 4" in text


def test_options_with_a_trailing_slash_and_the_auth_challenge_that_fits(inpainter9):
    with TestClient(create_app(inpainter9, ServiceConfig(api_key="k"))) as client:
        assert client.get("/sdapi/v1/options/", headers={"X-API-Key": "k"}).status_code == 200
        refused = client.get("/sdapi/v1/options")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"  # no browser dialog


def test_api_auth_credentials_must_be_ascii():
    from inpaintkit.errors import InputError
    from inpaintkit.server.config import parse_api_auth

    assert parse_api_auth("u:p:with:colons") == (("u", "p:with:colons"),)
    with pytest.raises(InputError, match="must be ASCII"):
        parse_api_auth("ü:pä")


@pytest.mark.parametrize(
    "prompt, phrase",
    [
        ("a cat <lyco:thing:1>", "this service loads LoRAs only"),
        ("a cat <lora:style:abc>", "the weight 'abc' is not a number"),
        ("a cat <lora:style:0.5:0.2>", "separate text-encoder and UNet weights are not supported"),
        ("a cat <lora::1>", "write <lora:NAME:WEIGHT>"),
    ],
)
def test_a_lora_tag_that_cannot_mean_anything_here_is_one_sentence(http, prompt, phrase):
    assert_a1111_error(img2img(http, prompt=prompt), 422, phrase)
