"""latentpaint (issue 15): blend plus fused hidden states, its hook always restored, its trained propagation module."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from inpaintkit.errors import Cancelled, InputError
from inpaintkit.methods import METHODS
from inpaintkit.methods.feature_fusion import unet_blocks
from inpaintkit.settings import InpaintSettings

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli

WIDTH, HEIGHT = 64, 48
PIXELS = gradient_image(WIDTH, HEIGHT, seed=40)
MASK = box_mask(WIDTH, HEIGHT, (16, 8, 48, 40))


@pytest.fixture(params=["inpainter4", "sdxl4", "inpainter9", "sdxl9"])
def model(request):
    """4- and 9-channel UNets of both families: latentpaint must run on each."""
    return request.getfixturevalue(request.param)


def inpaint(inpainter, callback=None, **options):
    options = {"steps": 6, "seed": 3, "paste_back": False, **options}
    images = inpainter(PIXELS, MASK, "a teapot", callback=callback, **options)
    return np.asarray(images[0]).astype(np.int32)


def hooks_left(inpainter) -> int:
    return sum(len(block._forward_hooks) for block in unet_blocks(inpainter.components.unet).values())


# -- latentpaint is blend plus exactly what the paper adds -------------------------------------------------------------


@pytest.mark.parametrize("off", [{"fuse_blocks": "none"}, {"fuse_until": 0.0}])
def test_without_fusion_it_is_blend_pixel_for_pixel(model, off):
    assert np.array_equal(inpaint(model, method="latentpaint", **off), inpaint(model, method="blend"))


def test_fusion_changes_the_generated_region(model):
    blend, latentpaint = inpaint(model, method="blend"), inpaint(model, method="latentpaint")
    hole = MASK > 0
    # Random tiny UNets: any change in the hole shows the fused features reached the prediction. A mean absolute
    # difference of a whole grey level rules out rounding noise (fp32 vs bf16 rounding moves pixels by < 0.5).
    assert np.abs(blend[hole] - latentpaint[hole]).mean() > 1.0


def test_the_fused_features_equal_the_context_pass_in_the_known_region(inpainter4):
    """Read through a probe hook added after latentpaint's (so it sees the fused output) on three blocks."""
    unet = inpainter4.components.unet
    probed = {"down_blocks.0": unet.down_blocks[0], "mid_block": unet.mid_block, "up_blocks.0": unet.up_blocks[0]}
    seen: dict[str, list] = {name: [] for name in probed}
    handles = []

    def probe(name):
        def record(block, args, output):
            seen[name].append(output)

        return record

    def attach_probes(count, total, latents):
        if count == 0:  # latentpaint's hooks are on by now; ours run after them from step 2 on
            handles.extend(block.register_forward_hook(probe(name)) for name, block in probed.items())

    try:
        inpaint(inpainter4, callback=attach_probes, method="latentpaint", steps=3, scheduler="ddim")
    finally:
        for handle in handles:
            handle.remove()
    latent_mask = F.interpolate(torch.tensor(MASK / 255.0)[None, None].float(), size=(HEIGHT // 8, WIDTH // 8))
    for name, outputs in seen.items():
        assert len(outputs) == 2  # steps 2 and 3
        for output in outputs:
            tensors = [output[0], *output[1]] if isinstance(output, tuple) else [output]
            for hidden in tensors:
                generation, context = hidden.float().chunk(2)
                generate = F.adaptive_avg_pool2d(latent_mask, hidden.shape[-2:]).expand_as(generation[:, :1])
                known, free = generate[:, 0] == 0, generate[:, 0] == 1
                assert known.any() and free.any(), name
                for channel in range(0, hidden.shape[1], 7):
                    g, c = generation[:, channel], context[:, channel]
                    assert torch.equal(g[known], c[known]), name  # fused: exactly the context's
                assert not torch.equal(generation[:, :, free[0]], context[:, :, free[0]]), name  # the hole is its own


def test_one_unet_call_per_step_of_twice_the_batch_while_fusing(inpainter4):
    batches = []
    handle = inpainter4.components.unet.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    try:
        inpaint(inpainter4, method="latentpaint", steps=6, fuse_until=0.5, scheduler="ddim")
    finally:
        handle.remove()
    # guidance 7.5: [unconditional, conditional] per pass; the first ceil(0.5 * 6) = 3 steps stack the context pass
    # (DDIM: one call per step; PNDM's first step calls twice)
    assert batches == [4, 4, 4, 2, 2, 2]
    settings = InpaintSettings(method="latentpaint", steps=6, fuse_until=0.5)
    assert METHODS["latentpaint"].denoiser_calls(settings) == 9  # what the job limits and the service count


# -- the hook is always restored ---------------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_the_hooks_are_removed_after_success_error_and_cancellation_and_blend_is_unchanged(inpainter4):
    before = inpaint(inpainter4, method="blend")
    assert hooks_left(inpainter4) == 0
    inpaint(inpainter4, method="latentpaint")
    assert hooks_left(inpainter4) == 0

    def fail(count, total, latents):
        raise Boom()

    with pytest.raises(Boom):
        inpaint(inpainter4, callback=fail, method="latentpaint")
    assert hooks_left(inpainter4) == 0
    with pytest.raises(Cancelled):
        inpaint(inpainter4, callback=lambda count, total, latents: False, method="latentpaint")
    assert hooks_left(inpainter4) == 0
    with pytest.raises(Cancelled):  # the service's and the UI's cancel: should_stop between steps
        inpainter4.run(PIXELS, MASK, InpaintSettings(method="latentpaint", steps=4, seed=1), should_stop=lambda: True)
    assert hooks_left(inpainter4) == 0
    assert np.array_equal(inpaint(inpainter4, method="blend"), before)


# -- refusals, in one sentence -----------------------------------------------------------------------------------------


def test_compile_is_refused_before_any_work(tiny4):
    from inpaintkit import Inpainter

    compiled = Inpainter.from_pretrained(tiny4, device="cpu", compile=True)  # torch.compile is lazy: no compiling yet
    with pytest.raises(InputError, match="torch.compile'd UNet would skip"):
        compiled(PIXELS, MASK, "x", method="latentpaint", steps=2)


def test_propagation_without_trained_weights_is_refused(inpainter4):
    with pytest.raises(InputError, match="--latentpaint-weights FILE"):
        inpaint(inpainter4, method="latentpaint", propagation=0.5)


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--fuse-blocks", "left"], "argument --fuse-blocks: invalid choice: 'left'"),
        (["--fuse-until", "1.5"], "--fuse-until must be from 0 to 1, got 1.5"),
        (["--propagation", "-1"], "--propagation must be from 0 to 4, got -1.0"),
        (["--method", "blend", "--fuse-until", "0.5"], "--fuse-until applies only to --method latentpaint"),
    ],
)
def test_bad_options_are_one_line(flags, phrase, tmp_path, tiny4, capsys):
    Image.fromarray(PIXELS).save(tmp_path / "in.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    args = ["run", "--model", tiny4, "--device", "cpu", "--image", tmp_path / "in.png", "--mask", tmp_path / "mask.png"]
    flags = flags if "--method" in flags else ["--method", "latentpaint", *flags]
    code, _, err = run_cli([*args, "--out", tmp_path / "out.png", "--steps", "2", *flags], capsys)
    assert_one_line_error(code, err, phrase)
    assert not (tmp_path / "out.png").exists()


# -- the trained propagation module ------------------------------------------------------------------------------------


def test_training_lowers_the_masked_loss_of_a_batch(inpainter4):
    """The gradient reaches phi and phi can lower the denoising loss: 30 steps on one fixed batch must lower it."""
    from inpaintkit.families import Conditioning
    from inpaintkit.methods.feature_fusion import FeatureFusion, block_channels
    from inpaintkit.methods.propagation import PropagationModules
    from inpaintkit.propagation_training import random_box_mask, training_loss, training_scheduler

    components = inpainter4.components
    fused = unet_blocks(components.unet)
    channels = block_channels(components.unet)
    modules = PropagationModules({name: channels[name] for name in fused})
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-3)
    pixels = gradient_image(64, 64, seed=5)[None]
    masks = random_box_mask(64, np.random.default_rng(0))[None]
    empty = components.family.encode_text(components, "", False, 1, (64, 64))
    conditioning = Conditioning.cat([empty, empty])
    fusion = FeatureFusion(fused, torch.zeros(1, 1, 8, 8), modules, 1.0)
    scheduler = training_scheduler(components)

    def loss():  # the same timestep, noise and VAE samples every time
        generator = torch.Generator().manual_seed(1)
        return training_loss(components, scheduler, fusion, conditioning, pixels, masks, generator)

    with fusion.attached(), torch.enable_grad():
        components.unet.requires_grad_(False)
        first = loss()
        for _ in range(30):
            optimizer.zero_grad()
            value = loss()
            value.backward()
            optimizer.step()
        last = loss()
    # Zero-initialised phi starts at the UNet's own loss; a working gradient path lowers it by far more than the
    # bf16 rounding of the loss (about 1%).
    assert last.item() < 0.9 * first.item()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny4):
    """A propagation module trained by the CLI on the tiny SD model (a few seconds)."""
    folder = tmp_path_factory.mktemp("train")
    (folder / "images").mkdir()
    for seed in range(3):
        Image.fromarray(gradient_image(80, 64, seed=seed)).save(folder / "images" / f"{seed}.png")
    from inpaintkit.cli import main

    out = folder / "propagation.safetensors"
    args = ["train-latentpaint", folder / "images", "--out", out, "--model", tiny4, "--device", "cpu"]
    assert main([str(arg) for arg in [*args, "--steps", "12", "--size", "64", "--learning-rate", "1e-3"]]) == 0
    return out


def test_trained_weights_change_the_output_and_are_recorded(trained, tiny4):
    from inpaintkit import Inpainter

    with_weights = Inpainter.from_pretrained(tiny4, device="cpu", latentpaint_weights=trained)
    plain = Inpainter.from_pretrained(tiny4, device="cpu")
    propagated = with_weights(PIXELS, MASK, "a teapot", method="latentpaint", steps=4, seed=3, paste_back=False)[0]
    fused_only = plain(PIXELS, MASK, "a teapot", method="latentpaint", steps=4, seed=3, paste_back=False)[0]
    assert not np.array_equal(np.asarray(propagated), np.asarray(fused_only))
    metadata = propagated.info["inpaintkit"]
    assert metadata["latentpaint_variant"] == "fusion + propagation"
    assert metadata["latentpaint_weights"].startswith("propagation.safetensors (sha256 ")
    assert metadata["propagation"] == 1.0
    assert fused_only.info["inpaintkit"]["latentpaint_variant"] == "fusion (training-free)"
    # scale 0 is the training-free variant exactly
    off = with_weights(PIXELS, MASK, "a teapot", method="latentpaint", steps=4, seed=3, paste_back=False, propagation=0)
    assert np.array_equal(np.asarray(off[0]), np.asarray(fused_only))


def test_the_cli_runs_with_trained_weights(trained, tiny4, tmp_path, capsys):
    Image.fromarray(PIXELS).save(tmp_path / "in.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    code, out, err = run_cli(
        ["run", "--model", tiny4, "--device", "cpu", "--image", tmp_path / "in.png", "--mask", tmp_path / "mask.png",
         "--method", "latentpaint", "--latentpaint-weights", trained, "--propagation", "2", "--steps", "2",
         "--out", tmp_path / "out.png"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    metadata = json.loads(Image.open(tmp_path / "out.png").text["inpaintkit"])
    assert metadata["propagation"] == 2.0 and metadata["latentpaint_variant"] == "fusion + propagation"


def test_weights_for_another_architecture_are_one_sentence(trained, tiny_sdxl4, tmp_path, capsys):
    Image.fromarray(PIXELS).save(tmp_path / "in.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    code, _, err = run_cli(
        ["run", "--model", tiny_sdxl4, "--device", "cpu", "--image", tmp_path / "in.png", "--mask",
         tmp_path / "mask.png", "--method", "latentpaint", "--latentpaint-weights", trained, "--out",
         tmp_path / "out.png"],
        capsys,
    )  # fmt: skip
    assert_one_line_error(code, err, "a UNet of another architecture")


@pytest.mark.parametrize(
    "content, phrase",
    [(b"not a safetensors file", "is not a safetensors file"), (None, "is not a LatentPaint propagation file")],
)
def test_a_file_that_is_not_a_propagation_module_is_one_sentence(content, phrase, tiny4, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    if content is None:  # a real safetensors file of something else
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, str(weights))
    else:
        weights.write_bytes(content)
    Image.fromarray(PIXELS).save(tmp_path / "in.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    code, _, err = run_cli(
        ["run", "--model", tiny4, "--device", "cpu", "--image", tmp_path / "in.png", "--mask", tmp_path / "mask.png",
         "--method", "latentpaint", "--latentpaint-weights", weights, "--out", tmp_path / "out.png"],
        capsys,
    )  # fmt: skip
    assert_one_line_error(code, err, phrase)


@pytest.mark.parametrize(
    "change, phrase",
    [
        ({"images": "missing"}, "is not a folder of images"),
        ({"out": "w.bin"}, "is written as a .safetensors file"),
        ({"size": "72"}, "--size must be a multiple of 16"),
    ],
)
def test_bad_training_arguments_are_one_sentence(change, phrase, tiny4, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.fromarray(gradient_image(64, 64)).save(tmp_path / "images" / "a.png")
    values = {"images": "images", "out": "w.safetensors", "size": "64", **change}
    code, _, err = run_cli(
        ["train-latentpaint", tmp_path / values["images"], "--out", tmp_path / values["out"], "--size", values["size"],
         "--model", tiny4, "--device", "cpu", "--steps", "1"],
        capsys,
    )  # fmt: skip
    assert_one_line_error(code, err, phrase)
    assert not (tmp_path / values["out"]).exists()


# -- front ends --------------------------------------------------------------------------------------------------------


def test_the_service_runs_latentpaint_then_blend_with_blend_s_exact_pixels(inpainter4):
    """The service shares one model across jobs: a latentpaint request must leave nothing behind in it."""
    import io

    from fastapi.testclient import TestClient

    from inpaintkit.server import ServiceConfig, create_app

    def png(pixels) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    files = {"image": ("p.png", png(PIXELS), "image/png"), "mask": ("m.png", png(MASK), "image/png")}
    job = {"steps": "3", "seed": "5", "paste_back": "false"}
    with TestClient(create_app(inpainter4, ServiceConfig(timeout=60.0))) as client:

        def post(**fields):
            return client.post("/v1/inpaint", data={**job, **fields}, files=files, headers={"Accept": "image/png"})

        blend_before = post(method="blend")
        latentpaint = post(method="latentpaint", fuse_until="0.5", fuse_blocks="mid+up")
        blend_after = post(method="blend")
        bad = post(method="latentpaint", fuse_until="2")
    assert blend_before.status_code == latentpaint.status_code == blend_after.status_code == 200
    assert blend_after.content == blend_before.content
    assert latentpaint.content != blend_before.content
    metadata = json.loads(Image.open(io.BytesIO(latentpaint.content)).text["inpaintkit"])
    assert (metadata["fuse_blocks"], metadata["fuse_until"]) == ("mid+up", 0.5)
    assert bad.status_code == 422 and "--fuse-until must be from 0 to 1, got 2.0" in bad.json()["error"]


# -- what the review found: damaged files, a bad training image, honest metadata -------------------------------------


def tampered(trained, tmp_path, change) -> str:
    """The trained file written again with its metadata changed by `change(metadata, tensors)`."""
    from safetensors.torch import load_file, save_file

    from inpaintkit.methods.propagation import safetensors_metadata

    metadata = safetensors_metadata(trained.read_bytes())
    tensors = load_file(str(trained))
    change(metadata, tensors)
    path = tmp_path / "tampered.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


def set_nan(metadata, tensors):
    next(iter(tensors.values())).fill_(float("nan"))


@pytest.mark.parametrize(
    "change, phrase",
    [
        (lambda m, t: m.update(channels_by_block="{not json"), "has a damaged block list"),
        (lambda m, t: m.pop("channels_by_block"), "has a damaged block list"),
        (lambda m, t: m.update(channels_by_block=json.dumps({"down_blocks.0": -1})), "has a damaged block list"),
        (lambda m, t: m.update(architecture="[1, 2"), "has no readable UNet architecture"),
        (lambda m, t: t.pop(next(iter(t))), "holds tensors that do not match its own block list (missing 1"),
        (set_nan, "holds NaN or infinite weights"),
    ],
    ids=["block-list-not-json", "block-list-missing", "negative-channels", "architecture-not-json", "tensor-missing",
         "nan"],
)  # fmt: skip
def test_a_damaged_weights_file_is_one_sentence(trained, tiny4, tmp_path, capsys, change, phrase):
    weights = tampered(trained, tmp_path, change)
    code, _, err = run_cli(["info", "--model", tiny4, "--device", "cpu", "--latentpaint-weights", weights], capsys)
    assert_one_line_error(code, err, phrase)


def test_info_checks_and_reports_the_weights(trained, tiny4, capsys):
    code, out, err = run_cli(["info", "--model", tiny4, "--device", "cpu", "--latentpaint-weights", trained], capsys)
    assert code == 0, err
    assert json.loads(out)["latentpaint_weights"]["file"].startswith("propagation.safetensors (sha256 ")


def test_an_unreadable_training_image_is_named_before_any_step(tiny4, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.fromarray(gradient_image(64, 64)).save(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "b.png").write_bytes(b"not a png")
    code, _, err = run_cli(
        ["train-latentpaint", tmp_path / "images", "--out", tmp_path / "w.safetensors", "--model", tiny4,
         "--device", "cpu", "--steps", "3", "--size", "64"],
        capsys,
    )  # fmt: skip
    assert_one_line_error(code, err, "b.png")
    assert not (tmp_path / "w.safetensors").exists()


def test_training_does_not_replace_an_existing_file_unless_asked(trained, tiny4, tmp_path, capsys):
    before = trained.read_bytes()
    (tmp_path / "images").mkdir()
    Image.fromarray(gradient_image(64, 64)).save(tmp_path / "images" / "a.png")
    args = ["train-latentpaint", tmp_path / "images", "--out", trained, "--model", tiny4, "--device", "cpu",
            "--steps", "1", "--size", "64"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "already exists; pass --overwrite")
    assert trained.read_bytes() == before
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(before)
    code, _, err = run_cli([*args[:3], copy, *args[4:], "--overwrite"], capsys)
    assert code == 0, err
    assert copy.read_bytes() != before


def test_the_metadata_says_what_ran_not_what_was_loaded(trained, tiny4):
    from inpaintkit import Inpainter

    with_weights = Inpainter.from_pretrained(tiny4, device="cpu", latentpaint_weights=trained)

    def variant(**options):
        image = with_weights(PIXELS, MASK, "x", method="latentpaint", steps=2, seed=1, **options)[0]
        recorded = image.info["inpaintkit"]
        return recorded["latentpaint_variant"], recorded["propagation"], "latentpaint_weights" in recorded

    assert variant() == ("fusion + propagation", 1.0, True)
    assert variant(propagation=0.0) == ("fusion (training-free)", 0.0, False)
    assert variant(fuse_blocks="none") == ("blend", 0.0, False)


def test_fuse_until_counts_steps_without_floating_point_excess():
    method = METHODS["latentpaint"]
    # 0.28 * 25 = 7.000000000000001 in floating point: 7 steps fuse, not 8
    assert method.fused_steps(InpaintSettings(method="latentpaint", fuse_until=0.28), 25) == 7
    assert method.fused_steps(InpaintSettings(method="latentpaint", fuse_until=0.3), 25) == 8  # 7.5 -> 8


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_propagation_0_or_its_default_need_no_weights(inpainter4, value):
    """Front ends that always send the default (the web UI's slider, a client copying /v1/models) must work."""
    image = inpainter4(PIXELS, MASK, "x", method="latentpaint", steps=2, seed=1, propagation=value)[0]
    assert image.info["inpaintkit"]["latentpaint_variant"] == "fusion (training-free)"
