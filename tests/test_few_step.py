"""Few-step sampling (issue 19): a guidance-distilled (LCM-style) UNet with the LCM and TCD schedulers reproduces
diffusers' StableDiffusionInpaintPipeline; the guidance scale reaches that UNet as an embedding, with one call per
step and no classifier-free guidance batch; `spacing="trailing"` starts at the last training timestep as diffusers'
does; every method runs with the LCM scheduler at 4 steps or refuses in one sentence; the CLI takes the options.

Pixel equivalence uses tests/test_equivalence.py's tolerance (mean |difference| <= 0.5/255, max <= 8/255): the same
float32 CPU arithmetic, with room only for the kernel choices of batching work differently.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, LCMScheduler, StableDiffusionInpaintPipeline, TCDScheduler
from PIL import Image

from inpaintkit import Inpainter
from inpaintkit.errors import InputError

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli
from .test_equivalence import assert_close_to_reference

WIDTH, HEIGHT = 64, 48
PROMPT, NEGATIVE = "a red bicycle leaning on a wall", "blurry"
IMAGE = gradient_image(WIDTH, HEIGHT, seed=3)
MASK = box_mask(WIDTH, HEIGHT, (13, 9, 45, 37))
STEPS, GUIDANCE, SEED = 4, 8.0, 1234
TRAINING_TIMESTEPS = 1000  # the tiny models' scheduler config (SD 1.x's)


@pytest.fixture(scope="module")
def lcm4(tmp_path_factory):
    """A 4-channel LCM-style tiny model: its UNet takes the guidance scale as a 32-wide embedding."""
    from inpaintkit.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("lcm") / "lcm4", unet_in_channels=4, time_cond_proj_dim=32)


@pytest.fixture(scope="module")
def lcm9(tmp_path_factory):
    from inpaintkit.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("lcm") / "lcm9", unet_in_channels=9, time_cond_proj_dim=32)


@pytest.fixture(scope="module")
def lcm_inpainter4(lcm4):
    return Inpainter.from_pretrained(lcm4, device="cpu")


def reference(folder, scheduler, steps=STEPS, guidance=GUIDANCE, seed=SEED) -> np.ndarray:
    """diffusers' own inpainting pipeline over the same folder, its scheduler built here from the model's config."""
    pipeline = StableDiffusionInpaintPipeline.from_pretrained(
        folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = scheduler(pipeline.scheduler.config)
    result = pipeline(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        image=Image.fromarray(IMAGE),
        mask_image=Image.fromarray(MASK),
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    return np.asarray(result.images[0])


def ours(folder_or_inpainter, method, scheduler, **options) -> np.ndarray:
    inpainter = folder_or_inpainter
    if not isinstance(inpainter, Inpainter):
        inpainter = Inpainter.from_pretrained(folder_or_inpainter, device="cpu")
    job = {"steps": STEPS, "guidance": GUIDANCE, "seed": SEED, "paste_back": False, **options}
    # An LCM UNet makes no unconditional pass: a negative prompt is refused there (diffusers drops it unread).
    negative = "" if inpainter.capabilities.guidance_embedding_dim else NEGATIVE
    images = inpainter(IMAGE, MASK, PROMPT, negative_prompt=negative, method=method, scheduler=scheduler, **job)
    return np.asarray(images[0])


class UNetCalls:
    """Every UNet call's batch size, timestep and timestep_cond, seen by a forward pre-hook."""

    def __init__(self, unet):
        self.unet, self.batches, self.timesteps, self.conditions = unet, [], [], []

    def __enter__(self):
        def record(module, args, kwargs):
            sample = args[0] if args else kwargs["sample"]
            timestep = args[1] if len(args) > 1 else kwargs["timestep"]
            self.batches.append(sample.shape[0])
            self.timesteps.append(float(torch.as_tensor(timestep).flatten()[0]))
            self.conditions.append(kwargs.get("timestep_cond"))

        self.handle = self.unet.register_forward_pre_hook(record, with_kwargs=True)
        return self

    def __exit__(self, *exc_info):
        self.handle.remove()


# -- equivalence with diffusers ----------------------------------------------------------------------------------


def test_lcm_blend_matches_diffusers(lcm4):
    assert_close_to_reference(ours(lcm4, "blend", "lcm"), reference(lcm4, LCMScheduler.from_config))


def test_lcm_native_matches_diffusers(lcm9):
    assert_close_to_reference(ours(lcm9, "native", "lcm"), reference(lcm9, LCMScheduler.from_config))


def test_tcd_blend_matches_diffusers(tiny4):
    """An ordinary (CFG) UNet with TCD's sampler; diffusers' inpainting pipeline passes eta 0 (TCD's gamma)."""
    assert_close_to_reference(ours(tiny4, "blend", "tcd"), reference(tiny4, TCDScheduler.from_config))


def test_tcd_with_the_lcm_unet_matches_diffusers(lcm_inpainter4, lcm4):
    assert_close_to_reference(ours(lcm_inpainter4, "blend", "tcd"), reference(lcm4, TCDScheduler.from_config))


def test_trailing_spacing_matches_diffusers_on_euler(tiny4):
    trailing = lambda config: EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")  # noqa: E731
    assert_close_to_reference(ours(tiny4, "blend", "euler", spacing="trailing"), reference(tiny4, trailing))


# -- the guidance embedding --------------------------------------------------------------------------------------


def test_lcm_unet_makes_one_call_per_step_on_num_images(lcm_inpainter4):
    """No CFG batch: a guidance-distilled UNet is called once per step on the job's images only, at guidance 8."""
    with UNetCalls(lcm_inpainter4.components.unet) as calls:
        ours(lcm_inpainter4, "blend", "lcm", num_images=2)
    assert calls.batches == [2] * STEPS


def test_the_guidance_scale_reaches_the_unet_as_diffusers_embeds_it(lcm_inpainter4):
    pipeline = StableDiffusionInpaintPipeline  # its get_guidance_scale_embedding: the reference for the embedding
    embed = pipeline.get_guidance_scale_embedding
    with UNetCalls(lcm_inpainter4.components.unet) as calls:
        ours(lcm_inpainter4, "blend", "lcm", guidance=3.0)
    expected = embed(None, torch.tensor([3.0 - 1.0]), embedding_dim=32)
    assert len(calls.conditions) == STEPS
    for condition in calls.conditions:
        assert condition is not None and condition.shape == (1, 32)
        assert torch.equal(condition.float().cpu(), expected)


def test_changing_the_guidance_changes_an_lcm_output(lcm_inpainter4):
    # With no CFG batch the scale acts only through the embedding: if it were dropped, both images would be equal.
    low, high = ours(lcm_inpainter4, "blend", "lcm", guidance=1.0), ours(lcm_inpainter4, "blend", "lcm", guidance=8.0)
    assert not np.array_equal(low, high)


def test_an_ordinary_unet_gets_no_guidance_embedding(inpainter4):
    with UNetCalls(inpainter4.components.unet) as calls:
        ours(inpainter4, "blend", "lcm", steps=2)
    assert calls.batches == [2, 2] and all(condition is None for condition in calls.conditions)  # CFG: 2 per image


# -- timestep spacing --------------------------------------------------------------------------------------------


def test_trailing_spacing_starts_at_the_last_training_timestep(inpainter4):
    runs = {}
    for spacing in ("default", "trailing"):
        with UNetCalls(inpainter4.components.unet) as calls:
            ours(inpainter4, "blend", "euler", spacing=spacing)
        runs[spacing] = calls.timesteps  # guidance 8: one CFG-batched call per step
    # Trailing (Lin et al., arXiv 2305.08891): the noisiest step is the last training timestep, 999, and the rest
    # count down from it in equal strides; SD's default (leading, offset 1) starts lower, at 751.
    assert runs["trailing"][0] == TRAINING_TIMESTEPS - 1
    assert runs["trailing"] != runs["default"] and runs["default"][0] < TRAINING_TIMESTEPS - 1
    config = inpainter4.components.scheduler_config
    expected = EulerDiscreteScheduler.from_config(config, timestep_spacing="trailing")
    expected.set_timesteps(STEPS)
    assert runs["trailing"] == [float(t) for t in expected.timesteps]


@pytest.mark.parametrize("scheduler", ["lcm", "tcd"])
def test_a_spacing_the_few_step_schedulers_would_ignore_is_refused(lcm_inpainter4, scheduler):
    """diffusers' LCM and TCD schedulers pick their steps from the distillation schedule and ignore timestep_spacing:
    a spacing given with them would be silently dropped, so it is one sentence instead."""
    with pytest.raises(InputError, match="would be ignored") as refused:
        ours(lcm_inpainter4, "blend", scheduler, spacing="trailing")
    assert "\n" not in str(refused.value)


# -- every method with the LCM scheduler -------------------------------------------------------------------------

RUNS_WITH_LCM = {"blend": True, "soft": True, "tdpaint": True, "bld": True, "latentpaint": True, "repaint": False}


@pytest.mark.parametrize("method", sorted(RUNS_WITH_LCM))
def test_every_method_runs_with_lcm_at_4_steps_or_refuses_in_one_sentence(lcm_inpainter4, method):
    try:
        images = lcm_inpainter4(IMAGE, MASK, PROMPT, method=method, scheduler="lcm", steps=STEPS, seed=1)
    except InputError as refused:
        message = str(refused)
        assert not RUNS_WITH_LCM[method], f"{method} refused: {message}"
        assert "\n" not in message and "lcm" in message, message
        return
    assert RUNS_WITH_LCM[method], f"{method} ran with lcm; update RUNS_WITH_LCM if that is now intended"
    assert len(images) == 1 and images[0].size == (WIDTH, HEIGHT)
    assert images[0].info["inpaintkit"]["scheduler"] == "lcm"
    inside = np.asarray(images[0])[MASK > 0].astype(np.int16)
    assert inside.std() > 1.0  # the hole was painted, not left flat or blank (NaN latents decode to one colour)


def test_native_runs_with_lcm_on_the_9_channel_lcm_unet(lcm9):
    inpainter = Inpainter.from_pretrained(lcm9, device="cpu")
    with UNetCalls(inpainter.components.unet) as calls:
        images = inpainter(IMAGE, MASK, PROMPT, method="native", scheduler="lcm", steps=STEPS, seed=1)
    assert len(images) == 1 and calls.batches == [1] * STEPS


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
        "--steps", str(STEPS), "--seed", "1", "--method", "blend", "--device", "cpu", "--dtype", "fp32", "--quiet",
        *extra,
    ]  # fmt: skip


def test_cli_accepts_lcm_and_a_trailing_spacing_with_euler(lcm4, cli_files, capsys):
    output = cli_files / "lcm.png"
    code, out, err = run_cli(cli_args(lcm4, cli_files, output, "--scheduler", "lcm", "--guidance", "2"), capsys)
    assert code == 0, err
    with Image.open(output) as image:
        recorded = json.loads(image.text["inpaintkit"])
    assert (recorded["scheduler"], recorded["guidance"]) == ("lcm", 2.0)
    code, out, err = run_cli(
        cli_args(lcm4, cli_files, output, "--scheduler", "euler", "--spacing", "trailing", "--overwrite"), capsys
    )
    assert code == 0, err
    with Image.open(output) as image:
        assert json.loads(image.text["inpaintkit"])["spacing"] == "trailing"


def test_cli_rejects_an_unknown_spacing_in_one_line(cli_files, capsys):
    code, _, err = run_cli(cli_args("unused-model", cli_files, cli_files / "x.png", "--spacing", "sideways"), capsys)
    assert_one_line_error(code, err, "sideways")


def test_an_unknown_spacing_is_one_sentence_in_the_api(inpainter4):
    with pytest.raises(InputError, match="Unknown timestep spacing 'sideways'"):
        ours(inpainter4, "blend", "euler", spacing="sideways")


def test_a_negative_prompt_on_an_lcm_unet_is_refused_not_dropped(lcm_inpainter4):
    """diffusers reads no negative prompt for a guidance-distilled UNet; giving one must not look as if it acted."""
    with pytest.raises(InputError, match="a negative prompt cannot act") as refused:
        lcm_inpainter4(IMAGE, MASK, PROMPT, negative_prompt="blurry", scheduler="lcm", steps=2)
    assert "\n" not in str(refused.value)


def test_a_preset_fills_only_what_was_not_given_even_a_typed_default():
    from inpaintkit import cli

    arguments = cli.build_parser().parse_args(
        ["run", "--image", "x.png", "--output", "o.png", "--preset", "turbo", "--steps", "50"]
    )
    settings = cli.settings_from_arguments(arguments)
    # --steps 50 was typed (it is also the default): it wins; the rest comes from the preset
    assert (settings.steps, settings.guidance, settings.scheduler, settings.spacing) == (50, 0.0, "euler-a", "trailing")
    plain = cli.settings_from_arguments(cli.build_parser().parse_args(["run", "--image", "x", "--output", "o.png"]))
    # guidance None: the model family's default (7.5 for SD), filled in when the job runs
    assert (plain.steps, plain.guidance, plain.scheduler, plain.spacing) == (50, None, "default", "default")


def test_spacing_with_karras_dpm_is_refused_as_ignored(inpainter4):
    with pytest.raises(InputError, match="would be ignored"):
        ours(inpainter4, "blend", "dpm++2m-karras", spacing="trailing")
