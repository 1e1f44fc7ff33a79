"""The web UI: a real browser paints a mask and runs a job; gradio_client drives the API; errors are one sentence."""

from __future__ import annotations

import atexit
import contextlib
import html
import io
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

# Gradio's upload cache is content-addressed and, by default, one /tmp/gradio per machine: an app closing
# in one pytest worker deletes (delete_cache) the files of an identical upload in the other. One per process.
if "GRADIO_TEMP_DIR" not in os.environ:
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="inpaintkit-gradio-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

pytest.importorskip("gradio", reason="the web UI needs the 'ui' extra (gradio)")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import QueueError  # noqa: E402

from inpaintkit.cli import OneLineFormatter  # noqa: E402
from inpaintkit.errors import InputError  # noqa: E402
from inpaintkit.io import read_png_parameters  # noqa: E402
from inpaintkit.ui.app import BRUSH_SIZE  # noqa: E402
from inpaintkit.ui.editor import job_image_and_mask  # noqa: E402
from inpaintkit.ui.jobs import job_settings  # noqa: E402
from inpaintkit.ui.launch import private_cache  # noqa: E402

from .conftest import box_mask, gradient_image  # noqa: E402
from .helpers import assert_one_line_error, run_cli, socket_listening  # noqa: E402
from .ui_helpers import CHROMIUM_ARGS, InstrumentedInpainter, free_port, served  # noqa: E402

CHROMIUM = shutil.which("chromium")
# The stroke is known only to within a few pixels: the mouse path maps to image pixels with under one pixel of error
# (the editor shows the image at its integer zoom), the brush's anti-aliased rim adds about one pixel and pixel-centre
# conventions half a pixel. Beyond that band paste-back (mask blur 0, grow 0) must keep every byte.
STROKE_MARGIN = 3
ZOOM_LABEL = re.compile(r"^\d+%$")  # the image editor's zoom, in its toolbar


@pytest.fixture(scope="module")
def app(inpainter9):
    """The app serving the tiny model the way `inpaintkit ui` does, uploads capped at 1 MB; yields (url, recorder)."""
    recorder = InstrumentedInpainter(inpainter9)
    with served(recorder, max_queue=4, max_file_size_mb=1) as url:
        yield url, recorder


@pytest.fixture
def held_app(inpainter9):
    """An app whose jobs stop at their first step until released, with room for one waiting job."""
    holder = InstrumentedInpainter(inpainter9, hold=True)
    with served(holder, max_queue=1) as url:
        yield url, holder
        holder.release.set()


def client_for(url: str, tmp_path) -> Client:
    return Client(url, download_files=str(tmp_path), verbose=False)


def editor_value(path) -> dict:
    """The image editor's value as an API client sends it: a picture and no painted layers."""
    return {"background": handle_file(str(path)), "layers": [], "composite": None}


def save(array: np.ndarray, path) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def distance_to_segment(shape: tuple[int, int], start: tuple[float, float], end: tuple[float, float]) -> np.ndarray:
    """Each pixel's (centre's) Euclidean distance to the segment start-end, points given as (x, y)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    (x0, y0), (x1, y1) = start, end
    along = np.clip(((xs - x0) * (x1 - x0) + (ys - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0.0, 1.0)
    return np.hypot(xs - (x0 + along * (x1 - x0)), ys - (y0 + along * (y1 - y0)))


# -- in a real browser ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(
    CHROMIUM is None,
    reason=(
        "Debian's chromium is not installed (.ci/run installs it with apt); Playwright drives it, no browser is "
        "downloaded"
    ),
)
def test_browser_paints_a_mask_runs_and_keeps_every_pixel_outside_the_stroke(app, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright from PyPI")
    url, recorder = app
    picture = gradient_image(96, 96)
    picture_path = save(picture, tmp_path / "picture.png")
    # The stroke, in image pixels: a horizontal line through the middle.
    start, end = (28.0, 48.0), (68.0, 48.0)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            elsewhere = []  # the app must work offline: every request stays on its own origin
            page.on(
                "request",
                lambda request: (
                    None
                    if request.url.startswith((url.rstrip("/"), "data:", "blob:"))
                    else elsewhere.append(request.url)
                ),
            )
            page.goto(url)
            editor = page.locator("#image-editor")
            editor.wait_for(timeout=60_000)

            page.locator("#run").click()  # no image yet: a message, not a traceback
            page.get_by_text("Upload an image first").first.wait_for(timeout=30_000)
            assert "Traceback" not in page.content()
            page.get_by_test_id("toast-close").first.click()  # dismissed, so the screenshot shows the job alone

            upload_picture(editor, picture_path, sync_api.TimeoutError)
            scale = settled_zoom(editor) / 100  # screen pixels per image pixel
            editor.get_by_role("button", name="Brush", exact=True).click()
            canvas = editor.locator("canvas").first.bounding_box()  # the image is centred in the canvas
            centre_x, centre_y = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2

            def on_screen(x: float, y: float) -> tuple[float, float]:
                return centre_x + (x - picture.shape[1] / 2) * scale, centre_y + (y - picture.shape[0] / 2) * scale

            page.mouse.move(*on_screen(*start))
            page.mouse.down()
            for k in range(1, 5):  # the brush joins the points it is given; each move costs a (software WebGL) redraw
                page.mouse.move(*on_screen(start[0] + (end[0] - start[0]) * k / 4, start[1]))
            page.mouse.up()
            page.locator("#mask-preview img").wait_for(timeout=30_000)  # the stroke reached the server

            page.locator("#prompt textarea").fill("a red bicycle")
            page.locator("#steps input[type=number]").fill("2")
            page.locator("#seed input").fill("7")
            page.locator("#run").click()
            result_image = page.locator("#results img").first
            result_image.wait_for(timeout=60_000)
            sync_api.expect(page.locator("#seed-used textarea, #seed-used input").first).to_have_value(
                "7", timeout=30_000
            )
            screenshot = tmp_path / "ui.png"
            page.screenshot(path=str(screenshot), full_page=True)
            if os.environ.get("INPAINTKIT_SCREENSHOT_DIR"):
                shutil.copy(screenshot, os.environ["INPAINTKIT_SCREENSHOT_DIR"])
            (tmp_path / "result.png").write_bytes(page.request.get(result_image.get_attribute("src")).body())
        finally:
            browser.close()

    assert elsewhere == []
    parameters = read_png_parameters(tmp_path / "result.png")
    assert (parameters["seed"], parameters["steps"], parameters["prompt"]) == (7, 2, "a red bicycle")
    result = np.asarray(Image.open(tmp_path / "result.png").convert("RGB"))
    distance = distance_to_segment(picture.shape[:2], start, end)
    far, near = distance > BRUSH_SIZE + STROKE_MARGIN, distance < BRUSH_SIZE - STROKE_MARGIN
    assert np.array_equal(result[far], picture[far])
    # The untrained model paints noise: inside the stroke almost no pixel keeps all three bytes by chance.
    assert (result[near] != picture[near]).any(axis=-1).mean() > 0.9
    # What the server received: the uploaded picture byte for byte, and the stroke where the mouse went.
    job = recorder.jobs[-1]
    assert np.array_equal(job["pixels"], picture)
    assert job["mask"][far].max() == 0 and job["mask"][near].min() == 1


def upload_picture(editor, path: str, timeout_error: type[Exception]) -> None:
    """Upload into the image editor once its canvas is set up (it shows its zoom then): an upload during its start-up
    can be dropped by the editor, so a picture that does not appear is offered again."""
    editor.get_by_text(ZOOM_LABEL).first.wait_for(timeout=60_000)
    for _ in range(3):
        editor.locator("input[type=file]").set_input_files(path)
        try:
            editor.get_by_text("Upload an image").wait_for(state="hidden", timeout=10_000)
            return
        except timeout_error:
            continue
    pytest.fail("The image editor never showed the uploaded picture.")


def settled_zoom(editor, timeout: float = 30.0) -> int:
    """The editor's zoom in percent, once it has stopped changing: it fits a new image to the view a moment after
    upload.
    """
    label = editor.get_by_text(ZOOM_LABEL).first
    readings, deadline = [], time.monotonic() + timeout
    while len(readings) < 4 or len(set(readings[-4:])) > 1:
        assert time.monotonic() < deadline, f"the zoom did not settle: {readings}"
        readings.append(label.text_content())
        time.sleep(0.25)
    return int(readings[-1].rstrip("%"))


# -- through gradio_client -----------------------------------------------------------------------------------------
def test_api_gives_the_python_apis_images_with_their_settings(app, inpainter9, tmp_path):
    url, _ = app
    picture, mask = gradient_image(64, 48), box_mask(64, 48, (10, 12, 30, 40))
    picture_path, mask_path = save(picture, tmp_path / "p.png"), save(mask, tmp_path / "m.png")

    results, seed_used = client_for(url, tmp_path / "downloads").predict(
        image=editor_value(picture_path),
        mask=handle_file(mask_path),
        prompt="a cat",
        steps=2,
        seed=5,
        num_images=2,
        mask_blur=2,
        api_name="/inpaint",
    )

    expected = inpainter9(picture, mask, "a cat", steps=2, seed=5, num_images=2, mask_blur=2)
    assert seed_used == "5"
    assert [result["caption"] for result in results] == ["seed 5", "seed 6"]
    for result, image in zip(results, expected):
        # Same model, device, settings and batch: the same bytes (the README's reproducibility promise).
        assert np.array_equal(np.asarray(Image.open(result["image"]).convert("RGB")), np.asarray(image))
        assert read_png_parameters(result["image"])["seed"] == image.info["inpaintkit"]["seed"]


@pytest.mark.parametrize(
    ("settings", "mask_kind", "phrase"),
    [
        ({}, "small", "The mask is 10x10 pixels but the image is 64x48"),
        ({}, "text", "The mask file m.png is not an image format Pillow can read"),
        ({}, None, "Nothing to repaint"),
        ({"strength": 0.01}, "box", "leaves no denoising step"),
        ({"method": "repaint", "jump_length": 20}, "box", "--jump-length 20 is larger than the 2 steps that run"),
        ({"method": "tdpaint", "scheduler": "euler"}, "box", "variance-preserving or flow-matching scheduler"),
    ],
)
def test_api_errors_are_one_sentence(app, tmp_path, settings, mask_kind, phrase):
    url, _ = app
    picture_path = save(gradient_image(64, 48), tmp_path / "p.png")
    masks = {
        "small": lambda: save(box_mask(10, 10, (0, 0, 5, 5)), tmp_path / "m.png"),
        "box": lambda: save(box_mask(64, 48, (8, 8, 20, 20)), tmp_path / "m.png"),
    }
    if mask_kind == "text":
        (tmp_path / "m.png").write_text("not a picture")
    mask = handle_file(masks[mask_kind]() if mask_kind in masks else str(tmp_path / "m.png")) if mask_kind else None

    with pytest.raises(AppError) as raised:
        client_for(url, tmp_path).predict(
            image=editor_value(picture_path), mask=mask, steps=2, **settings, api_name="/inpaint"
        )

    message = str(raised.value)
    assert phrase in message and "Traceback" not in message and "/tmp" not in message
    assert len(message.splitlines()) == 1


# What a caller can get wrong through the API (the browser always sends well-formed values): each gets one sentence
# naming the parameter. "text.png" holds text, "notes.txt" is not an image file name.
BAD_CALLS = {
    "text for a slider": ({"steps": "abc"}, "`steps` must be a number from 1 to 150"),
    "slider above its maximum": ({"steps": 1000}, "`steps` must be a number from 1 to 150; got 1000"),
    "number below its minimum": ({"guidance": -3}, "`guidance` must be a number from 0 to 100"),
    "slider below its minimum": ({"strength": -3}, "`strength` must be a number from 0.01 to 1"),
    "empty slider": ({"steps": None}, "`steps` must be a number"),
    "too many images": ({"num_images": 100}, "`num_images` must be a number from 1 to 8"),
    "text for a number": ({"seed": "x"}, "`seed` must be a number"),
    "number above its maximum": ({"method": "tdpaint", "known_t": 5000}, "`known_t` must be a number from 0 to 999"),
    "not a choice": ({"method": "bogus"}, "`method` must be one of auto, native"),
    "not a scheduler": ({"scheduler": "bogus"}, "`scheduler` must be one of default"),
    "text for a checkbox": ({"only_masked": "yes"}, "`only_masked` must be true or false"),
    "a number for the prompt": ({"prompt": 123}, "`prompt` must be text"),
    "no image": ({"image": None}, "Upload an image first"),
    "text for the image": ({"image": "hello"}, "`image` must be the editor's value"),
    "a number for the picture": ({"image": {"background": 5}}, "`image` must be the editor's value"),
    "a picture that is not an image": ({"image": "text.png"}, "`image` could not be read"),
    "a number for the mask": ({"mask": 123}, "`mask` must be an uploaded file"),
    "a mask that is not an image file": ({"mask": "notes.txt"}, "`mask` must be an image file"),
}


@pytest.mark.parametrize(("overrides", "phrase"), list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_api_calls_are_one_sentence_and_print_no_traceback(app, tmp_path, capfd, overrides, phrase):
    url, _ = app
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "notes.txt").write_text("not a picture")
    files = {"text.png": editor_value(tmp_path / "text.png"), "notes.txt": handle_file(str(tmp_path / "notes.txt"))}
    arguments = {
        "image": editor_value(save(gradient_image(64, 48), tmp_path / "p.png")),
        "mask": handle_file(save(box_mask(64, 48, (8, 8, 20, 20)), tmp_path / "m.png")),
        "steps": 2,
        "seed": 1,
        **{name: files.get(value, value) if isinstance(value, str) else value for name, value in overrides.items()},
    }

    with pytest.raises(AppError) as raised:
        client_for(url, tmp_path).predict(**arguments, api_name="/inpaint")

    message = html.unescape(str(raised.value))
    assert phrase in message, message
    assert len(message.splitlines()) == 1 and message.endswith(".") and ". " not in message, message  # one sentence
    assert "/tmp" not in message
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out  # Gradio printed one for each of these before


def test_an_unexpected_failure_is_logged_with_its_traceback(inpainter9, tmp_path):
    class Broken(InstrumentedInpainter):
        def run(self, *arguments, **options):
            raise RuntimeError("the GPU caught fire")

    # The log as `inpaintkit ui` writes it: the CLI's one-line format on the inpaintkit logger.
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(OneLineFormatter())
    logger = logging.getLogger("inpaintkit")
    logger.addHandler(handler)
    try:
        with served(Broken(inpainter9)) as url, pytest.raises(AppError, match="Something went wrong on the server"):
            client_for(url, tmp_path).predict(
                image=editor_value(save(gradient_image(64, 48), tmp_path / "p.png")),
                mask=handle_file(save(box_mask(64, 48, (8, 8, 20, 20)), tmp_path / "m.png")),
                steps=2,
                api_name="/inpaint",
            )
    finally:
        logger.removeHandler(handler)
    log = written.getvalue()
    assert "The web UI's job failed" in log
    assert "Traceback" in log and 'in run\n    raise RuntimeError("the GPU caught fire")' in log
    assert "RuntimeError: the GPU caught fire" in log


def test_stop_ends_the_running_job_after_its_current_step(held_app, tmp_path):
    url, holder = held_app
    client = client_for(url, tmp_path)
    picture_path, mask_path = (
        save(gradient_image(64, 64), tmp_path / "p.png"),
        save(box_mask(64, 64, (8, 8, 40, 40)), tmp_path / "m.png"),
    )
    client.submit(image=editor_value(picture_path), mask=handle_file(mask_path), steps=20, seed=1, api_name="/inpaint")
    assert holder.started.wait(30)

    client.predict(api_name="/stop")  # the same client, so the same session as the job
    holder.release.set()

    deadline = time.monotonic() + 30
    while holder.jobs[0]["outcome"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert holder.jobs[0]["outcome"] == "cancelled"
    assert holder.jobs[0]["steps"] == 1  # of 20


def test_stop_also_ends_a_job_after_its_last_step_while_it_decodes(inpainter9, tmp_path):
    # Parked after its last step, the job's step callback has already let it go on: only the should_stop poll before
    # the VAE decodes can end it now.
    holder = InstrumentedInpainter(inpainter9, hold="after last step")
    with served(holder) as url:
        client = client_for(url, tmp_path)
        picture_path, mask_path = (
            save(gradient_image(64, 64), tmp_path / "p.png"),
            save(box_mask(64, 64, (8, 8, 40, 40)), tmp_path / "m.png"),
        )
        client.submit(image=editor_value(picture_path), mask=handle_file(mask_path), steps=2, api_name="/inpaint")
        assert holder.started.wait(30)
        client.predict(api_name="/stop")
        holder.release.set()
        deadline = time.monotonic() + 30
        while holder.jobs[0]["outcome"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
    job = holder.jobs[0]
    assert job["outcome"] == "cancelled" and job["steps"] == job["total"]  # every step ran; the decoding did not


def test_a_full_queue_is_refused_with_a_message(held_app, tmp_path):
    url, holder = held_app
    picture_path, mask_path = (
        save(gradient_image(64, 64), tmp_path / "p.png"),
        save(box_mask(64, 64, (8, 8, 40, 40)), tmp_path / "m.png"),
    )
    arguments = {
        "image": editor_value(picture_path),
        "mask": handle_file(mask_path),
        "steps": 2,
        "seed": 1,
        "api_name": "/inpaint",
    }
    running = client_for(url, tmp_path / "a").submit(**arguments)
    assert holder.started.wait(30)
    waiting = client_for(url, tmp_path / "b").submit(**arguments)
    deadline = time.monotonic() + 30
    while waiting.status().code.name != "IN_QUEUE" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert waiting.status().code.name == "IN_QUEUE"

    with pytest.raises(QueueError, match="Queue is full"):  # the browser shows "This application is currently busy"
        client_for(url, tmp_path / "c").predict(**arguments)

    holder.release.set()
    assert running.result(timeout=60)[1] == "1" and waiting.result(timeout=60)[1] == "1"
    assert [job["outcome"] for job in holder.jobs] == ["finished", "finished"]


# -- safe defaults -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def browser_session(url: str) -> Iterator[httpx.Client]:
    """An HTTP client that has opened the app's page, so it holds the session cookie uploads are counted by."""
    with httpx.Client(timeout=30) as session:
        session.get(url).raise_for_status()
        yield session


def upload(session: httpx.Client, url: str, size: int) -> httpx.Response:
    return session.post(f"{url}gradio_api/upload", files={"files": ("p.png", b"\0" * size, "image/png")})


def test_uploads_above_the_size_limit_are_refused(app):
    url, _ = app
    with browser_session(url) as session:
        assert upload(session, url, 1_100_000).status_code == 413


@pytest.fixture(scope="module")
def limited_app(inpainter9):
    """An app allowing each browser session 3 uploads and 1 MB (uploads of up to 1 MB each)."""
    with served(inpainter9, max_file_size_mb=1, max_session_uploads=3, max_session_mb=1) as url:
        yield url


def test_a_sessions_upload_beyond_the_count_limit_is_refused(limited_app):
    url = limited_app
    with browser_session(url) as session, browser_session(url) as other:
        assert [upload(session, url, 1000).status_code for _ in range(3)] == [200, 200, 200]
        refused = upload(session, url, 1000)
        assert refused.status_code == 429
        assert refused.text == (
            "This browser session has uploaded 3 files in the last 2 hours, the most allowed; try again later."
        )
        assert upload(other, url, 1000).status_code == 200  # the limit is per session


def test_a_sessions_upload_beyond_the_byte_limit_is_refused(limited_app):
    url = limited_app
    with browser_session(url) as session:
        assert upload(session, url, 600_000).status_code == 200
        refused = upload(session, url, 600_000)
        assert refused.status_code == 429 and "would pass 1 MB, the most allowed" in refused.text
        assert upload(session, url, 1000).status_code == 200  # a refused upload does not count


def test_an_upload_without_a_session_is_refused(limited_app):
    response = httpx.post(
        f"{limited_app}gradio_api/upload", files={"files": ("p.png", b"\0" * 1000, "image/png")}, timeout=30
    )
    assert response.status_code == 403 and "uploads are counted per browser session" in response.text


def test_the_users_gradio_temp_dir_wins_and_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    with private_cache() as cache:
        assert cache == str(tmp_path)
    assert tmp_path.is_dir() and os.environ["GRADIO_TEMP_DIR"] == str(tmp_path)


def test_without_gradio_temp_dir_the_cache_is_a_new_private_folder_removed_at_the_end(monkeypatch):
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    with private_cache() as cache:
        assert os.environ["GRADIO_TEMP_DIR"] == cache
        assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert not os.path.exists(cache) and "GRADIO_TEMP_DIR" not in os.environ


@pytest.mark.parametrize("path", ["/etc/passwd", __file__])
def test_files_outside_gradios_cache_are_not_served(app, path):
    url, _ = app
    response = httpx.get(f"{url}gradio_api/file={path}", timeout=30)
    assert response.status_code == 403


SLOW_LOADING_UI = """
import sys, time
import inpaintkit.model_arguments as model_arguments
from inpaintkit.cli import main

def slow_load(arguments):  # a real checkpoint takes tens of seconds to load: hold start-up here
    time.sleep(60)
    raise AssertionError("SIGTERM did not end the start-up")

model_arguments.inpainter_from_arguments = slow_load
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_start_up_still_deletes_the_private_cache(tmp_path):
    """The reviewer's case: SIGTERM while the model loads (docker stop, systemd) killed the process with Python's
    default action, before any cleanup, and left the private cache folder behind."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    environment = {name: value for name, value in os.environ.items() if name != "GRADIO_TEMP_DIR"}
    environment.update(TMPDIR=str(temp), HF_HUB_OFFLINE="1")
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_LOADING_UI, "ui", "--model", "unused", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob("inpaintkit-ui-*")):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert not list(temp.glob("inpaintkit-ui-*"))
    assert "Traceback" not in stderr


def test_ui_command_serves_from_a_private_cache_and_deletes_it_on_sigterm(tiny9, tmp_path):
    """A real `inpaintkit ui`: its cache is its own (0700, not Gradio's machine-wide folder), another app's file is
    neither served nor taken as input, and SIGTERM stops it cleanly and deletes its uploads and results."""
    temp = tmp_path / "tmp"  # the process's TMPDIR: Gradio's shared default would be temp/gradio
    foreign = temp / "gradio" / "other-app" / "p.png"  # a file another app put in that shared folder
    foreign.parent.mkdir(parents=True)
    save(gradient_image(64, 48), foreign)
    environment = {name: value for name, value in os.environ.items() if name != "GRADIO_TEMP_DIR"}
    environment.update(TMPDIR=str(temp), HF_HUB_OFFLINE="1")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "inpaintkit.cli", "ui", "--model", tiny9, "--device", "cpu", "--port", str(port)],
            stdout=stderr,
            stderr=stderr,
            env=environment,
        )
    try:
        wait_until_listening(process, port, timeout=180)
        (cache,) = temp.glob("inpaintkit-ui-*")
        assert stat.S_IMODE(cache.stat().st_mode) == 0o700

        results, _ = client_for(url, tmp_path / "downloads").predict(
            image=editor_value(save(gradient_image(64, 48), tmp_path / "p.png")),
            mask=handle_file(save(box_mask(64, 48, (8, 8, 20, 20)), tmp_path / "m.png")),
            steps=2,
            api_name="/inpaint",
        )
        assert len(results) == 1 and any(path.is_file() for path in cache.rglob("*"))  # uploads and results
        assert httpx.get(f"{url}gradio_api/file={foreign}", timeout=30).status_code == 403
        assert_refused_as_input(url, str(foreign))

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not cache.exists()
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


def wait_until_listening(process: subprocess.Popen, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"inpaintkit ui exited with {process.returncode}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    pytest.fail(f"inpaintkit ui did not listen on port {port} within {timeout} s")


def assert_refused_as_input(url: str, path: str) -> None:
    """Run a job through the REST API (which, unlike gradio_client, sends a path as is) on a file outside the cache."""
    parameters = Client(url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"][
        "/inpaint"
    ]["parameters"]
    outside = {"path": path, "meta": {"_type": "gradio.FileData"}}
    values = {parameter["parameter_name"]: parameter["parameter_default"] for parameter in parameters}
    values.update(image={"background": outside, "layers": [], "composite": None}, mask=outside, steps=2)
    with httpx.Client(base_url=url, timeout=60) as http:
        event = http.post("gradio_api/call/inpaint", json={"data": list(values.values())}).json()["event_id"]
        stream = http.get(f"gradio_api/call/inpaint/{event}").text
    assert "event: error" in stream and "A file in the request was not uploaded to this app" in stream, stream


def test_ui_command_reports_a_busy_port_in_one_line(tiny9, capsys):
    with socket_listening() as port:
        code, _, err = run_cli(["ui", "--model", tiny9, "--device", "cpu", "--port", port], capsys)
    assert_one_line_error(code, err, f"Cannot serve on 127.0.0.1:{port}")


# -- the pieces, without a server ----------------------------------------------------------------------------------
def painted_layer(width: int, height: int, box: tuple[int, int, int, int], alpha: int) -> Image.Image:
    layer = np.zeros((height, width, 4), dtype=np.uint8)
    left, top, right, bottom = box
    layer[top:bottom, left:right] = (255, 0, 64, alpha)
    return Image.fromarray(layer, "RGBA")


def test_mask_is_the_union_of_strokes_and_uploaded_mask(tmp_path):
    picture = Image.fromarray(gradient_image(32, 24)).convert("RGBA")
    uploaded = (box_mask(32, 24, (20, 0, 32, 10)) // 2).astype(np.uint8)  # grey 127: kept as a soft level
    editor = {"background": picture, "layers": [painted_layer(32, 24, (0, 0, 8, 8), alpha=1)], "composite": None}

    pixels, mask = job_image_and_mask(editor, save(uploaded, tmp_path / "m.png"))

    expected = np.zeros((24, 32), dtype=np.float32)
    expected[0:10, 20:32] = 127 / 255
    expected[0:8, 0:8] = 1.0  # alpha 1 of 255 is still a stroke
    assert np.array_equal(pixels, gradient_image(32, 24))
    np.testing.assert_allclose(mask, expected, atol=1e-6)


def test_transparent_pixels_are_the_mask_when_nothing_is_painted():
    rgba = np.dstack([gradient_image(16, 16), np.full((16, 16), 255, np.uint8)])
    rgba[4:8, 4:8, 3] = 0
    _, mask = job_image_and_mask({"background": Image.fromarray(rgba, "RGBA"), "layers": []}, None)
    assert np.array_equal(mask > 0.5, box_mask(16, 16, (4, 4, 8, 8)) > 0)


@pytest.mark.parametrize(
    ("editor", "phrase"),
    [
        (None, "Upload an image first"),
        (
            {"background": Image.new("RGBA", (8, 8), "white"), "layers": [Image.new("RGBA", (8, 8))]},
            "Nothing to repaint",
        ),
    ],
)
def test_missing_image_or_mask_is_one_sentence(editor, phrase):
    with pytest.raises(InputError, match=phrase):
        job_image_and_mask(editor, None)


def test_an_image_above_the_pixel_limit_is_refused(monkeypatch):
    import inpaintkit.ui.editor as editor

    monkeypatch.setattr(editor, "MAX_IMAGE_PIXELS", 255)  # the real limit (89 MP) would need a huge test picture
    with pytest.raises(InputError, match="The image is 16x16 pixels, more than the 255 allowed"):
        job_image_and_mask({"background": Image.new("RGBA", (16, 16)), "layers": []}, None)


def test_ui_values_become_settings():
    values = {
        "prompt": "p",
        "negative_prompt": "",
        "method": "repaint",
        "guidance": 7.5,
        "steps": 20.0,
        "strength": 1.0,
        "seed": -1,
        "num_images": 2.0,
        "scheduler": "default",
        "mask_grow": 0.0,
        "mask_blur": 4.0,
        "crop_padding": 16,
        "fill": "original",
        "color_match": False,
        "paste_back": True,
        "blend_start": 0.25,
        "mask_dilation_iterations": 0,
        "reconstruct": "optimize",
        "jump_length": 5,
        "jump_n_sample": 3,
        "known_t": 50,
    }
    settings = job_settings(values, only_masked=False)
    assert (settings.seed, settings.steps, settings.num_images, settings.crop_padding) == (None, 20, 2, None)
    # Only the chosen method's options apply; the hidden fields of bld and tdpaint are not sent.
    assert (settings.jump_length, settings.jump_n_sample, settings.blend_start, settings.known_t) == (5, 3, None, None)
    assert job_settings({**values, "seed": 9}, only_masked=True).crop_padding == 16
    assert job_settings({**values, "crop_padding": None}, only_masked=True).crop_padding == 0
