"""LoRAs (issue 19): files written here with peft (make_tiny_lora) in diffusers' and Kohya's key layouts change the
output, compose, and are switched off after every job however it ends, so the next job gets the base model's exact
pixels, in-process and through the HTTP service; a file for another architecture, a non-LoRA file and a bad value
are one sentence (CLI exit 2, HTTP 422) that leaves the model exact; `--fuse-lora` gives the unfused pixels.

"Exact" is byte equality of the 8-bit output: a LoRA switched off (or at weight 0) adds nothing, not a rounding.
"""

from __future__ import annotations

import hashlib
import io
import json
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import load_file, save_file

from inpaintkit import Inpainter
from inpaintkit.errors import Cancelled, InputError
from inpaintkit.server import ServiceConfig, create_app
from inpaintkit.tiny import make_tiny_lora

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli, run_cli_subprocess
from .test_server import decode_png, png_bytes

WIDTH, HEIGHT = 64, 48
IMAGE = gradient_image(WIDTH, HEIGHT, seed=2)
MASK = box_mask(WIDTH, HEIGHT, (10, 8, 54, 40))
JOB = dict(method="blend", steps=2, seed=5, paste_back=False)  # paste-back off: every pixel is the model's


def levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny4, tiny_sdxl4):
    """One folder (the service's --loras-dir) with every file the tests use."""
    folder = tmp_path_factory.mktemp("loras")
    make_tiny_lora(tiny4, folder / "style.safetensors", layout="diffusers", seed=0)
    make_tiny_lora(tiny4, folder / "style_kohya.safetensors", layout="kohya", seed=0)  # the same weights as style
    make_tiny_lora(tiny4, folder / "other.safetensors", layout="diffusers", seed=1)
    make_tiny_lora(tiny4, folder / "fresh.safetensors", layout="kohya", seed=2)  # loaded only after a failed load
    make_tiny_lora(tiny_sdxl4, folder / "xl.safetensors", layout="diffusers", seed=0)
    make_tiny_lora(tiny_sdxl4, folder / "xl_kohya.safetensors", layout="kohya", seed=0)
    save_file({"conv.weight": torch.randn(4, 4), "conv.bias": torch.randn(4)}, str(folder / "random.safetensors"))
    return folder


class Model:
    """A model of this module's own (LoRAs are loaded into it), with its pixels taken before any LoRA was loaded."""

    def __init__(self, folder, lora_root=None, **job):
        self.inpainter = Inpainter.from_pretrained(folder, device="cpu", lora_root=lora_root)
        self.job = {**JOB, **job}
        unet = self.inpainter.components.unet
        calls = []
        hook = unet.register_forward_pre_hook(
            lambda module, args, kwargs: calls.append((args, kwargs)), with_kwargs=True
        )
        try:
            self.base = self()
        finally:
            hook.remove()
        self.unet_call = calls[0]  # the first step's UNet inputs, to call the UNet alone with
        self.base_unet = self.unet_output()

    def unet_output(self) -> torch.Tensor:
        args, kwargs = self.unet_call
        with torch.no_grad():
            return self.inpainter.components.unet(*args, **kwargs)[0]

    def __call__(self, *loras: str, **options) -> np.ndarray:
        return np.asarray(self.images(*loras, **options)[0])

    def images(self, *loras: str, **options):
        return self.inpainter(IMAGE, MASK, "a red ball", loras=loras, **{**self.job, **options})

    def assert_base(self) -> None:
        # The UNet itself first, before another job could switch the LoRAs off again: whatever else uses it (another
        # front end, a method's own calls) must find the base weights, not only the next job.
        assert torch.equal(self.unet_output(), self.base_unet), "a LoRA is still on in the UNet after the job"
        assert np.array_equal(self(), self.base), "the base model's pixels were not restored exactly"


@pytest.fixture(scope="module")
def sd(tiny4, lora_dir):
    """Sources given as paths (no root), as the CLI and the Python API take them."""
    return Model(tiny4)


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl4):
    return Model(tiny_sdxl4)


def path(lora_dir, name: str, weight: str = "") -> str:
    return f"{lora_dir / name}{weight}"


# -- the LoRA reaches the UNet, in both layouts ----------------------------------------------------------------


def test_make_tiny_lora_writes_both_key_layouts_of_the_same_weights(lora_dir):
    diffusers_keys, kohya = load_file(lora_dir / "style.safetensors"), load_file(lora_dir / "style_kohya.safetensors")
    assert all(key.startswith("unet.") and ".lora_" in key for key in diffusers_keys)
    assert all(key.startswith("lora_unet_") for key in kohya)
    assert any(key.endswith(".alpha") for key in kohya) and any(key.endswith(".lora_down.weight") for key in kohya)
    # Same tensors under both names: the pixel comparison below is then a test of the loaders, not of the files.
    assert sorted(float(t.sum()) for k, t in kohya.items() if not k.endswith(".alpha")) == sorted(
        float(t.sum()) for t in diffusers_keys.values()
    )


def test_a_lora_changes_the_output_and_both_layouts_give_the_same_pixels(sd, lora_dir):
    diffusers_layout = sd(path(lora_dir, "style.safetensors"))
    kohya_layout = sd(path(lora_dir, "style_kohya.safetensors"))
    # A LoRA with B ~ N(0, 0.5) moves a random tiny model's output by tens of levels; > 2 on average is far above
    # any rounding, so a LoRA that was loaded but never switched on fails here.
    assert levels(diffusers_layout, sd.base).mean() > 2.0
    # The same weights under Kohya's names: diffusers converts them to the same peft layers, so the same bits.
    assert np.array_equal(diffusers_layout, kohya_layout)
    sd.assert_base()


def test_weight_zero_equals_no_lora_exactly(sd, lora_dir):
    assert np.array_equal(sd(path(lora_dir, "style.safetensors", ":0")), sd.base)
    assert np.array_equal(sd(path(lora_dir, "style_kohya.safetensors", ":0.0")), sd.base)


def test_the_weight_scales_the_lora(sd, lora_dir):
    full, half = sd(path(lora_dir, "style.safetensors")), sd(path(lora_dir, "style.safetensors", ":0.5"))
    negative = sd(path(lora_dir, "style.safetensors", ":-1"))
    assert levels(half, full).mean() > 1.0 and levels(half, sd.base).mean() > 1.0
    assert levels(negative, full).mean() > 2.0


def test_two_loras_compose(sd, lora_dir):
    style, other = path(lora_dir, "style.safetensors"), path(lora_dir, "other.safetensors")
    both = sd(style, other)
    assert np.array_equal(both, sd(style, other))  # deterministic, with the adapters cached from the first job
    for alone in (sd(style), sd(other)):
        assert levels(both, alone).mean() > 2.0  # the second LoRA is on too, not replacing the first
    sd.assert_base()


def test_two_halves_of_the_same_weights_equal_one_whole(sd, lora_dir):
    """peft adds each active adapter's scaled update (W x + sum_i w_i B_i A_i x), so 0.5 + 0.5 of the same weights
    (the two layouts' files) is the whole LoRA. Tolerance: max 2 levels, mean 0.05: the sums agree in exact
    arithmetic; float32's order of addition differs, about 1e-6 relative, which after 2 steps and the 8-bit rounding
    moves a few pixels by a level."""
    halves = sd(path(lora_dir, "style.safetensors", ":0.5"), path(lora_dir, "style_kohya.safetensors", ":0.5"))
    whole = sd(path(lora_dir, "style.safetensors"))
    assert levels(halves, whole).max() <= 2 and levels(halves, whole).mean() <= 0.05


def test_metadata_records_source_weight_and_sha256(sd, lora_dir):
    style, other = lora_dir / "style.safetensors", lora_dir / "other.safetensors"
    image = sd.images(f"{style}:0.75", str(other))[0]
    recorded = image.info["inpaintkit"]["loras"]
    assert [(each["source"], each["weight"]) for each in recorded] == [(str(style), 0.75), (str(other), 1.0)]
    for each, file in zip(recorded, (style, other)):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        assert len(each["sha256"]) >= 10 and digest.startswith(each["sha256"]), (each, digest)
    assert not sd.images()[0].info["inpaintkit"].get("loras")  # a job without LoRAs records none


# -- the base model is restored however the job ends ------------------------------------------------------------


def test_base_restored_after_a_job_that_fails(sd, lora_dir):
    def failing(step, total, latents):
        raise RuntimeError("the callback broke")

    with pytest.raises(RuntimeError, match="the callback broke"):
        sd(path(lora_dir, "style.safetensors"), callback=failing)
    sd.assert_base()


def test_base_restored_after_a_cancelled_job(sd, lora_dir):
    with pytest.raises(Cancelled):
        sd(path(lora_dir, "other.safetensors"), callback=lambda step, total, latents: False)
    sd.assert_base()
    with pytest.raises(Cancelled):
        sd(path(lora_dir, "other.safetensors"), should_stop=lambda: True)
    sd.assert_base()


def test_a_refused_job_leaves_no_lora_on(sd, lora_dir):
    """A job refused after its LoRAs were loaded (a bad step count for the scheduler) must not leave them on."""
    sd(path(lora_dir, "style.safetensors"))
    with pytest.raises(InputError):
        sd(path(lora_dir, "style.safetensors"), steps=2000)
    sd.assert_base()


# -- files that are not LoRAs for this model --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xl.safetensors", "xl_kohya.safetensors", "random.safetensors"])
def test_a_file_for_another_architecture_is_one_sentence_and_the_model_stays_exact(sd, lora_dir, name):
    with pytest.raises(InputError) as refused:
        sd(path(lora_dir, name))
    message = str(refused.value)
    assert "\n" not in message and name in message and "Traceback" not in message
    sd.assert_base()


def test_after_a_failed_load_a_new_lora_loads_as_in_a_fresh_model(tiny4, sd, lora_dir):
    """A failed load is undone (peft's half-made adapter deleted): the next LoRA, loaded under the same adapter name,
    gives the pixels it gives a model that never saw the bad file."""
    with pytest.raises(InputError):
        sd(path(lora_dir, "xl.safetensors"))
    fresh = Model(tiny4)
    assert np.array_equal(sd(path(lora_dir, "fresh.safetensors")), fresh(path(lora_dir, "fresh.safetensors")))
    sd.assert_base()


def test_an_sd_lora_on_sdxl_is_one_sentence(sdxl, lora_dir):
    for name in ("style.safetensors", "style_kohya.safetensors", "random.safetensors"):
        with pytest.raises(InputError) as refused:
            sdxl(path(lora_dir, name))
        assert "\n" not in str(refused.value) and name in str(refused.value)
    sdxl.assert_base()


# -- SDXL --------------------------------------------------------------------------------------------------------


def test_sdxl_loras_target_the_unet_and_change_the_output(sdxl, lora_dir):
    assert all(key.startswith("unet.") for key in load_file(lora_dir / "xl.safetensors"))
    diffusers_layout = sdxl(path(lora_dir, "xl.safetensors"))
    kohya_layout = sdxl(path(lora_dir, "xl_kohya.safetensors", ":1"))
    assert levels(diffusers_layout, sdxl.base).mean() > 2.0
    assert np.array_equal(diffusers_layout, kohya_layout)
    # The adapters sit in the UNet (peft's config there), not in a text encoder.
    assert set(getattr(sdxl.inpainter.components.unet, "peft_config", {})) >= {"lora_0"}
    assert np.array_equal(sdxl(path(lora_dir, "xl.safetensors", ":0")), sdxl.base)
    recorded = sdxl.images(path(lora_dir, "xl.safetensors", ":0.5"))[0].info["inpaintkit"]["loras"]
    assert recorded[0]["weight"] == 0.5 and recorded[0]["sha256"]
    sdxl.assert_base()


# -- the CLI -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    Image.fromarray(IMAGE).save(folder / "image.png")
    Image.fromarray(MASK).save(folder / "mask.png")
    return folder


def cli_args(model, files, output, *extra) -> list:
    return [
        "run", "--model", model, "--image", files / "image.png", "--mask", files / "mask.png", "--output", output,
        "--steps", "2", "--seed", "5", "--method", "blend", "--no-paste-back", "--device", "cpu", "--dtype", "fp32",
        "--quiet", *extra,
    ]  # fmt: skip


def test_cli_fuse_lora_gives_the_unfused_pixels_and_records_fused(tiny4, lora_dir, cli_files, capsys):
    lora = path(lora_dir, "style.safetensors", ":0.8")
    unfused, fused = cli_files / "unfused.png", cli_files / "fused.png"
    assert run_cli(cli_args(tiny4, cli_files, unfused, "--lora", lora), capsys)[0] == 0
    assert run_cli(cli_args(tiny4, cli_files, fused, "--lora", lora, "--fuse-lora"), capsys)[0] == 0
    with Image.open(unfused) as a, Image.open(fused) as b:
        pixels_a, pixels_b = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
        record_a, record_b = json.loads(a.text["inpaintkit"])["loras"], json.loads(b.text["inpaintkit"])["loras"]
    # Fused: W + 0.8 B A computed once instead of W x + 0.8 B (A x) at every call, the same in exact arithmetic;
    # float32 rounding differs by about 1e-6 relative, at most a level after 2 steps and the 8-bit rounding.
    assert levels(pixels_a, pixels_b).max() <= 1 and levels(pixels_a, pixels_b).mean() <= 0.05
    assert record_a[0]["source"] == record_b[0]["source"] == str(lora_dir / "style.safetensors")
    assert record_a[0]["weight"] == record_b[0]["weight"] == 0.8
    assert record_b[0].get("fused") is True and not record_a[0].get("fused")


@pytest.mark.parametrize(
    "loras, phrase",
    [
        (["x.safetensors:9"], "the weight must be from -4 to 4"),
        ([""], "not an empty text"),
        ([":0.5"], "names no file"),
        ([f"l{k}.safetensors" for k in range(17)], "at most 16 LoRAs, got 17"),
        (["a.safetensors", "a.safetensors:0.5"], "is given more than once"),
    ],
)
def test_cli_bad_lora_values_are_one_sentence_before_the_model_loads(loras, phrase, cli_files, capsys, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded for a value that is wrong on its face")

    monkeypatch.setattr("inpaintkit.cli.inpainter_from_arguments", no_load)
    extra = [part for lora in loras for part in ("--lora", lora)]
    code, _, err = run_cli(cli_args("unused-model", cli_files, cli_files / "bad.png", *extra), capsys)
    assert_one_line_error(code, err, phrase)


def test_cli_missing_lora_file_is_one_sentence_before_the_model_loads(cli_files, tmp_path, capsys, monkeypatch):
    """A local path (it ends in .safetensors) that is not there is no hub id either: no model is needed to say so."""

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing LoRA file was noticed")

    monkeypatch.setattr("inpaintkit.cli.inpainter_from_arguments", no_load)
    missing = tmp_path / "missing.safetensors"
    code, _, err = run_cli(cli_args("unused-model", cli_files, tmp_path / "o.png", "--lora", missing), capsys)
    assert_one_line_error(code, err, "no such file or folder")


def test_cli_missing_lora_file_is_one_sentence(tiny4, cli_files, tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    code, _, err = run_cli(cli_args(tiny4, cli_files, tmp_path / "o.png", "--lora", missing), capsys)
    assert_one_line_error(code, err, "no such file or folder")
    assert not (tmp_path / "o.png").exists()


def test_cli_lora_for_another_architecture_is_one_line_exit_2(tiny4, lora_dir, cli_files, tmp_path):
    """In a fresh process: diffusers' own logger must not print its multi-line load error next to ours."""
    lora = path(lora_dir, "xl.safetensors")
    result = run_cli_subprocess(cli_args(tiny4, cli_files, tmp_path / "o.png", "--lora", lora), tmp_path / "hf")
    assert_one_line_error(result.returncode, result.stderr, "is it a LoRA for this architecture?")
    assert not (tmp_path / "o.png").exists()


def test_cli_non_lora_file_is_one_sentence(tiny4, lora_dir, cli_files, tmp_path, capsys):
    lora = path(lora_dir, "random.safetensors")
    code, _, err = run_cli(cli_args(tiny4, cli_files, tmp_path / "o.png", "--lora", lora), capsys)
    assert_one_line_error(code, err, "random.safetensors could not be loaded")


# -- the HTTP service --------------------------------------------------------------------------------------------

FORM = {"steps": "2", "seed": "5", "method": "blend", "paste_back": "false", "prompt": "a red ball"}


def post(client, loras: str | None = None, settings: dict | None = None, **fields):
    data = {**FORM, **fields}
    if loras is not None:
        data["loras"] = loras
    if settings is not None:
        data["settings"] = json.dumps(settings)
    files = {"image": ("image.png", png_bytes(IMAGE), "image/png"), "mask": ("mask.png", png_bytes(MASK), "image/png")}
    return client.post("/v1/inpaint", data=data, files=files, headers={"Accept": "image/png"})


def assert_422(response, phrase: str) -> None:
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert phrase in message and "\n" not in message and "Traceback" not in message, message


@pytest.fixture(scope="module")
def served(tiny4, lora_dir):
    """A model loaded with --loras-dir, its base pixels taken in-process before any LoRA was loaded."""
    return Model(tiny4, lora_root=lora_dir)


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(served.inpainter, ServiceConfig(timeout=30.0))) as test_client:
        yield test_client


def test_service_applies_a_lora_for_one_job_then_serves_the_base_pixels(client, served):
    first = post(client)
    assert first.status_code == 200, first.text
    assert np.array_equal(decode_png(first.content), served.base)  # the service's job is the in-process job
    with_lora = post(client, loras="style.safetensors:0.8, other")  # comma-separated; the suffix may be left off
    assert with_lora.status_code == 200, with_lora.text
    assert levels(decode_png(with_lora.content), served.base).mean() > 2.0
    with Image.open(io.BytesIO(with_lora.content)) as image:
        recorded = json.loads(image.text["inpaintkit"])["loras"]
    assert [(each["source"], each["weight"]) for each in recorded] == [("style.safetensors", 0.8), ("other", 1.0)]
    assert torch.equal(served.unet_output(), served.base_unet)  # off as soon as the job is answered
    after = post(client)
    assert after.status_code == 200 and np.array_equal(decode_png(after.content), served.base)


def test_service_takes_loras_as_a_list_in_the_settings_json(client, served):
    listed = post(client, settings={"loras": ["style.safetensors:0.8", "other.safetensors"]})
    form = post(client, loras="style.safetensors:0.8,other.safetensors")
    assert listed.status_code == form.status_code == 200, (listed.text, form.text)
    assert np.array_equal(decode_png(listed.content), decode_png(form.content))
    assert np.array_equal(decode_png(post(client).content), served.base)


def test_service_restores_the_base_after_a_deadline_cancels_a_lora_job(served):
    app = create_app(served.inpainter, ServiceConfig(timeout=0.5))
    with TestClient(app) as test_client:
        # 500 steps take seconds on one CPU thread; the 0.5 s deadline cancels the job between steps (504).
        cancelled = post(test_client, loras="style.safetensors", steps="500")
        assert cancelled.status_code == 504, cancelled.text
        deadline = time.monotonic() + 10
        while app.state.worker.running is not None:  # the job stops at its next step; then the UNet is checked
            assert time.monotonic() < deadline, "the cancelled job did not stop"
            time.sleep(0.01)
        assert torch.equal(served.unet_output(), served.base_unet), "a LoRA is still on after the cancelled job"
        after = post(test_client)
        assert after.status_code == 200, after.text
        assert np.array_equal(decode_png(after.content), served.base)


@pytest.mark.parametrize(
    "loras, phrase",
    [
        ("xl.safetensors", "is it a LoRA for this architecture?"),
        ("xl_kohya.safetensors", "is it a LoRA for this architecture?"),
        ("random.safetensors", "could not be loaded"),
        ("../style.safetensors", "is not one of this service's LoRAs"),
        ("sub/style.safetensors", "is not one of this service's LoRAs"),
        ("..", "is not one of this service's LoRAs"),
        ("nothing.safetensors", "is not one of this service's LoRAs"),
        ("style.safetensors:9", "the weight must be from -4 to 4"),
        ("style.safetensors, style.safetensors:0.5", "is given more than once"),
    ],
)
def test_service_refuses_bad_loras_422_and_stays_exact(client, served, loras, phrase):
    assert_422(post(client, loras=loras), phrase)
    after = post(client)
    assert after.status_code == 200 and np.array_equal(decode_png(after.content), served.base)


def test_service_refuses_an_absolute_path_even_when_it_is_a_lora_in_the_root(client, lora_dir):
    assert_422(post(client, loras=str(lora_dir / "style.safetensors")), "is not one of this service's LoRAs")


def test_service_without_a_loras_root_refuses_every_lora(tiny4, lora_dir):
    inpainter = Inpainter.from_pretrained(tiny4, device="cpu")
    with TestClient(create_app(inpainter)) as test_client:
        for lora in ("style.safetensors", str(lora_dir / "style.safetensors"), "../style.safetensors"):
            assert_422(post(test_client, loras=lora), "this service takes no LoRAs (start it with --loras-dir")
        assert post(test_client).status_code == 200


# -- what the review found ---------------------------------------------------------------------------------------


def test_the_same_file_under_two_names_is_refused_not_applied_twice(sd, lora_dir):
    same = f"{lora_dir}/./style.safetensors"  # another spelling of style.safetensors
    with pytest.raises(InputError, match="is the same file as"):
        sd(path(lora_dir, "style.safetensors", ":0.5"), f"{same}:0.5")
    sd.assert_base()


def test_a_fused_model_records_its_loras_on_every_job(tiny4, lora_dir):
    fused = Inpainter.from_pretrained(tiny4, device="cpu", fuse_loras=[path(lora_dir, "style.safetensors", ":0.7")])
    image = fused(IMAGE, MASK, "a red ball", **JOB)[0]  # no loras asked: the merged weights run all the same
    (recorded,) = image.info["inpaintkit"]["loras"]
    assert recorded["fused"] and recorded["weight"] == 0.7 and recorded["sha256"]
    with pytest.raises(InputError, match="fused into its weights"):
        fused(IMAGE, MASK, "x", loras=[path(lora_dir, "other.safetensors")], **JOB)


def test_a_missing_loras_dir_is_one_sentence(tiny4, tmp_path):
    with pytest.raises(InputError, match="is not a folder"):
        Inpainter.from_pretrained(tiny4, device="cpu", lora_root=tmp_path / "nowhere")


def test_a_folder_named_like_a_lora_is_not_listed(tmp_path, tiny4):
    (tmp_path / "folder.safetensors").mkdir()
    make_tiny_lora(tiny4, tmp_path / "real.safetensors")
    assert Inpainter.from_pretrained(tiny4, device="cpu", lora_root=tmp_path).loras.available() == ["real.safetensors"]
