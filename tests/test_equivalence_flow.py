"""The flow-matching families reproduce their diffusers pipelines (paste-back off, fp32): `flux-fill` (native)
FluxFillPipeline, `flux` (blend) FluxInpaintPipeline, `sd3` StableDiffusion3InpaintPipeline (blend on 16 channels,
native on 33).

Same tiny folder, seed, steps, guidance, strength and size. One deliberate difference: diffusers' SD 3 inpainting
decodes without the VAE's shift factor (diffusers issue #13611), a colour cast every other SD 3 pipeline avoids; we
decode as the others do, so the SD 3 reference is the pipeline's latents decoded with the shift.

Tolerance as for SD (test_equivalence.py): mean |difference| <= 0.5/255 and max <= 8/255. Without true CFG our
arithmetic is diffusers' own, in the same order; with Flux's true CFG we make one batched call where diffusers makes
two, whose float32 kernels may round differently.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FluxFillPipeline, FluxInpaintPipeline, StableDiffusion3InpaintPipeline
from PIL import Image

from inpaintkit import Inpainter

from .conftest import box_mask, gradient_image
from .test_equivalence import assert_close_to_reference

PROMPT, NEGATIVE = "a red bicycle leaning on a wall", "blurry"
PIPELINES = {"flux-fill": FluxFillPipeline, "flux": FluxInpaintPipeline, "sd3": StableDiffusion3InpaintPipeline}


def reference(family, folder, image, mask, *, seed, steps, strength, prompt, negative, guidance, true_cfg):
    pipeline = PIPELINES[family].from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    height, width = image.shape[:2]
    kwargs = dict(
        prompt=prompt,
        image=Image.fromarray(image),
        mask_image=Image.fromarray(mask),
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=guidance,
        strength=strength,
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    if family == "sd3":
        kwargs["negative_prompt"] = negative or None  # our empty negative prompt is diffusers' "none given"
    if family == "flux" and true_cfg is not None:
        kwargs.update(negative_prompt=negative, true_cfg_scale=true_cfg)
    if family != "sd3":
        return np.asarray(pipeline(**kwargs).images[0])
    # diffusers' SD 3 inpainting decodes without the VAE's shift (diffusers issue #13611; every other SD 3 pipeline
    # adds it), so its latents are compared, decoded as StableDiffusion3Pipeline decodes them.
    latents = pipeline(**kwargs, output_type="latent").images
    with torch.no_grad():
        decoded = pipeline.vae.decode(latents / pipeline.vae.config.scaling_factor + pipeline.vae.config.shift_factor)
    return np.asarray(pipeline.image_processor.postprocess(decoded.sample, output_type="pil")[0])


CASES = {
    # name: (family, model fixture, method, strength, prompt, negative, guidance, true CFG, (width, height))
    "fill-default": ("flux-fill", "tiny_flux_fill", "native", 1.0, PROMPT, "", 30.0, None, (64, 48)),
    "fill-strength-non-square": ("flux-fill", "tiny_flux_fill", "native", 0.7, PROMPT, "", 30.0, None, (96, 32)),
    "fill-guidance-empty-prompt": ("flux-fill", "tiny_flux_fill", "native", 1.0, "", "", 3.5, None, (48, 64)),
    "flux-blend": ("flux", "tiny_flux", "blend", 1.0, PROMPT, "", 3.5, None, (64, 48)),
    "flux-blend-strength-non-square": ("flux", "tiny_flux", "blend", 0.6, PROMPT, "", 7.0, None, (80, 48)),
    "flux-true-cfg": ("flux", "tiny_flux", "blend", 0.9, PROMPT, NEGATIVE, 3.5, 4.0, (64, 48)),
    "sd3-blend": ("sd3", "tiny_sd3", "blend", 1.0, PROMPT, NEGATIVE, 7.0, None, (64, 48)),
    "sd3-blend-strength-no-negative": ("sd3", "tiny_sd3", "blend", 0.7, PROMPT, "", 5.0, None, (96, 32)),
    "sd3-no-cfg": ("sd3", "tiny_sd3", "blend", 1.0, PROMPT, "", 1.0, None, (64, 48)),
    "sd3-native": ("sd3", "tiny_sd3_inpainting", "native", 1.0, PROMPT, NEGATIVE, 7.0, None, (64, 48)),
    "sd3-native-strength": ("sd3", "tiny_sd3_inpainting", "native", 0.8, PROMPT, "", 4.0, None, (48, 64)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_diffusers_flow_pipeline(request, case):
    family, model_fixture, method, strength, prompt, negative, guidance, true_cfg, (width, height) = CASES[case]
    folder = request.getfixturevalue(model_fixture)
    image = gradient_image(width, height, seed=3)
    mask = box_mask(width, height, (13, 9, 45, 27))
    seed, steps = 1234, 6
    inpainter = Inpainter.from_pretrained(folder, device="cpu")
    assert inpainter.capabilities.family == family
    ours = inpainter(
        image, mask, prompt, negative_prompt=negative, method=method, steps=steps, strength=strength,
        guidance=guidance, true_cfg=true_cfg, seed=seed, paste_back=False,
    )  # fmt: skip
    expected = reference(
        family, folder, image, mask, seed=seed, steps=steps, strength=strength, prompt=prompt, negative=negative,
        guidance=guidance, true_cfg=true_cfg,
    )  # fmt: skip
    assert_close_to_reference(np.asarray(ours[0]), expected)
    assert not np.array_equal(np.asarray(ours[0]), image), "the job must have changed the image"


@pytest.mark.parametrize("model_fixture", ["tiny9", "tiny_flux_fill"])
def test_bf16_matches_diffusers_bit_for_bit(request, model_fixture):
    """bf16 too: our input image has the memory layout of diffusers' image processor (NCHW over NHWC memory), so the
    VAE takes the same convolution path; a contiguous NCHW image rounded differently in bf16 (up to 10/255)."""
    from diffusers import StableDiffusionInpaintPipeline

    folder = request.getfixturevalue(model_fixture)
    image, mask = gradient_image(64, 48, seed=3), box_mask(64, 48, (13, 9, 45, 27))
    pipeline_class, guidance = (
        (FluxFillPipeline, 30.0) if model_fixture == "tiny_flux_fill" else (StableDiffusionInpaintPipeline, 7.5)
    )
    ours = Inpainter.from_pretrained(folder, device="cpu", dtype="bf16")(
        image, mask, PROMPT, steps=4, guidance=guidance, seed=1, paste_back=False
    )
    pipeline = pipeline_class.from_pretrained(folder, torch_dtype=torch.bfloat16)
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(
        prompt=PROMPT, image=Image.fromarray(image), mask_image=Image.fromarray(mask), height=48, width=64,
        num_inference_steps=4, guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]  # fmt: skip
    assert np.array_equal(np.asarray(ours[0]), np.asarray(expected))
