"""Every setting that multiplies a job's work is bounded before any work starts, and a method's defaults adapt to
the settings the user gave instead of contradicting them (issue 13, items 1, 4 and 13)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from inpaintkit import Inpainter, InpaintSettings
from inpaintkit.errors import InputError
from inpaintkit.methods import METHODS, repaint
from inpaintkit.methods.base import MAX_DENOISER_CALLS
from inpaintkit.names import MAX_BATCH_IMAGES, MAX_TEXT_LENGTH

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli

WIDTH, HEIGHT = 64, 48
PIXELS = gradient_image(WIDTH, HEIGHT, seed=50)
MASK = box_mask(WIDTH, HEIGHT, (16, 8, 48, 40))


def count_unet_calls(inpainter, **options) -> tuple[int, dict]:
    """Run a job and count the UNet's forward calls; returns (calls, the output's metadata)."""
    calls = []
    handle = inpainter.components.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        image = inpainter(PIXELS, MASK, "x", seed=1, guidance=1.0, **options)[0]
    finally:
        handle.remove()
    return len(calls), image.info["inpaintkit"]


# -- the work a job declares is the work it does ------------------------------------------------------------


@pytest.mark.parametrize(
    "method, options",
    [
        ("native", {}),
        ("blend", {"strength": 0.5}),
        ("bld", {"reconstruct": "none"}),
        ("soft", {}),
        ("repaint", {"jump_length": 2, "jump_n_sample": 3}),
        ("tdpaint", {}),
    ],
)
def test_denoiser_calls_is_what_the_loop_runs(inpainter4, inpainter9, method, options):
    # One UNet call per step with DDIM and no guidance, so the count is exact; a budget built on a wrong count
    # would refuse cheap jobs or let expensive ones through.
    inpainter = inpainter9 if method == "native" else inpainter4
    settings = InpaintSettings(method=method, steps=9, scheduler="ddim", guidance=1.0, **options)
    calls, _ = count_unet_calls(inpainter, method=method, steps=9, scheduler="ddim", **options)
    assert METHODS[method].denoiser_calls(settings) == calls


# -- bounds ----------------------------------------------------------------------------------------------


def test_a_huge_jump_n_sample_is_refused_without_building_the_schedule(inpainter4, monkeypatch):
    def never(*_):
        raise AssertionError("the step list must not be built for a refused job")

    monkeypatch.setattr(repaint, "jump_schedule", never)
    with pytest.raises(InputError, match="--jump-n-sample must be from 1 to 100"):
        inpainter4(PIXELS, MASK, "x", method="repaint", jump_length=1, jump_n_sample=10**15)


def test_the_total_denoiser_calls_are_bounded(inpainter4):
    # 1000 steps with J = 10 and r = 100: 1000 + 99 * 10 * 99 = 99,010 calls per image.
    settings = InpaintSettings(method="repaint", steps=1000, scheduler="ddim", jump_n_sample=100)
    with pytest.raises(InputError, match=f"more than the limit of {MAX_DENOISER_CALLS:,}; lower --steps"):
        inpainter4.check(settings)
    # The defaults at the most steps a model has (1000 + 9 * 10 * 99 = 9,910 calls) stay allowed.
    inpainter4.check(InpaintSettings(method="repaint", steps=999, scheduler="ddim"))


def test_one_call_makes_at_most_one_batch_of_images(inpainter4):
    inpainter4.check(InpaintSettings(num_images=MAX_BATCH_IMAGES))
    with pytest.raises(InputError, match=f"at most {MAX_BATCH_IMAGES} images"):
        inpainter4.check(InpaintSettings(num_images=MAX_BATCH_IMAGES + 1))


def test_the_cli_batch_size_is_bounded(tmp_path, capsys):
    code, _, err = run_cli(
        ["run", "--image", "x.png", "--output", tmp_path / "o.png", "--batch-size", MAX_BATCH_IMAGES + 1], capsys
    )
    assert_one_line_error(code, err, f"must be at most {MAX_BATCH_IMAGES}")


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_text_settings_are_bounded(field):
    InpaintSettings(**{field: "a" * MAX_TEXT_LENGTH})
    with pytest.raises(InputError, match=f"the limit is {MAX_TEXT_LENGTH:,}"):
        InpaintSettings(**{field: "a" * (MAX_TEXT_LENGTH + 1)})


# -- defaults adapt, a user's value does not --------------------------------------------------------------


def test_repaint_with_few_steps_adapts_its_jump_length_and_says_so(inpainter4, capsys):
    calls, info = count_unet_calls(inpainter4, method="repaint", steps=4, scheduler="ddim")
    assert info["jump_length"] == 4
    assert info["adapted_defaults"] == {"jump_length": "10 -> 4: only 4 steps run"}
    # J = 4 over 4 steps leaves no room to jump back: a plain descent, as the schedule says.
    assert calls == repaint.jump_schedule_length(4, 4, 10) == 4


def test_a_jump_length_the_user_gave_is_not_adapted(inpainter4):
    with pytest.raises(InputError, match="--jump-length 10 is larger than the 4 steps that run"):
        inpainter4(PIXELS, MASK, "x", method="repaint", steps=4, jump_length=10)


def test_the_default_run_has_no_adapted_defaults(inpainter4):
    _, info = count_unet_calls(inpainter4, method="repaint", steps=12, scheduler="ddim", jump_n_sample=2)
    assert "adapted_defaults" not in info


@pytest.fixture(scope="module")
def euler_default_inpainter(tiny4, tmp_path_factory):
    """The tiny model with Euler (a sigma scheduler) as its own default, as many fine-tunes ship."""
    folder = tmp_path_factory.mktemp("models") / "tiny4-euler"
    shutil.copytree(tiny4, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["_class_name"] = "EulerDiscreteScheduler"
    config_path.write_text(json.dumps(config))
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
    index_path.write_text(json.dumps(index))
    return Inpainter.from_pretrained(folder, device="cpu")


def test_tdpaint_replaces_a_default_scheduler_it_cannot_use(euler_default_inpainter):
    _, info = count_unet_calls(euler_default_inpainter, method="tdpaint", steps=3)
    assert info["adapted_defaults"]["scheduler"].startswith("the model's EulerDiscreteScheduler -> ddim")


def test_tdpaint_refuses_a_sigma_scheduler_the_user_chose(euler_default_inpainter):
    with pytest.raises(InputError, match="variance-preserving or flow-matching scheduler"):
        euler_default_inpainter(PIXELS, MASK, "x", method="tdpaint", steps=3, scheduler="euler")


def test_the_adapted_job_matches_the_same_job_with_the_values_given(euler_default_inpainter):
    # Adapting a default means running exactly what the user would have got by giving the adapted value.
    adapted = euler_default_inpainter(PIXELS, MASK, "x", method="tdpaint", steps=3, seed=4)[0]
    given = euler_default_inpainter(PIXELS, MASK, "x", method="tdpaint", steps=3, seed=4, scheduler="ddim")[0]
    assert np.array_equal(np.asarray(adapted), np.asarray(given))
