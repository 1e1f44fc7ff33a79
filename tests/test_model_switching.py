"""The service switches models on request (issue 19): a queued job that frees the old model first (unless
--keep-models), from --models-dir or the local Hugging Face cache only, through /v1/model and A1111's options."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import shutil
import weakref
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inpaintkit import Inpainter
from inpaintkit.catalog import ModelCatalog
from inpaintkit.server import ServiceConfig, create_app

from .conftest import box_mask, gradient_image


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny4, tiny9):
    """A --models-dir with two tiny checkpoints (4- and 9-channel) and a folder that is not a model."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny4, folder / "four")
    shutil.copytree(tiny9, folder / "nine")
    (folder / "notes").mkdir()
    return folder


class Loader:
    """Loads catalog sources for the service, counting them, and keeps weak references to what it loaded."""

    def __init__(self, broken: tuple[str, ...] = ()):
        self.sources: list[str] = []
        self.loaded: dict[str, weakref.ref] = {}
        self.broken = broken

    def __call__(self, source: str) -> Inpainter:
        self.sources.append(Path(source).name)
        if Path(source).name in self.broken:
            raise OSError("the weights file is damaged")
        inpainter = Inpainter.from_pretrained(source, device="cpu")
        self.loaded[Path(source).name] = weakref.ref(inpainter)
        return inpainter


def service(models_dir, loader, **config):
    catalog = ModelCatalog(models_dir, use_hf_cache=False)
    start = loader(str(models_dir / "four"))
    return TestClient(
        create_app(start, ServiceConfig(**config), model_name="four", catalog=catalog, load_model=loader)
    )  # fmt: skip


def job(client) -> dict:
    """One tiny job; its settings as the PNG records them."""
    files = {}
    for name, pixels in (("image", gradient_image(64, 48)), ("mask", box_mask(64, 48, (16, 8, 48, 40)))):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        files[name] = (f"{name}.png", buffer.getvalue(), "image/png")
    response = client.post(
        "/v1/inpaint", files=files, data={"steps": "1", "seed": "1"}, headers={"Accept": "image/png"}
    )
    assert response.status_code == 200, response.text
    return json.loads(Image.open(io.BytesIO(response.content)).text["inpaintkit"])


def test_switching_loads_the_named_model_and_frees_the_old_one(models_dir):
    loader = Loader()
    with service(models_dir, loader) as client:
        listing = client.get("/v1/models").json()
        assert listing["available_models"] == ["four", "nine"]  # "notes" holds no model_index.json
        assert job(client)["method"] == "blend"  # auto on a 4-channel UNet
        switched = client.post("/v1/model", json={"model": "nine"})
        assert switched.status_code == 200, switched.text
        assert switched.json()["models"][0]["id"] == "nine"
        assert switched.json()["models"][0]["capabilities"]["unet_in_channels"] == 9
        assert job(client)["method"] == "native"  # the next job runs on the new model
        gc.collect()
        assert loader.loaded["four"]() is None  # --keep-models 1: nothing holds the old model any more
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "nine"


def test_a1111_clients_switch_with_their_options_and_see_every_model(models_dir):
    loader = Loader()
    with service(models_dir, loader) as client:
        assert [item["title"] for item in client.get("/sdapi/v1/sd-models").json()] == ["four", "nine"]
        response = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nine [0123456789]"})
        assert response.status_code == 200 and response.json() is None, response.text
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "nine"
        unknown = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "ten"})
        assert unknown.status_code == 422 and "is not a model this service can load (nine, four)" in unknown.json()[
            "detail"
        ]  # fmt: skip


def test_keep_models_keeps_the_old_one_so_switching_back_loads_nothing(models_dir):
    loader = Loader()
    with service(models_dir, loader, max_queue=4) as client:
        client.app.state.worker.keep_models = 2
        assert client.post("/v1/model", json={"model": "nine"}).status_code == 200
        assert client.post("/v1/model", json={"model": "four"}).status_code == 200
        assert loader.sources == ["four", "nine"]  # "four" came back from memory, not from disk
        assert job(client)["method"] == "blend"


def test_a_model_that_fails_to_load_is_one_sentence_and_the_previous_one_serves_again(models_dir):
    loader = Loader(broken=("nine",))
    with service(models_dir, loader) as client:
        response = client.post("/v1/model", json={"model": "nine"})
        assert response.status_code == 422
        assert response.json()["error"] == (
            "Model nine could not be loaded (the weights file is damaged); four is back."
        )  # fmt: skip
        assert client.get("/readyz").status_code == 200
        assert job(client)["model"].endswith("four")


@pytest.mark.parametrize("name", ["../four", str(Path("/etc")), "stabilityai/not-downloaded", ""])
def test_only_listed_models_may_be_named(models_dir, name):
    loader = Loader()
    with service(models_dir, loader) as client:
        response = client.post("/v1/model", json={"model": name})
        assert response.status_code == 422 and "is not one this service can load (four, nine)" in response.json()[
            "error"
        ]  # fmt: skip
        assert loader.sources == ["four"]  # nothing else was loaded


def test_a_service_without_a_catalog_says_how_to_get_one(inpainter4):
    with TestClient(create_app(inpainter4, ServiceConfig())) as client:
        response = client.post("/v1/model", json={"model": "other"})
        assert response.status_code == 422
        assert response.json()["error"] == "This service runs one model; start it with --models-dir to switch models."


def test_the_web_ui_switches_models_from_its_dropdown(models_dir):
    import gradio as gr

    from inpaintkit.ui.app import build_app

    loader = Loader(broken=("broken",))
    (models_dir / "broken").mkdir(exist_ok=True)
    (models_dir / "broken" / "model_index.json").write_text("{}")
    catalog = ModelCatalog(models_dir, use_hf_cache=False, extra=("four",))
    start = loader(str(models_dir / "four"))
    demo = build_app(start, model_name="four", catalog=catalog, load_model=loader)
    del start  # the UI's handlers hold the model now
    dropdowns = [block for block in demo.blocks.values() if isinstance(block, gr.Dropdown) and block.label == "Model"]
    assert len(dropdowns) == 1 and [choice[0] for choice in dropdowns[0].choices] == ["four", "broken", "nine"]
    handlers = demo.jobs
    assert handlers.switch_model("nine", progress=lambda *a, **k: None) == ("Model: nine", "nine")
    assert handlers.inpainter.capabilities.inpainting_unet  # the Run handler's model is the new one
    gc.collect()
    assert loader.loaded["four"]() is None  # freed before the new one loaded
    # a failed load: a warning, and the dropdown goes back to the model that serves (the previous one, loaded again)
    assert handlers.switch_model("broken", progress=lambda *a, **k: None) == ("Model: nine", "nine")
    assert handlers.model_name == "nine" and handlers.inpainter.capabilities.inpainting_unet
    with pytest.raises(gr.Error, match="is not one this service can load"):
        handlers.switch_model("../four", progress=lambda *a, **k: None)


# -- what the review found ---------------------------------------------------------------------------------------


def test_progress_answers_while_a_model_loads_and_metrics_do_not_count_it_as_a_job(models_dir):
    import threading

    from .test_server import wait_until
    from .test_server_metrics import sample

    gate, loading = threading.Event(), threading.Event()

    class SlowLoader(Loader):
        def __call__(self, source):
            if Path(source).name == "nine":
                loading.set()
                assert gate.wait(20)
            return super().__call__(source)

    loader = SlowLoader()
    with service(models_dir, loader) as client:
        switcher = threading.Thread(target=lambda: client.post("/v1/model", json={"model": "nine"}), daemon=True)
        switcher.start()
        try:
            wait_until(loading.is_set)
            progress = client.get("/sdapi/v1/progress")
            assert progress.status_code == 200 and progress.json()["textinfo"] == "Loading model nine"
        finally:
            gate.set()
        switcher.join(20)
        assert sample(client.get("/metrics").text, "inpaintkit_job_seconds_count") == 0  # a load is not a job


def test_when_neither_model_loads_the_service_says_so_and_a_later_switch_heals_it(models_dir):
    loader = Loader(broken=("nine",))
    with service(models_dir, loader) as client:
        loader.broken = ("nine", "four")  # the fallback fails too
        response = client.post("/v1/model", json={"model": "nine"})
        assert response.status_code == 503 and "nor four again" in response.json()["error"]
        assert client.get("/readyz").json()["status"] == "failed"
        loader.broken = ()
        assert client.post("/v1/model", json={"model": "nine"}).status_code == 200
        assert client.get("/readyz").status_code == 200  # the failure is forgotten once a model serves again


def test_a_switch_whose_entry_vanished_touches_nothing(models_dir, tmp_path):
    shutil.copytree(models_dir / "four", tmp_path / "four")
    shutil.copytree(models_dir / "nine", tmp_path / "gone")
    loader = Loader()
    catalog = ModelCatalog(tmp_path, use_hf_cache=False)
    start = loader(str(tmp_path / "four"))
    app = create_app(start, ServiceConfig(), model_name="four", catalog=catalog, load_model=loader)
    del start
    with TestClient(app) as client:

        async def admitted():  # a job belongs to an event loop; this one is gone by the time the job settles
            return app.state.worker.switch_job("gone", 1e12, 60)

        switch = asyncio.run(admitted())  # admitted while it was there...
        shutil.rmtree(tmp_path / "gone")  # ...removed before its turn
        app.state.worker._switch(switch)
        assert loader.sources == ["four"]  # the loaded model was neither freed nor loaded again
        assert app.state.worker.model_name == "four" and job(client)["model"].endswith("four")


def test_switching_back_to_the_start_model_keeps_what_belongs_to_it(models_dir, tiny4):
    """The start model's own --vae (and --transformer, --config) come back with it: on a small card a quantized
    transformer dropped on the way back would load the full one."""
    from inpaintkit.cli import build_parser
    from inpaintkit.model_arguments import model_switching

    start = str(models_dir / "nine")
    arguments = build_parser().parse_args(
        ["serve", "--model", start, "--vae", str(tiny4), "--models-dir", str(models_dir), "--device", "cpu"]
    )
    catalog, load_other = model_switching(arguments)
    assert load_other(catalog.resolve(start)).components.vae_name == str(tiny4)
    assert load_other(catalog.resolve("four")).components.vae_name is None  # another model: not the start's VAE
