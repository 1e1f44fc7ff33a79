"""The flow-matching families (flux-fill, flux, sd3) through the front ends with no front-end change, and the
settings they cannot honour refused in one sentence (issue 16)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inpaintkit.errors import Cancelled, InputError
from inpaintkit.io import read_png_parameters
from inpaintkit.server import ServiceConfig, create_app
from inpaintkit.settings import InpaintSettings

from .conftest import box_mask, gradient_image
from .helpers import bench_every_method, run_cli
from .test_server import png_bytes

WIDTH, HEIGHT = 64, 48
PIXELS, MASK = gradient_image(WIDTH, HEIGHT, seed=81), box_mask(WIDTH, HEIGHT, (16, 8, 48, 40))


@pytest.mark.parametrize(
    "family, channels, method",
    [("flux-fill", 96, "native"), ("flux", 16, "blend"), ("sd3", 33, "native")],
)
def test_make_tiny_model_info_and_run_on_each_flow_family(tmp_path, capsys, family, channels, method):
    folder = tmp_path / family
    assert run_cli(["make-tiny-model", folder, "--family", family], capsys)[0] == 0
    code, out, err = run_cli(["info", "--model", folder], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert (info["family"], info["unet_in_channels"], info["prediction_type"]) == (family, channels, "flow")
    Image.fromarray(PIXELS).save(tmp_path / "photo.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    arguments = ["run", "--model", folder, "--image", tmp_path / "photo.png", "--mask", tmp_path / "mask.png"]
    code, _, err = run_cli([*arguments, "--steps", "2", "--seed", "1", "--output", tmp_path / "out.png"], capsys)
    assert code == 0, err
    output = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    assert np.array_equal(output[MASK == 0], PIXELS[MASK == 0])
    parameters = read_png_parameters(tmp_path / "out.png")
    assert parameters["method"] == method  # auto: native on an inpainting model, blend on an ordinary one
    assert parameters["guidance"] == {"flux-fill": 30.0, "flux": 3.5, "sd3": 7.0}[family]  # the family's default


def test_an_image_size_the_packing_cannot_take_is_padded_and_cropped_back(flux_fill):
    """Flux packs 2x2 latent cells (16 px) into a token: a 72x40 image runs padded to 80x48, and comes back whole."""
    pixels, mask = gradient_image(72, 40, seed=82), box_mask(72, 40, (20, 8, 60, 30))
    output = np.asarray(flux_fill(pixels, mask, "x", steps=2, seed=1)[0])
    assert output.shape == pixels.shape
    assert np.array_equal(output[mask == 0], pixels[mask == 0])
    assert not np.array_equal(output[mask > 0], pixels[mask > 0])


def test_crop_padding_works_at_the_family_s_native_size_and_multiple(flux_fill, monkeypatch):
    """The crop window is scaled to Flux's native 1024 px and rounded to its 16 px multiple."""
    from inpaintkit import inpainter as inpainter_module

    seen = {}
    original = inpainter_module.window_around

    def spy(box, shape, padding, native_size, multiple=8):
        seen.update(native_size=native_size, multiple=multiple)
        return original(box, shape, padding, native_size, multiple)

    monkeypatch.setattr(inpainter_module, "window_around", spy)
    with pytest.raises(Cancelled):  # stop before the (slow) 1024 px run: the window is what is tested
        flux_fill(PIXELS, MASK, "x", steps=1, seed=1, crop_padding=4, should_stop=lambda: True)
    assert seen == {"native_size": 1024, "multiple": 16}


def test_the_service_serves_a_flux_fill_model(flux_fill):
    with TestClient(create_app(flux_fill, ServiceConfig(timeout=60.0))) as client:
        models = client.get("/v1/models").json()
        assert models["models"][0]["capabilities"]["family"] == "flux-fill"
        response = client.post(
            "/v1/inpaint",
            data={"steps": "2", "seed": "5"},
            files={"image": ("p.png", png_bytes(PIXELS), "image/png"), "mask": ("m.png", png_bytes(MASK), "image/png")},
            headers={"Accept": "image/png"},
        )
        refused = client.post(
            "/v1/inpaint",
            data={"steps": "2", "negative_prompt": "blurry"},
            files={"image": ("p.png", png_bytes(PIXELS), "image/png"), "mask": ("m.png", png_bytes(MASK), "image/png")},
        )
    assert response.status_code == 200, response.text
    output = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert np.array_equal(output[MASK == 0], PIXELS[MASK == 0])
    assert refused.status_code == 422 and "--true-cfg" in refused.text


def test_bench_runs_every_zero_shot_method_on_a_flux_model(tiny_flux, tmp_path, capsys):
    run = bench_every_method(tiny_flux, "blend,bld,soft,repaint,tdpaint,lanpaint", PIXELS, MASK, tmp_path, capsys)
    assert run["family"] == "flux"


def test_the_web_ui_serves_an_sd3_model(sd3, tmp_path):
    from .ui_helpers import inpaint_through_the_ui

    result = inpaint_through_the_ui(sd3, PIXELS, MASK, tmp_path, prompt="a cat", steps=2, seed=7)
    expected = sd3(PIXELS, MASK, "a cat", steps=2, seed=7)[0]  # the UI's guidance starts at SD 3's default, 7
    assert np.array_equal(np.asarray(Image.open(result).convert("RGB")), np.asarray(expected))


@pytest.mark.parametrize(
    "fixture, settings, phrase",
    [
        ("flux", {"negative_prompt": "blurry"}, "a negative prompt acts only with true classifier-free guidance"),
        ("flux", {"negative_prompt": "blurry", "true_cfg": 1.0}, "add --true-cfg above 1"),
        ("inpainter4", {"true_cfg": 4.0}, "--true-cfg is for Flux models"),
        ("flux", {"method": "latentpaint"}, "denoiser is a transformer"),
        ("flux", {"scheduler": "ddim"}, "a flow-matching model (SD 3, Flux) takes default, euler, heun, dpm++2m"),
        ("sd3", {"scheduler": "lcm"}, "a flow-matching model (SD 3, Flux) takes"),
        ("flux", {"spacing": "trailing"}, "a flow-matching model spaces its sigmas itself"),
        ("inpainter4", {"scheduler": "heun"}, "The heun scheduler is for flow-matching models"),
        ("flux", {"method": "repaint", "scheduler": "heun"}, "use --scheduler euler or default, not heun"),
        ("flux", {"method": "native"}, "needs a dedicated inpainting checkpoint"),
        ("flux_fill", {"loras": ("style.safetensors",)}, "this flux-fill model's transformer takes none yet"),
    ],
)
def test_what_a_flow_family_cannot_honour_is_one_sentence(request, fixture, settings, phrase):
    inpainter = request.getfixturevalue(fixture)
    with pytest.raises(InputError) as raised:
        inpainter(PIXELS, MASK, "x", steps=2, seed=1, **settings)
    assert phrase in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("fixture", ["flux", "sd3"])
@pytest.mark.parametrize("scheduler", ["euler", "heun", "dpm++2m"])
def test_the_flow_schedulers_run_under_their_short_names(request, fixture, scheduler):
    inpainter = request.getfixturevalue(fixture)
    output = np.asarray(inpainter(PIXELS, MASK, "x", steps=3, seed=1, scheduler=scheduler, paste_back=False)[0])
    assert np.isfinite(output).all() and not np.array_equal(output[MASK > 0], PIXELS[MASK > 0])


def test_euler_by_name_is_the_model_s_own_default_on_a_flow_model(flux):
    default = np.asarray(flux(PIXELS, MASK, "x", steps=3, seed=1)[0])
    assert np.array_equal(np.asarray(flux(PIXELS, MASK, "x", steps=3, seed=1, scheduler="euler")[0]), default)


def test_true_cfg_with_a_negative_prompt_changes_the_flux_result(flux):
    plain = np.asarray(flux(PIXELS, MASK, "a cat", steps=3, seed=1, paste_back=False)[0])
    guided = flux(PIXELS, MASK, "a cat", negative_prompt="blurry", true_cfg=4.0, steps=3, seed=1, paste_back=False)
    assert not np.array_equal(np.asarray(guided[0]), plain)
    assert guided[0].info["inpaintkit"]["true_cfg"] == 4.0


def test_the_web_ui_resets_guidance_to_the_new_family_s_default_after_a_switch(tiny4, tiny_flux_fill, tmp_path):
    from inpaintkit import Inpainter
    from inpaintkit.catalog import ModelCatalog
    from inpaintkit.ui.app import build_app

    models = tmp_path / "models"
    models.mkdir()
    (models / "four").symlink_to(tiny4)
    (models / "fill").symlink_to(tiny_flux_fill)

    def load(source):
        return Inpainter.from_pretrained(source, device="cpu")

    catalog = ModelCatalog(models, use_hf_cache=False)
    demo = build_app(load(str(models / "four")), model_name="four", catalog=catalog, load_model=load)
    assert demo.jobs.guidance_field()["value"] == 7.5
    assert demo.jobs.switch_model("fill", progress=lambda *a, **k: None) == ("Model: fill", "fill")
    assert demo.jobs.guidance_field()["value"] == 30.0  # Flux Fill's, not SD's


@pytest.mark.parametrize(
    "fields, guidance, true_cfg, infotext_cfg",
    [
        ({"cfg_scale": 1, "negative_prompt": "blurry"}, 30.0, None, "CFG scale: 1.0"),  # at CFG 1 it has no effect
        ({"cfg_scale": 1, "distilled_cfg_scale": 12}, 12.0, None, "Distilled CFG Scale: 12.0"),
        ({"cfg_scale": 4, "negative_prompt": "blurry"}, 30.0, 4.0, "CFG scale: 4.0"),  # Forge's true CFG
        ({"cfg_scale": 1, "sampler_name": "DPM++ 2M"}, 30.0, None, "Sampler: DPM++ 2M, Schedule type: Automatic"),
    ],
)
def test_the_a1111_route_maps_cfg_as_forge_does_on_flux(flux_fill, fields, guidance, true_cfg, infotext_cfg):
    """On FLUX, A1111 clients' cfg_scale is true CFG and Forge's distilled_cfg_scale the embedded guidance; a
    negative prompt at CFG 1 has no effect, as in A1111 itself, so it is not refused."""
    from .test_a1111 import b64, decoded_png, metadata

    request = {
        "init_images": [b64(png_bytes(PIXELS))], "mask": b64(png_bytes(MASK)), "prompt": "a red ball", "steps": 2,
        "seed": 3, "mask_blur": 0, "width": WIDTH, "height": HEIGHT, "denoising_strength": 1.0, **fields,
    }  # fmt: skip
    with TestClient(create_app(flux_fill, ServiceConfig(timeout=60.0))) as client:
        response = client.post("/sdapi/v1/img2img", json=request)
    assert response.status_code == 200, response.text
    recorded = metadata(decoded_png(response.json()["images"][0]))
    assert (recorded["guidance"], recorded["true_cfg"]) == (guidance, true_cfg)
    assert infotext_cfg in json.loads(response.json()["info"])["infotexts"][0]


def test_a_flux_model_without_a_guidance_input_refuses_a_guidance_that_cannot_act(tmp_path):
    """FLUX.1 schnell takes no guidance: a value other than the default cannot act, so it is refused, and the
    outputs record no guidance at all."""
    from inpaintkit import Inpainter
    from inpaintkit.tiny_flow import make_tiny_flux

    schnell = Inpainter.from_pretrained(make_tiny_flux(tmp_path / "schnell", guidance_embeds=False), device="cpu")
    with pytest.raises(InputError, match="takes no guidance input"):
        schnell(PIXELS, MASK, "x", steps=2, seed=1, guidance=20.0)
    assert schnell(PIXELS, MASK, "x", steps=2, seed=1)[0].info["inpaintkit"]["guidance"] is None


def test_heun_s_second_call_per_step_counts_against_the_job_limit(flux):
    """A 2nd-order scheduler calls the denoiser twice a step: the budget a service sets must see both."""
    counted = []
    handle = flux.components.unet.register_forward_pre_hook(lambda module, args: counted.append(1))
    try:
        flux(PIXELS, MASK, "x", steps=4, seed=1, scheduler="heun")
    finally:
        handle.remove()
    method = flux.check(flux.components.family.settled(InpaintSettings(steps=4, scheduler="heun", method="blend")))
    assert len(counted) == 7  # 2 x 4 - 1: no second call after the last step
    assert method.total_denoiser_calls(InpaintSettings(steps=4, scheduler="heun")) >= len(counted)


def test_bld_s_default_decoder_reconstruction_runs_on_a_vae_without_post_quant_conv(flux_fill):
    """FLUX's and SD 3's VAEs have no post-quant conv; bld's default (optimize) tunes the decoder alone there."""
    output = np.asarray(flux_fill(PIXELS, MASK, "x", steps=2, seed=1, method="bld")[0])
    assert np.array_equal(output[MASK == 0], PIXELS[MASK == 0])


def test_latentpaint_weights_and_training_refuse_a_transformer_in_one_sentence(tiny_flux, tmp_path, capsys):
    Image.fromarray(PIXELS).save(tmp_path / "photo.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    (tmp_path / "images").mkdir()
    Image.fromarray(PIXELS).save(tmp_path / "images" / "a.png")
    (tmp_path / "w.safetensors").write_bytes(b"not read")
    run = ["run", "--model", tiny_flux, "--image", tmp_path / "photo.png", "--mask", tmp_path / "mask.png"]
    run += ["--output", tmp_path / "o.png"]
    train = ["train-latentpaint", tmp_path / "images", "--out", tmp_path / "t.safetensors", "--model", tiny_flux]
    for arguments in ([*run, "--latentpaint-weights", tmp_path / "w.safetensors"], [*train, "--steps", "1"]):
        code, _, err = run_cli(arguments, capsys)
        assert code == 2 and "denoiser is a transformer" in err and "Traceback" not in err, err


def test_an_sd3_folder_saved_without_t5_runs_with_zeros_in_its_place(tiny_sd3, tmp_path):
    """SD 3 may be used without its 4.7B T5 to save memory (diffusers encodes zeros for it); such a folder loads."""
    import shutil

    from inpaintkit import Inpainter

    folder = tmp_path / "sd3-no-t5"
    shutil.copytree(tiny_sd3, folder, ignore=shutil.ignore_patterns("text_encoder_3", "tokenizer_3"))
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(
        json.dumps({**index, "text_encoder_3": [None, None], "tokenizer_3": [None, None]})
    )
    without_t5 = Inpainter.from_pretrained(folder, device="cpu")
    assert without_t5.components.text_encoder_3 is None
    output = np.asarray(without_t5(PIXELS, MASK, "a cat", steps=2, seed=1)[0])
    assert np.array_equal(output[MASK == 0], PIXELS[MASK == 0])


def test_strength_is_rounded_as_the_family_s_pipeline_rounds_it(flux, inpainter4):
    """3 steps at strength 0.3: SD's pipeline keeps int(0.9) = 0 steps (refused), FLUX's skips int(2.1) = 2 and runs
    one, as FluxInpaintPipeline does."""
    counted = []
    handle = flux.components.unet.register_forward_pre_hook(lambda module, args: counted.append(1))
    try:
        flux(PIXELS, MASK, "x", steps=3, strength=0.3, seed=1)
    finally:
        handle.remove()
    assert len(counted) == 1
    with pytest.raises(InputError, match="leaves no denoising step"):
        inpainter4(PIXELS, MASK, "x", steps=3, strength=0.3, seed=1)


def test_the_a1111_sampler_list_offers_what_the_loaded_flow_model_runs(flux, inpainter4):
    for inpainter, expected in ((flux, {"DPM++ 2M", "Euler"}), (inpainter4, {"DPM++ 2M", "Euler", "DDIM", "UniPC"})):
        with TestClient(create_app(inpainter, ServiceConfig(timeout=60.0))) as client:
            listed = {sampler["name"] for sampler in client.get("/sdapi/v1/samplers").json()}
        assert expected <= listed and (inpainter is not flux or listed == expected)


def test_a_few_step_preset_on_a_flow_model_is_refused_by_its_own_name(tiny_flux, tmp_path, capsys):
    Image.fromarray(PIXELS).save(tmp_path / "photo.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    code, _, err = run_cli(
        ["run", "--model", tiny_flux, "--image", tmp_path / "photo.png", "--mask", tmp_path / "mask.png",
         "--output", tmp_path / "out.png", "--preset", "lightning"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "--preset lightning is a recipe for an SD or SDXL few-step model" in err, err
