"""An SDXL model through the front ends with no front-end change: the CLI, the service and bench (issue 14)."""

from __future__ import annotations

import io
import json

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from inpaintkit.io import read_png_parameters
from inpaintkit.server import ServiceConfig, create_app

from .conftest import box_mask, gradient_image
from .helpers import bench_every_method, run_cli
from .test_server import png_bytes

WIDTH, HEIGHT = 64, 48
PIXELS, MASK = gradient_image(WIDTH, HEIGHT, seed=80), box_mask(WIDTH, HEIGHT, (16, 8, 48, 40))


def test_make_tiny_model_writes_an_sdxl_model_that_info_and_run_read(tmp_path, capsys):
    folder = tmp_path / "sdxl"
    assert run_cli(["make-tiny-model", folder, "--family", "sdxl", "--channels", "4"], capsys)[0] == 0
    code, out, err = run_cli(["info", "--model", folder], capsys)
    assert code == 0, err
    assert (json.loads(out)["family"], json.loads(out)["unet_in_channels"]) == ("sdxl", 4)
    Image.fromarray(PIXELS).save(tmp_path / "photo.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    arguments = ["run", "--model", folder, "--image", tmp_path / "photo.png", "--mask", tmp_path / "mask.png"]
    code, _, err = run_cli([*arguments, "--steps", "2", "--seed", "1", "--output", tmp_path / "out.png"], capsys)
    assert code == 0, err
    output = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    assert np.array_equal(output[MASK == 0], PIXELS[MASK == 0])
    assert read_png_parameters(tmp_path / "out.png")["method"] == "blend"  # auto on a 4-channel SDXL model


def test_the_service_serves_an_sdxl_model(sdxl9):
    with TestClient(create_app(sdxl9, ServiceConfig(timeout=60.0))) as client:
        models = client.get("/v1/models").json()
        assert models["models"][0]["capabilities"]["family"] == "sdxl"
        response = client.post(
            "/v1/inpaint",
            data={"steps": "2", "seed": "5", "crop_padding": "4"},
            files={"image": ("p.png", png_bytes(PIXELS), "image/png"), "mask": ("m.png", png_bytes(MASK), "image/png")},
            headers={"Accept": "image/png"},
        )
    assert response.status_code == 200, response.text
    output = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert np.array_equal(output[MASK == 0], PIXELS[MASK == 0])


def test_bench_runs_every_method_on_an_sdxl_model_and_records_the_family(tiny_sdxl4, tmp_path, capsys):
    run = bench_every_method(tiny_sdxl4, "blend,bld,soft,repaint,tdpaint,latentpaint", PIXELS, MASK, tmp_path, capsys)
    assert run["family"] == "sdxl"


def test_the_web_ui_serves_an_sdxl_model(sdxl9, tmp_path):
    from .ui_helpers import inpaint_through_the_ui

    result = inpaint_through_the_ui(sdxl9, PIXELS, MASK, tmp_path, prompt="a cat", steps=2, seed=7)
    expected = sdxl9(PIXELS, MASK, "a cat", steps=2, seed=7)[0]
    assert np.array_equal(np.asarray(Image.open(result).convert("RGB")), np.asarray(expected))
    assert read_png_parameters(result)["method"] == "native"
