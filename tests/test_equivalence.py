"""native and blend reproduce diffusers' StableDiffusionInpaintPipeline (paste-back off).

Same tiny model folder, seed, scheduler, steps, guidance and strength on a non-square image.
Tolerance: mean |difference| <= 0.5/255 and max <= 8/255 of the 8-bit output. Both run the same
float32 CPU arithmetic; the only differences allowed for are kernel choices when inpaintkit batches
work differently (one VAE encode per job, several images per UNet call), worth at most a level or two.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from inpaintkit import Inpainter

from .conftest import box_mask, gradient_image

WIDTH, HEIGHT = 64, 48  # non-square, multiples of 8
PROMPT, NEGATIVE = "a red bicycle leaning on a wall", "blurry"

# Reference schedulers built here, independently of inpaintkit's name table.
REFERENCE_SCHEDULERS = {
    "default": None,
    "ddim": lambda config: DDIMScheduler.from_config(config),
    "euler": lambda config: EulerDiscreteScheduler.from_config(config),
    "euler-a": lambda config: EulerAncestralDiscreteScheduler.from_config(config),
    "dpm++2m": lambda config: DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2
    ),
    "unipc": lambda config: UniPCMultistepScheduler.from_config(config),
    "lms": lambda config: LMSDiscreteScheduler.from_config(config),
    "pndm": lambda config: PNDMScheduler.from_config(config),
    "dpm++2m-karras": lambda config: DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
    ),
    "euler-karras": lambda config: EulerDiscreteScheduler.from_config(config, use_karras_sigmas=True),
}


def diffusers_reference(folder, image, mask, scheduler, seed, steps, strength, guidance=7.5):
    pipeline = StableDiffusionInpaintPipeline.from_pretrained(
        folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipeline.set_progress_bar_config(disable=True)
    if REFERENCE_SCHEDULERS[scheduler] is not None:
        pipeline.scheduler = REFERENCE_SCHEDULERS[scheduler](pipeline.scheduler.config)
    result = pipeline(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        image=Image.fromarray(image),
        mask_image=Image.fromarray(mask),
        height=HEIGHT,
        width=WIDTH,
        num_inference_steps=steps,
        guidance_scale=guidance,
        strength=strength,
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    return np.asarray(result.images[0])


def assert_close_to_reference(ours: np.ndarray, reference: np.ndarray) -> None:
    difference = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
    assert ours.shape == reference.shape
    assert difference.mean() <= 0.5, f"mean |diff| {difference.mean():.3f} levels"
    assert difference.max() <= 8, f"max |diff| {difference.max()} levels"


CASES = [
    # (model fixture, method, scheduler, strength)
    ("tiny9", "native", "default", 1.0),
    ("tiny9", "native", "ddim", 0.6),
    ("tiny9", "native", "euler-a", 1.0),
    ("tiny9", "native", "unipc", 0.9),
    ("tiny4", "blend", "pndm", 1.0),
    ("tiny4", "blend", "ddim", 1.0),
    ("tiny4", "blend", "dpm++2m", 0.7),
    ("tiny4", "blend", "euler-a", 0.75),
    ("tiny4", "blend", "euler", 1.0),
    ("tiny4", "blend", "lms", 0.9),
    ("tiny9", "native", "dpm++2m-karras", 1.0),
    ("tiny4", "blend", "euler-karras", 0.8),
    ("tiny4_vpred", "blend", "ddim", 0.8),
]


@pytest.mark.parametrize("model_fixture, method, scheduler, strength", CASES)
def test_matches_diffusers(request, model_fixture, method, scheduler, strength):
    folder = request.getfixturevalue(model_fixture)
    image = gradient_image(WIDTH, HEIGHT, seed=3)
    mask = box_mask(WIDTH, HEIGHT, (13, 9, 45, 37))
    seed, steps = 1234, 10

    inpainter = Inpainter.from_pretrained(folder, device="cpu")
    ours = inpainter(
        image,
        mask,
        PROMPT,
        negative_prompt=NEGATIVE,
        method=method,
        scheduler=scheduler,
        steps=steps,
        strength=strength,
        seed=seed,
        paste_back=False,
    )
    reference = diffusers_reference(folder, image, mask, scheduler, seed, steps, strength)
    assert_close_to_reference(np.asarray(ours[0]), reference)


def test_each_image_of_a_batch_matches_diffusers_with_its_own_seed(tiny4):
    """Image k of a job uses seed + k: it equals diffusers' single image for that seed."""
    image = gradient_image(WIDTH, HEIGHT, seed=4)
    mask = box_mask(WIDTH, HEIGHT, (0, 0, 30, 48))
    inpainter = Inpainter.from_pretrained(tiny4, device="cpu")
    ours = inpainter(
        image,
        mask,
        PROMPT,
        negative_prompt=NEGATIVE,
        scheduler="euler-a",
        steps=6,
        seed=77,
        num_images=2,
        paste_back=False,
    )
    assert [each.info["inpaintkit"]["seed"] for each in ours] == [77, 78]
    for output, seed in zip(ours, (77, 78)):
        reference = diffusers_reference(tiny4, image, mask, "euler-a", seed, 6, 1.0)
        assert_close_to_reference(np.asarray(output), reference)


def test_guidance_one_runs_without_the_unconditional_pass(tiny9):
    """guidance <= 1 disables classifier-free guidance in diffusers; it must here too."""
    image = gradient_image(WIDTH, HEIGHT, seed=5)
    mask = box_mask(WIDTH, HEIGHT, (20, 10, 60, 40))
    ours = Inpainter.from_pretrained(tiny9, device="cpu")(
        image, mask, PROMPT, negative_prompt=NEGATIVE, guidance=1.0, steps=5, seed=9, paste_back=False
    )
    reference = diffusers_reference(tiny9, image, mask, "default", 9, 5, 1.0, guidance=1.0)
    assert_close_to_reference(np.asarray(ours[0]), reference)


@pytest.mark.parametrize("guidance, batch", [(1.0, 1), (7.5, 2)])
def test_guidance_above_one_batches_the_unconditional_pass(inpainter9, guidance, batch):
    sizes = []
    handle = inpainter9.components.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        inpainter9(
            gradient_image(WIDTH, HEIGHT),
            box_mask(WIDTH, HEIGHT, (8, 8, 40, 40)),
            PROMPT,
            guidance=guidance,
            steps=3,
            seed=1,
        )
    finally:
        handle.remove()
    assert set(sizes) == {batch}
