"""native and blend on SDXL reproduce diffusers' StableDiffusionXLInpaintPipeline (paste-back off, fp32).

Same tiny SDXL folder, seed, scheduler, steps, guidance and strength. Tolerance as for SD (test_equivalence.py):
mean |difference| <= 0.5/255 and max <= 8/255; both run the same float32 CPU arithmetic, and the only
differences allowed for are kernel choices where inpaintkit batches work differently (one text-encoder call
per prompt, one VAE encode per job).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLInpaintPipeline
from PIL import Image

from inpaintkit import Inpainter

from .conftest import box_mask, gradient_image
from .test_equivalence import REFERENCE_SCHEDULERS, assert_close_to_reference

PROMPT, NEGATIVE = "a red bicycle leaning on a wall", "blurry"


def sdxl_reference(folder, image, mask, *, scheduler, seed, steps, strength, prompt, negative, guidance):
    pipeline = StableDiffusionXLInpaintPipeline.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    if REFERENCE_SCHEDULERS[scheduler] is not None:
        pipeline.scheduler = REFERENCE_SCHEDULERS[scheduler](pipeline.scheduler.config)
    height, width = image.shape[:2]
    result = pipeline(
        prompt=prompt,
        negative_prompt=negative or None,  # our empty negative prompt is diffusers' "none given"
        image=Image.fromarray(image),
        mask_image=Image.fromarray(mask),
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=guidance,
        strength=strength,
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    return np.asarray(result.images[0])


CASES = {
    # name: (model fixture, method, scheduler, strength, prompt, negative prompt, guidance, (width, height))
    "native-euler": ("tiny_sdxl9", "native", "default", 1.0, PROMPT, NEGATIVE, 7.5, (64, 48)),
    "native-ddim-strength": ("tiny_sdxl9", "native", "ddim", 0.6, PROMPT, NEGATIVE, 7.5, (64, 48)),
    "native-empty-prompt": ("tiny_sdxl9", "native", "euler-a", 1.0, "", "", 5.0, (64, 48)),
    "native-unipc-guidance-1": ("tiny_sdxl9", "native", "unipc", 0.9, PROMPT, NEGATIVE, 1.0, (64, 48)),
    "blend-euler-no-negative": ("tiny_sdxl4", "blend", "default", 1.0, PROMPT, "", 7.5, (64, 48)),
    "blend-dpm-strength": ("tiny_sdxl4", "blend", "dpm++2m", 0.7, PROMPT, NEGATIVE, 7.5, (64, 48)),
    "blend-ddim-non-square": ("tiny_sdxl4", "blend", "ddim", 1.0, PROMPT, NEGATIVE, 7.5, (96, 40)),
    "blend-lms": ("tiny_sdxl4", "blend", "lms", 0.9, PROMPT, NEGATIVE, 7.5, (64, 48)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_diffusers_sdxl(request, case):
    model_fixture, method, scheduler, strength, prompt, negative, guidance, (width, height) = CASES[case]
    folder = request.getfixturevalue(model_fixture)
    image = gradient_image(width, height, seed=3)
    mask = box_mask(width, height, (13, 9, 45, 37))
    seed, steps = 1234, 8
    ours = Inpainter.from_pretrained(folder, device="cpu")(
        image,
        mask,
        prompt,
        negative_prompt=negative,
        method=method,
        scheduler=scheduler,
        steps=steps,
        strength=strength,
        guidance=guidance,
        seed=seed,
        paste_back=False,
    )
    reference = sdxl_reference(
        folder, image, mask, scheduler=scheduler, seed=seed, steps=steps, strength=strength, prompt=prompt,
        negative=negative, guidance=guidance,
    )  # fmt: skip
    assert_close_to_reference(np.asarray(ours[0]), reference)


def test_auto_is_native_on_sdxl_inpainting_and_blend_on_sdxl_base(sdxl9, sdxl4):
    image, mask = gradient_image(64, 48), box_mask(64, 48, (8, 8, 40, 40))
    assert sdxl9(image, mask, "x", steps=2, seed=1)[0].info["inpaintkit"]["method"] == "native"
    assert sdxl4(image, mask, "x", steps=2, seed=1)[0].info["inpaintkit"]["method"] == "blend"
    assert (sdxl9.capabilities.family, sdxl9.capabilities.native_size) == ("sdxl", 64)


@pytest.mark.parametrize("negative", ["blurry", ""])
def test_the_conditioning_equals_diffusers_encode_prompt_and_time_ids(tiny_sdxl9, sdxl9, negative):
    """Exact, where the pixel tolerance could hide a small error: an untrained UNet barely reacts to the size it
    is told (swapping a non-square image's height and width in the time ids moves pixels less than a level)."""
    from inpaintkit.families import Conditioning

    pipeline = StableDiffusionXLInpaintPipeline.from_pretrained(tiny_sdxl9)
    context, negative_context, pooled, negative_pooled = pipeline.encode_prompt(
        PROMPT,
        device="cpu",
        num_images_per_prompt=2,
        do_classifier_free_guidance=True,
        negative_prompt=negative or None,
    )
    height, width = 40, 96
    time_ids, negative_time_ids = pipeline._get_add_time_ids(
        (height, width), (0, 0), (height, width), 6.0, 2.5, (height, width), (0, 0), (height, width),
        dtype=torch.float32, text_encoder_projection_dim=pipeline.text_encoder_2.config.projection_dim,
    )  # fmt: skip
    family, components = sdxl9.components.family, sdxl9.components
    ours = Conditioning.cat(
        [
            family.encode_text(components, text, flag, 2, (height, width))
            for text, flag in ((negative, True), (PROMPT, False))
        ]
    )
    assert torch.equal(ours.context, torch.cat([negative_context, context]))
    assert torch.equal(ours.pooled, torch.cat([negative_pooled, pooled]))
    assert torch.equal(ours.extras["time_ids"], torch.cat([negative_time_ids.repeat(2, 1), time_ids.repeat(2, 1)]))
