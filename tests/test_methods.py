"""Each zero-shot method's defining property, on the tiny offline models."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from inpaintkit.methods import bld as bld_module
from inpaintkit.methods.bld import shrinking_masks
from inpaintkit.methods.repaint import jump_schedule

from .conftest import box_mask, gradient_image

WIDTH, HEIGHT = 64, 48
PIXELS = gradient_image(WIDTH, HEIGHT, seed=40)
MASK = box_mask(WIDTH, HEIGHT, (16, 8, 48, 40))


@pytest.fixture(params=["inpainter4", "sdxl4", "flux", "sd3"])
def four(request):
    """An ordinary (not inpainting) model of each family, flow-matching ones included: the methods' properties must
    hold on every family."""
    return request.getfixturevalue(request.param)


def redo_scheduler(inpainter) -> str:
    """The scheduler repaint and tdpaint ask for by name: DDIM, or a flow model's own Euler."""
    return "default" if inpainter.capabilities.prediction_type == "flow" else "ddim"


@pytest.fixture(params=["inpainter9", "sdxl9"])
def nine(request):
    """A 9-channel (inpainting) model of each family."""
    return request.getfixturevalue(request.param)


def inpaint(inpainter, mask=MASK, **options):
    options = {"steps": 8, "seed": 3, **options}
    return np.asarray(inpainter(PIXELS, mask, "a teapot", **options)[0]).astype(np.int32)


@contextmanager
def unet_inputs(inpainter):
    """Record the latent input of every denoiser call, in the loop's spatial layout (a Flux family packs it into
    tokens inside its own call)."""
    seen, family = [], inpainter.components.family
    original = family.denoise

    def recording(components, model_input, t, conditioning):
        seen.append(model_input.detach().clone())
        return original(components, model_input, t, conditioning)

    family.denoise = recording  # the family object is shared: removed again below, however the job ends
    try:
        yield seen
    finally:
        del family.denoise


# -- bld --------------------------------------------------------------------------------------


def test_bld_pixel_reconstruction_keeps_the_background_exactly(four):
    output = inpaint(four, method="bld", reconstruct="pixel", paste_back=False)
    assert np.array_equal(output[MASK == 0], PIXELS[MASK == 0])
    assert not np.array_equal(output[MASK > 0], PIXELS[MASK > 0])


def test_bld_poisson_reconstruction_keeps_the_background_exactly(four):
    poisson = inpaint(four, method="bld", reconstruct="poisson", paste_back=False)
    pixel = inpaint(four, method="bld", reconstruct="pixel", paste_back=False)
    assert np.array_equal(poisson[MASK == 0], PIXELS[MASK == 0])
    assert not np.array_equal(poisson[MASK > 0], pixel[MASK > 0])  # the region was re-blended, not copied


def test_bld_skips_the_first_quarter_of_the_steps(four):
    with unet_inputs(four) as seen:
        inpaint(four, method="bld", reconstruct="none", steps=20, guidance=1.0, scheduler=redo_scheduler(four))
    assert len(seen) == 20 - int(20 * 0.25)  # DDIM or flow Euler: one denoiser call per step


def test_bld_progressive_masks_shrink_to_the_exact_mask(inpainter4, monkeypatch):
    used = []
    original = bld_module.mask_for_step

    def spy(masks, i, count):
        used.append(original(masks, i, count))
        return used[-1]

    monkeypatch.setattr(bld_module, "mask_for_step", spy)
    with unet_inputs(inpainter4) as seen:
        inpaint(inpainter4, method="bld", reconstruct="none", mask_dilation_iterations=2, steps=12)
    first, last = used[0] > 0.5, used[-1] > 0.5
    assert torch.all(first >= last) and first.sum() > last.sum()  # the first strictly contains the last
    exact = torch.nn.functional.interpolate(
        torch.from_numpy((MASK > 127).astype(np.float32))[None, None], size=seen[0].shape[-2:]
    )
    assert torch.equal(last[:1].float(), exact)  # and the last is the exact mask


def test_shrinking_masks_are_nested_square_dilations():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 7, 7] = 1
    masks = shrinking_masks(mask, 3)
    assert [int(m.sum()) for m in masks] == [49, 25, 9, 1]  # 7x7, 5x5, 3x3 squares, then the point


def test_bld_optimize_improves_the_background_and_never_touches_the_model(inpainter4):
    before = {name: tensor.clone() for name, tensor in inpainter4.components.vae.state_dict().items()}
    optimized = inpaint(inpainter4, method="bld", reconstruct="optimize", paste_back=False)
    plain = inpaint(inpainter4, method="bld", reconstruct="none", paste_back=False)
    after = inpainter4.components.vae.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    background = MASK == 0

    def background_error(output):
        return float(((output[background] - PIXELS[background]) ** 2).mean())

    assert background_error(optimized) < background_error(plain)


def test_bld_works_with_a_nine_channel_unet(nine):
    output = inpaint(nine, method="bld", reconstruct="pixel", paste_back=False)
    assert np.array_equal(output[MASK == 0], PIXELS[MASK == 0])  # bld's own reconstruction, not paste-back
    assert not np.array_equal(output[MASK > 0], PIXELS[MASK > 0])


# -- soft -------------------------------------------------------------------------------------


def constant_mask(value: float) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.float32)
    mask[8:40, 16:48] = value
    return mask


def test_soft_changes_less_for_a_smaller_mask_value(four, monkeypatch):
    """Measured where the method acts, in latent space: mean |z_final - z0| over the masked cells.

    (In pixels the untrained VAE's round-trip error, about 60 levels even outside the mask, hides it.)
    """
    from inpaintkit import engine

    seen = {}
    original = engine.prepare_latents

    def spy(*args):
        state, latents, condition = original(*args)
        seen.update(known=state.known_latents, mask=state.mask)
        return state, latents, condition

    monkeypatch.setattr(engine, "prepare_latents", spy)
    changes = []
    for value in (0.25, 0.5, 1.0):
        final = {}
        inpaint(
            four,
            mask=constant_mask(value),
            method="soft",
            steps=12,
            callback=lambda i, n, z: final.update(z=z.clone()),
        )
        cells = seen["mask"].expand_as(seen["known"]) > 0.5
        changes.append(float((final["z"] - seen["known"])[cells].abs().mean()))
    assert changes[0] < changes[1] < changes[2], changes


def test_soft_value_zero_never_changes_and_one_changes(four):
    """What the UNet sees of a 0 cell is the input's own noised latent at every step, whatever is generated
    around it; a 1 cell follows the generation. Two prompts tell them apart (paste-back plays no part here)."""
    mask = constant_mask(1.0)
    mask[16:32, 24:40] = 0.0  # a hole of zeros (two latent cells wide) inside the white region
    seen = {}
    for prompt in ("a teapot", "a red bicycle"):
        with unet_inputs(four) as inputs:
            four(PIXELS, mask, prompt, steps=8, seed=3, method="soft", paste_back=False)
        seen[prompt] = inputs
    zero_cells = torch.zeros_like(seen["a teapot"][0], dtype=torch.bool)
    zero_cells[..., 2:4, 3:5] = True  # latent cells of the 0 hole (8 px per cell)
    one_cells = torch.zeros_like(zero_cells)
    one_cells[..., 1, 2] = True  # a latent cell of the 1 region
    for teapot, bicycle in zip(seen["a teapot"][1:], seen["a red bicycle"][1:]):
        assert torch.equal(teapot[zero_cells], bicycle[zero_cells])
    assert not torch.equal(seen["a teapot"][-1][one_cells], seen["a red bicycle"][-1][one_cells])


def test_soft_change_map_keeps_grey_levels_and_ramps_outside():
    from inpaintkit.masks import soft_change_map

    mask = np.zeros((20, 30), np.float32)
    mask[5:15, 5:12], mask[5:15, 12:20] = 0.4, 0.8
    change = soft_change_map(mask, 0, 4)
    assert np.array_equal(change[mask > 0], mask[mask > 0])  # grey levels are kept, not binarised
    assert 0 < change[10, 21] < 0.8 and change[10, 21] > change[10, 22]  # a falling ramp beside the 0.8 part
    assert 0 < change[10, 3] < 0.4  # and beside the 0.4 part, scaled to it
    assert np.all(change[:, 25:] == 0)  # exactly 0 beyond the band


@pytest.mark.parametrize("radius", [1, 2, 5, 9])
@pytest.mark.parametrize("dilate", [True, False], ids=["grow", "shrink"])
def test_soft_grow_equals_scipy_grey_morphology_with_a_disk(radius, dilate):
    """--mask-grow on a soft mask: the per-level distance transform gives scipy's disk morphology exactly."""
    from scipy import ndimage

    from inpaintkit.masks import grey_disk_morphology

    rng = np.random.default_rng(radius)
    mask = rng.choice(np.array([0.0, 0.25, 0.5, 0.8, 1.0], np.float32), size=(23, 31), p=[0.7, 0.1, 0.1, 0.05, 0.05])
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    morphology = ndimage.grey_dilation if dilate else ndimage.grey_erosion
    expected = morphology(mask, footprint=x * x + y * y <= radius * radius, mode="nearest")
    assert np.array_equal(grey_disk_morphology(mask, radius, dilate), expected)


def test_soft_grow_beyond_the_image_covers_it_without_running_out_of_memory():
    """A 500-pixel grow of a 240x180 soft mask used to build a 601x601 footprint and fail with MemoryError."""
    from inpaintkit.masks import soft_change_map

    mask = np.zeros((180, 240), np.float32)
    mask[80:100, 100:140], mask[90:95, 120:125] = 0.6, 1.0
    assert np.array_equal(soft_change_map(mask, 500, 0), np.ones_like(mask))  # the brightest level reaches every pixel
    assert np.array_equal(soft_change_map(mask, -500, 0), np.zeros_like(mask))  # the darkest, 0, likewise


def test_soft_mask_blur_reaches_the_denoiser(inpainter4, monkeypatch):
    """With --mask-blur the per-pixel strength map the loop reads has grey levels in the band."""
    from inpaintkit import engine

    seen = {}
    original = engine.prepare_latents

    def spy(*args):
        state, latents, condition = original(*args)
        seen["change"] = state.change
        return state, latents, condition

    monkeypatch.setattr(engine, "prepare_latents", spy)
    inpaint(inpainter4, method="soft", mask_blur=12)
    values = seen["change"].flatten()
    assert torch.any((values > 0.05) & (values < 0.95))


# -- repaint ----------------------------------------------------------------------------------


@pytest.mark.parametrize("steps, jump_length, jump_n_sample", [(12, 3, 3), (10, 10, 4), (9, 2, 1)])
def test_repaint_makes_the_documented_number_of_unet_calls(four, steps, jump_length, jump_n_sample):
    documented = steps + (jump_n_sample - 1) * jump_length * len(range(0, steps - jump_length, jump_length))
    with unet_inputs(four) as seen:
        inpaint(
            four,
            method="repaint",
            scheduler=redo_scheduler(four),
            guidance=1.0,
            steps=steps,
            jump_length=jump_length,
            jump_n_sample=jump_n_sample,
        )
    assert len(seen) == documented


def test_jump_schedule_goes_back_up_and_ends_at_the_last_step():
    order = jump_schedule(6, 2, 2)
    assert order == [0, 1, 2, 3, 2, 3, 4, 5, 4, 5]
    assert jump_schedule(5, 5, 3) == [0, 1, 2, 3, 4]  # no room to jump: a plain descent


def test_repaint_resampling_changes_the_result(four):
    scheduler = redo_scheduler(four)
    plain = inpaint(four, method="repaint", scheduler=scheduler, jump_n_sample=1, jump_length=2)
    resampled = inpaint(four, method="repaint", scheduler=scheduler, jump_n_sample=3, jump_length=2)
    assert not np.array_equal(plain, resampled)


def test_repaint_picks_ddim_when_the_model_default_cannot_redo_steps(inpainter4):
    assert inpainter4.components.scheduler_config["_class_name"] == "PNDMScheduler"
    default = inpaint(inpainter4, method="repaint", jump_length=2, jump_n_sample=2)
    ddim = inpaint(inpainter4, method="repaint", scheduler="ddim", jump_length=2, jump_n_sample=2)
    assert np.array_equal(default, ddim)


# -- tdpaint ----------------------------------------------------------------------------------


def test_tdpaint_shows_the_unet_a_constant_known_region(four):
    with unet_inputs(four) as seen:
        inpaint(four, method="tdpaint", scheduler=redo_scheduler(four), steps=6)
    latent_keep = (
        torch.nn.functional.interpolate(
            torch.from_numpy((MASK < 128).astype(np.float32))[None, None], size=seen[0].shape[-2:]
        )
        > 0.5
    )
    latent_keep = latent_keep.expand_as(seen[0])
    first, last = seen[0][latent_keep], seen[-1][latent_keep]
    assert torch.equal(first, last)  # the known region does not follow the schedule
    assert not torch.equal(seen[0][~latent_keep], seen[-1][~latent_keep])  # the hole does


def test_tdpaint_known_t_sets_the_noise_level(four):
    def known_region(known_t):
        with unet_inputs(four) as seen:
            inpaint(four, method="tdpaint", scheduler=redo_scheduler(four), steps=2, known_t=known_t)
        return seen[0]

    assert not torch.equal(known_region(10), known_region(500))


# -- the known region when the loop ends -----------------------------------------------------------------


@pytest.mark.parametrize(
    "method, options",
    [("blend", {}), ("repaint", {"jump_length": 2, "jump_n_sample": 2}), ("tdpaint", {}), ("lanpaint", {})],
)
def test_the_last_step_leaves_the_clean_known_latents(four, monkeypatch, method, options):
    """These methods end with the input's own latents z0 in every known cell, so the decoder sees the real
    background; tested in latent space, where paste-back plays no part."""
    from inpaintkit import engine

    seen, original = {}, engine.prepare_latents

    def spy(*args):
        state, latents, condition = original(*args)
        seen.update(known=state.known_latents, mask=state.mask)
        return state, latents, condition

    monkeypatch.setattr(engine, "prepare_latents", spy)
    if method == "repaint":
        options = {**options, "scheduler": redo_scheduler(four)}
    inpaint(
        four, method=method, steps=6, paste_back=False, callback=lambda i, n, z: seen.update(final=z.clone()),
        **options,
    )  # fmt: skip
    known_cells = seen["mask"].expand_as(seen["known"]) < 0.5
    assert torch.equal(seen["final"][known_cells], seen["known"][known_cells])
    assert not torch.equal(seen["final"][~known_cells], seen["known"][~known_cells])


# -- crop, fill, colour match, outpaint -------------------------------------------------------


def test_crop_runs_the_unet_at_native_size_and_keeps_the_rest(nine):
    pixels = gradient_image(400, 300, seed=41)
    mask = box_mask(400, 300, (300, 20, 330, 44))
    with unet_inputs(nine) as seen:
        output = np.asarray(nine(pixels, mask, "x", steps=3, seed=1, crop_padding=8, paste_back=False)[0])
    native_latent = nine.capabilities.native_size // nine.capabilities.vae_scale_factor
    assert {tuple(each.shape[-2:]) for each in seen} == {(native_latent, native_latent)}
    # the window: mask box 30x24 + 8 each side -> 46x46 square around the box
    outside_window = np.ones(mask.shape, bool)
    outside_window[9:55, 292:338] = False
    assert np.array_equal(output[outside_window], pixels[outside_window])
    assert not np.array_equal(output[mask > 0], pixels[mask > 0])


def test_fill_changes_what_strength_below_one_starts_from(four):
    original = inpaint(four, strength=0.6, fill="original")
    noise = inpaint(four, strength=0.6, fill="noise")
    assert not np.array_equal(original[MASK > 0], noise[MASK > 0])


def test_color_match_moves_the_region_towards_its_ring(four):
    from inpaintkit.color import ring_around, to_lab

    ring = ring_around(MASK / 255.0, 16)
    inside = MASK > 0
    target = to_lab(PIXELS)[ring].mean(axis=0)

    def distance(output):
        return float(np.linalg.norm(to_lab(output.astype(np.uint8))[inside].mean(axis=0) - target))

    assert distance(inpaint(four, color_match=True)) < 0.5 * distance(inpaint(four))


def test_outpaint_extends_the_canvas_and_keeps_the_image(nine):
    outputs = nine.outpaint(PIXELS, "a meadow", left=8, right=5, top=0, bottom=13, steps=3, seed=2)
    output = np.asarray(outputs[0])
    assert output.shape == (HEIGHT + 13, WIDTH + 13, 3)
    assert np.array_equal(output[0:HEIGHT, 8 : 8 + WIDTH], PIXELS)
    assert not np.array_equal(
        output[HEIGHT:, :], np.repeat(PIXELS[-1:, :][:, [0] * 8 + list(range(WIDTH)) + [WIDTH - 1] * 5], 13, axis=0)
    )


def test_metadata_records_the_method_defaults_used(inpainter4):
    info = inpainter4(PIXELS, MASK, "x", method="repaint", steps=4, jump_length=2, seed=1)[0].info["inpaintkit"]
    assert (info["method"], info["jump_length"], info["jump_n_sample"]) == ("repaint", 2, 10)


@pytest.mark.parametrize("fixture", ["inpainter4", "inpainter9", "sdxl4", "sdxl9", "flux", "flux_fill", "sd3"])
@pytest.mark.parametrize(
    "method, options",
    [
        ("blend", {}),
        ("bld", {"reconstruct": "poisson"}),
        ("soft", {}),
        ("repaint", {"jump_length": 2, "jump_n_sample": 2}),
        ("tdpaint", {}),
    ],
)
def test_every_method_runs_on_both_unets_and_keeps_the_background(request, fixture, method, options):
    from .helpers import distance_to_nearest

    output = inpaint(request.getfixturevalue(fixture), method=method, mask_blur=3, steps=6, **options)
    far = distance_to_nearest(MASK > 0) >= 4  # beyond the mask and its 3-pixel blur band
    assert np.array_equal(output[far], PIXELS[far])
    assert not np.array_equal(output[MASK > 0], PIXELS[MASK > 0])
