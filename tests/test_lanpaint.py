"""lanpaint (issue 16): LanPaint's Langevin update as the reference code writes it, its cost, and its runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from inpaintkit.engine import LoopState
from inpaintkit.errors import InputError
from inpaintkit.guidance import NoGuidance
from inpaintkit.methods import METHODS
from inpaintkit.methods.base import MAX_DENOISER_CALLS
from inpaintkit.methods.lanpaint import iterations
from inpaintkit.noise import NoiseSchedule
from inpaintkit.settings import InpaintSettings

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, distance_to_nearest, run_cli

WIDTH, HEIGHT = 64, 48
PIXELS = gradient_image(WIDTH, HEIGHT, seed=40)
MASK = box_mask(WIDTH, HEIGHT, (16, 8, 48, 40))
LANPAINT = METHODS["lanpaint"]


def model_fixture(request, name: str):
    """A tiny model fixture of conftest.py; the flow families' (flux, sd3) are skipped where they do not exist yet."""
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        pytest.skip(f"no '{name}' model fixture in this checkout")


# Each kind of noise the loop can carry: SD (PNDM, variance-preserving), SDXL (Euler, sigma-scaled), Flux and SD 3
# (flow matching), each with its model's default scheduler.
NOISE_KINDS = ["inpainter4", "sdxl4", "flux", "sd3"]


@pytest.fixture(params=NOISE_KINDS)
def four(request):
    """An ordinary (not inpainting) model of each family."""
    return model_fixture(request, request.param)


def inpaint(inpainter, callback=None, **options):
    options = {"steps": 5, "seed": 3, "paste_back": False, **options}
    return np.asarray(inpainter(PIXELS, MASK, "a teapot", callback=callback, **options)[0]).astype(np.int32)


# -- the reference, transcribed ----------------------------------------------------------------------------------------
# scraed/LanPaint v2.1.0, src/LanPaint/lanpaint.py (LanPaint.LanPaint, score_model, prepare_step_size,
# langevin_dynamics' run_overdamped) and nodes.py (KSamplerX0Inpaint.__call__, min_step_frac_effective_steps), in its
# own variables and coordinates: VE latents x0 + sigma n for SD/SDXL, flow latents (1 - t) x0 + t n for flow models;
# `latent_mask` is 1 on the KNOWN region. Audio streams, the semantic early stop (off at threshold 0) and the disabled
# damped scheme are left out; torch.randn_like is `randn`, so both sides draw the same numbers.


def reference_min_step_frac_effective_steps(n_steps, frac, min_frac):
    if min_frac <= 0 or frac >= min_frac or n_steps <= 0:
        return n_steps
    return max(0, round(n_steps * frac / min_frac))


def reference_n_steps(n_steps, abt, current_step, total_steps, early_stop=1, min_step_frac=1.0):
    if total_steps - current_step <= early_stop:
        return 0
    return reference_min_step_frac_effective_steps(n_steps, float(1.0 - abt), min_step_frac)


def reference_lanpaint(x, latent_image, noise, sigma, latent_mask, current_times, n_steps, inner_model, is_flow,
                       lamb, beta, step_size_option, randn, min_step_frac=1.0):  # fmt: skip
    ve_sigma, abt, flow_t = current_times
    step_size = step_size_option * torch.as_tensor(1 - abt, dtype=torch.float64).clamp(min=min_step_frac)
    if is_flow:  # model_sampling.noise_scaling: CONST (flow) and EPS (VE)
        replaced = sigma * noise + (1.0 - sigma) * latent_image
    else:
        replaced = latent_image + noise * sigma
    x = x * (1 - latent_mask) + replaced * latent_mask
    x_t = x * (abt**0.5 + (1 - abt) ** 0.5) if is_flow else x / (1 + ve_sigma**2) ** 0.5

    def score_model(x_t):
        if is_flow:
            x_0 = inner_model(x_t / (abt**0.5 + (1 - abt) ** 0.5), flow_t)
        else:
            x_0 = inner_model(x_t * (1 + ve_sigma**2) ** 0.5, ve_sigma)
        x_0_big = x_0  # "Image First": the BIG score's CFG scale is the run's
        score_x = -(x_t - x_0)
        score_y = -(1 + lamb) * (x_t - latent_image) + lamb * (x_t - x_0_big)
        return score_x * (1 - latent_mask) + score_y * latent_mask

    # prepare_step_size (sigma_x = 1, sigma_y = beta)
    dtx, dty = 2 * step_size, 2 * step_size * beta
    a_x = (1 / (1 - abt) * dtx / 2) / (dtx / 2)
    a_y = ((1 + lamb) / (1 - abt) * dty / 2) / (dty / 2)
    d_x = d_y = 2**0.5
    dtx, dty = dtx / 2, dty / 2

    mask = latent_mask
    big_a = a_x * (1 - mask) + a_y * mask
    big_d = d_x * (1 - mask) + d_y * mask
    dt = dtx * (1 - mask) + dty * mask

    def coef_c(x_t):
        x0 = x_t + score_model(x_t)
        return (abt**0.5 * x0 - x_t) / (1 - abt) + big_a * x_t

    def advance_time_overdamped(x_t, dt, a, c, d):
        a_dt = a * dt
        exp_neg = torch.exp(-a_dt)
        k = torch.where(torch.abs(a) < 1e-8, dt, (-torch.expm1(-a_dt)) / a)
        k2 = torch.where(torch.abs(a) < 1e-8, dt, (-torch.expm1(-2 * a_dt)) / (2 * a))
        return exp_neg * x_t + k * c + randn() * torch.sqrt(torch.clamp(d**2 * k2, min=0.0))

    c = None
    for _ in range(n_steps):
        if torch.mean(torch.as_tensor(dtx)) <= 0.0:
            continue
        if c is None:
            c = coef_c(x_t)
            x_t = advance_time_overdamped(x_t, dt, big_a, c, big_d)
        else:
            x_t = advance_time_overdamped(x_t, dt / 2, big_a, c, big_d)
            c_new = coef_c(x_t)
            x_t = x_t + (c_new - c) * dt
            x_t = advance_time_overdamped(x_t, dt / 2, big_a, c, big_d)
            c = c_new
    return x_t / (abt**0.5 + (1 - abt) ** 0.5) if is_flow else x_t * (1 + ve_sigma**2) ** 0.5


# -- a toy model both sides call ---------------------------------------------------------------------------------------


def toy_clean(x_vp: torch.Tensor) -> torch.Tensor:
    """A nonlinear 'denoiser' of the VP latent that mixes neighbouring cells, so the known and generated regions
    interact through it as through a network."""
    return 0.8 * torch.tanh(x_vp) + 0.3 * torch.roll(x_vp, 1, dims=-1) - 0.1


class ToyDenoiser:
    """Predicts, in the schedule's own parameterisation (epsilon, v or flow velocity), the x0 = clean(latents / r).
    It takes the loop's latents unscaled (`scaled` is the identity), so its input is what the method computed."""

    guidance = NoGuidance()

    def __init__(self, schedule: NoiseSchedule, clean=toy_clean):
        self.schedule, self.clean, self.calls = schedule, clean, 0

    def scaled(self, latents, i):
        return latents

    def batched(self, latents):
        return latents

    def __call__(self, latents, i):
        self.calls += 1
        alpha, sigma = self.schedule.level(i)
        target = self.clean(latents / math.hypot(alpha, sigma))
        # predicted_clean is affine in the prediction: x0 = a + b * prediction; invert it
        a = self.schedule.predicted_clean(latents, torch.zeros_like(latents), i)
        b = self.schedule.predicted_clean(latents, torch.ones_like(latents), i) - a
        return (target - a) / b


SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}


def make_schedule(kind: str, steps: int = 8) -> NoiseSchedule:
    if kind == "vp-epsilon":
        scheduler = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False)
    elif kind == "vp-v":
        scheduler = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, prediction_type="v_prediction")
    elif kind == "sigma":
        scheduler = EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="leading")
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(steps)
    return NoiseSchedule(scheduler, scheduler.timesteps, scheduler.timesteps.tolist())


def toy_state(schedule: NoiseSchedule, settings: InpaintSettings, seed: int = 0, shape=(1, 4, 6, 8), clean=toy_clean):
    """A LoopState in float64 around the toy denoiser: a 2-cell-wide known band on the left, the rest generated."""
    generator = torch.Generator().manual_seed(seed)
    known = randn_tensor(shape, generator=generator, dtype=torch.float64)
    noise = randn_tensor(shape, generator=generator, dtype=torch.float64)
    mask = torch.ones(shape[0], 1, *shape[2:], dtype=torch.float64)
    mask[..., :2] = 0.0
    return LoopState(
        components=None, settings=settings, schedule=schedule, generators=[torch.Generator().manual_seed(seed + 1)],
        known_latents=known, masked_latents=None, noise=noise, mask=mask, change=None, image=None, pixel_mask=None,
        denoiser=ToyDenoiser(schedule, clean),
    )  # fmt: skip


def reference_before_step(state: LoopState, i: int, latents: torch.Tensor, settings: InpaintSettings):
    """The reference's call at step i, from and back to the loop's latents, drawing from its own copy of the job's
    generator (seeded as the state's was, so both sides draw the same numbers in the same order)."""
    schedule, option = state.schedule, LANPAINT.option
    alpha, sigma = schedule.level(i)
    generator = torch.Generator().manual_seed(1)  # toy_state(seed=0) seeds the state's generator with 1

    def randn():
        return randn_tensor(latents.shape, generator=generator, dtype=latents.dtype)

    if schedule.flow:  # nodes.py: the times of a flow model from its t, and of an EPS model from its VE sigma
        flow_t = sigma
        abt = (1 - flow_t) ** 2 / ((1 - flow_t) ** 2 + flow_t**2)
        ve_sigma = flow_t / (1 - flow_t) if flow_t < 1 else math.inf  # unused by a flow model's branches
        x, sampler_sigma, to_loop = latents, flow_t, 1.0
    else:  # VE latents are the loop's divided by alpha (alpha = 1 for sigma-scaled schedulers)
        ve_sigma = sigma / alpha
        abt = 1 / (1 + ve_sigma**2)
        flow_t = (1 - abt) ** 0.5 / ((1 - abt) ** 0.5 + abt**0.5)
        x, sampler_sigma, to_loop = latents / alpha, ve_sigma, alpha

    def inner_model(x, model_sigma):  # the toy, called in the reference's coordinates
        x_vp = x * (abt**0.5 + (1 - abt) ** 0.5) if schedule.flow else x / (1 + model_sigma**2) ** 0.5
        return toy_clean(x_vp)

    n_steps = reference_n_steps(option(settings, "lanpaint_steps"), abt, i, schedule.steps)
    result = reference_lanpaint(
        x, state.known_latents, state.noise, sampler_sigma, 1 - state.mask, (ve_sigma, abt, flow_t), n_steps,
        inner_model, schedule.flow, option(settings, "lanpaint_lambda"), option(settings, "lanpaint_beta"),
        option(settings, "lanpaint_step_size"), randn,
    )  # fmt: skip
    return result * to_loop, n_steps


OPTION_SETS = [
    {},  # the authors' defaults: 5 steps, lambda 5, step size 0.2, beta 1
    {"lanpaint_steps": 3, "lanpaint_lambda": 12.0, "lanpaint_step_size": 0.6, "lanpaint_beta": 0.3},
]


@pytest.mark.parametrize("kind", ["vp-epsilon", "vp-v", "sigma", "flow"])
@pytest.mark.parametrize("options", OPTION_SETS, ids=["defaults", "others"])
def test_each_step_is_the_reference_update(kind, options):
    """before_step at every step that runs iterations equals the transcribed reference on the toy model, for
    variance-preserving (epsilon and v), sigma-scaled and flow schedules: the coordinates, the replace step, the
    bidirectional score, the exact overdamped integration with its split-step correction, and the step counts."""
    settings = InpaintSettings(method="lanpaint", **options)
    schedule = make_schedule(kind)
    checked = 0
    for i in range(schedule.steps - 1):
        state = toy_state(schedule, settings)
        latents = randn_tensor(state.noise.shape, generator=torch.Generator().manual_seed(100 + i), dtype=torch.float64)
        latents = latents * math.hypot(*schedule.level(i))  # latents of this level's spread, any content
        expected, n_steps = reference_before_step(state, i, latents, settings)
        if n_steps == 0:
            continue
        moved = LANPAINT.before_step(state, i, latents)
        assert state.denoiser.calls == n_steps  # one model call per iteration
        # float64 on both sides, which differ only in the order of float operations (the reference adds the score to
        # x_t and subtracts it again where we form the target directly): the largest difference measured is 7e-15.
        # 1e-12 leaves room for other CPUs' rounding; dropping the split-step correction, halving the noise's
        # variance, holding the new C in the second half-step or ignoring beta each move the result by more than 0.5.
        torch.testing.assert_close(moved, expected, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(moved, latents)
        checked += 1
    assert checked >= 4  # the ramp leaves iterations at most of the 8 steps


@pytest.mark.parametrize("kind", ["vp-epsilon", "sigma", "flow"])
def test_the_last_step_runs_no_iterations_and_is_blend_s(kind):
    schedule = make_schedule(kind)
    state = toy_state(schedule, InpaintSettings(method="lanpaint"))
    latents = torch.randn(state.noise.shape, dtype=torch.float64)
    assert torch.equal(LANPAINT.before_step(state, schedule.steps - 1, latents), latents)
    assert state.denoiser.calls == 0


def test_the_iteration_count_follows_the_reference_ramp_and_early_stop():
    for n in (0, 1, 5, 7, 100):
        for abar in (0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999):
            for left in (1, 2, 5):
                assert iterations(n, abar, left) == reference_n_steps(n, abar, 10 - left, 10), (n, abar, left)
    assert iterations(5, 0.5, 2) == 2  # Python's round: 2.5 -> 2, as the reference
    assert iterations(5, 0.3, 2) == 4 and iterations(5, 0.999, 2) == 0


def test_the_chain_samples_the_noised_distribution_of_a_known_x0():
    """'Asymptotically exact': with a model that always predicts x0 = c, the generated region's Langevin chain must
    settle on the level's own marginal N(sqrt(abar) c, 1 - abar) in VP coordinates, whatever it starts from. A wrong
    noise scale, drift or integration (e.g. an Euler step instead of the exact one) breaks either moment."""
    schedule = make_schedule("vp-epsilon", steps=10)
    i = 4
    alpha, sigma = schedule.level(i)
    c = 0.7
    settings = InpaintSettings(method="lanpaint")
    state = toy_state(schedule, settings, shape=(1, 4, 64, 64), clean=lambda x_vp: torch.full_like(x_vp, c))
    state.mask = torch.ones_like(state.mask)  # everything generated: the known-region pull is another test's
    abar = alpha**2
    # 30 iterations of dt = 0.2 at A = 1 / (1 - abar): the start's offset decays by exp(-30 * 0.2 / (1 - abar)) < 1e-5
    x = LANPAINT.langevin(state, i, torch.zeros_like(state.noise), 30)
    standardised = (x - math.sqrt(abar) * c) / math.sqrt(1 - abar)
    # 65,536 cells: the sample mean's standard error is 0.004 and the standard deviation's 0.003; 0.02 is 5 of them.
    assert abs(float(standardised.mean())) < 0.02
    assert abs(float(standardised.std()) - 1.0) < 0.02


# -- cost --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def spied_state(monkeypatch):
    """The LoopState of the next run (its schedule, mask, z0, noise), captured as the engine builds it."""
    from inpaintkit import engine

    seen, original = {}, engine.prepare_latents

    def spy(*args, **kwargs):
        state, latents, condition = original(*args, **kwargs)
        seen["state"] = state
        return state, latents, condition

    monkeypatch.setattr(engine, "prepare_latents", spy)
    return seen


@pytest.mark.parametrize("model, scheduler", [*((name, "default") for name in NOISE_KINDS), ("inpainter4", "ddim")])
def test_model_calls_per_step_are_what_the_method_declares(request, model, scheduler, spied_state):
    """Counted at the network's forward: step i makes 1 + round(N (1 - abar_i)) calls (the last step 1), at most
    1 + N per step: denoiser_calls' bound for the job limits."""
    four = model_fixture(request, model)
    calls, per_step = [], []
    # with_kwargs: a transformer is called with keyword arguments only
    handle = four.components.unet.register_forward_pre_hook(lambda *_: calls.append(1), with_kwargs=True)

    def step_done(count, total, latents):
        per_step.append(len(calls) - sum(per_step))

    try:
        inpaint(four, callback=step_done, method="lanpaint", steps=5, scheduler=scheduler)
    finally:
        handle.remove()
    schedule = spied_state["state"].schedule
    expected = []
    for i in range(schedule.steps):
        alpha, sigma = schedule.level(i)
        abar = alpha**2 / (alpha**2 + sigma**2)
        expected.append(1 + (0 if i == schedule.steps - 1 else round(5 * (1 - abar))))
    assert per_step == expected
    assert per_step[0] == 6 and per_step[-1] == 1  # the noisiest step runs all 5 iterations, the last none
    settings = InpaintSettings(method="lanpaint", steps=5, scheduler=scheduler)
    assert LANPAINT.denoiser_calls(settings) == 5 * (1 + 5) >= sum(per_step)


def test_a_job_over_the_denoiser_call_limit_is_refused(inpainter4):
    # 999 steps with 10 iterations: 999 * 11 = 10,989 calls at most, over the limit; with the default 5, 5,994.
    settings = InpaintSettings(method="lanpaint", steps=999, scheduler="ddim", lanpaint_steps=10)
    assert LANPAINT.denoiser_calls(settings) == 10_989 > MAX_DENOISER_CALLS
    with pytest.raises(InputError, match="more than the limit of 10,000; lower --steps or --lanpaint-steps"):
        inpainter4.check(settings)
    inpainter4.check(InpaintSettings(method="lanpaint", steps=999, scheduler="ddim"))


# -- what it does on real (tiny) models --------------------------------------------------------------------------------


def test_with_no_iterations_it_is_blend_pixel_for_pixel(four):
    assert np.array_equal(inpaint(four, method="lanpaint", lanpaint_steps=0), inpaint(four, method="blend"))


def test_the_known_region_moves_inside_a_step_and_is_blend_s_after_it(four, spied_state, monkeypatch):
    """The reference's Langevin moves BOTH regions (the known one under the bidirectional pull, with step beta h); the
    paste after the ordinary step then puts the input noised to the next level back, so between steps the known
    region is blend's, bit for bit, and the last step leaves z0. The generated region is LanPaint's own. Latents are
    compared, with paste-back off."""

    def latents_after_each_step(method):
        seen = []
        inpaint(four, callback=lambda count, total, latents: seen.append(latents.clone()), method=method)
        return seen

    blend = latents_after_each_step("blend")
    moved, original = [], LANPAINT.before_step

    def recording(state, i, latents):
        result = original(state, i, latents)
        known = state.schedule.noised(state.known_latents, state.noise, i)
        moved.append((LANPAINT.iterations_at(state, i), result, known))
        return result

    monkeypatch.setattr(LANPAINT, "before_step", recording)
    lanpaint = latents_after_each_step("lanpaint")
    state = spied_state["state"]
    keep = (state.mask < 0.5).expand_as(state.known_latents)
    assert len(lanpaint) == len(blend) == state.schedule.steps
    for ours, theirs in zip(lanpaint, blend):
        assert torch.equal(ours[keep], theirs[keep])
    assert torch.equal(lanpaint[-1][keep], state.known_latents[keep])
    assert not torch.equal(lanpaint[-1][~keep], blend[-1][~keep])
    for count, result, known in moved:  # inside the step: moved where iterations ran, untouched where none did
        shift = (result - known)[keep].abs().max() / known[keep].abs().max()
        # Measured: 0.98 to 1.35 of the known latents' own size where iterations ran. 0.01 is far above the rounding
        # of the loop's latents' round trip through VP coordinates (/ r, * r: ~1e-7) that a frozen region would show.
        assert shift > 0.01 if count else shift == 0


@pytest.mark.parametrize("fixture", ["inpainter4", "inpainter9", "sdxl4", "sdxl9", "flux", "flux_fill", "sd3"])
def test_runs_on_every_denoiser_and_keeps_the_background(request, fixture):
    """Ordinary and dedicated inpainting models of every family: LanPaint needs nothing of the network."""
    inpainter = model_fixture(request, fixture)
    output = inpaint(inpainter, method="lanpaint", mask_blur=3, steps=4, lanpaint_steps=2, paste_back=True)
    far = distance_to_nearest(MASK > 0) >= 4  # beyond the mask and its 3-pixel blur band
    assert np.array_equal(output[far], PIXELS[far])
    assert not np.array_equal(output[MASK > 0], PIXELS[MASK > 0])


def test_a_grey_mask_is_binarised_at_one_half(inpainter4, spied_state):
    """Binary masks only (the reference thresholds at 0.5): grey levels act as their binarised mask would."""
    grey = MASK.copy()
    grey[8:24, 16:32] = 140  # >= 128: generated
    grey[24:40, 16:32] = 100  # < 128: kept
    grey[0:8, 0:16] = 90  # < 128: kept
    binary = np.where(grey >= 128, 255, 0).astype(np.uint8)
    options = {"method": "lanpaint", "steps": 4, "seed": 3, "paste_back": False}
    from_grey = np.asarray(inpainter4(PIXELS, grey, "a teapot", **options)[0])
    assert set(torch.unique(spied_state["state"].mask).tolist()) == {0.0, 1.0}
    from_binary = np.asarray(inpainter4(PIXELS, binary, "a teapot", **options)[0])
    assert np.array_equal(from_grey, from_binary)


# -- the command line --------------------------------------------------------------------------------------------------


def cli_args(tmp_path, model) -> list:
    Image.fromarray(PIXELS).save(tmp_path / "in.png")
    Image.fromarray(MASK).save(tmp_path / "mask.png")
    return ["run", "--model", model, "--device", "cpu", "--image", tmp_path / "in.png", "--mask", tmp_path / "mask.png",
            "--out", tmp_path / "out.png", "--steps", "3", "--seed", "1"]  # fmt: skip


@pytest.mark.parametrize("model", ["tiny4", "tiny_sdxl4", "tiny_flux"])
def test_the_cli_runs_it(request, model, tmp_path, capsys):
    args = cli_args(tmp_path, model_fixture(request, model))
    code, _, err = run_cli([*args, "--method", "lanpaint", "--lanpaint-steps", "2", "--lanpaint-lambda", "4"], capsys)
    assert code == 0, err
    metadata = json.loads(Image.open(tmp_path / "out.png").text["inpaintkit"])
    assert metadata["method"] == "lanpaint"
    assert (metadata["lanpaint_steps"], metadata["lanpaint_lambda"]) == (2, 4.0)
    assert (metadata["lanpaint_step_size"], metadata["lanpaint_beta"]) == (0.2, 1.0)  # the defaults, recorded


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--lanpaint-steps", "101"], "--lanpaint-steps must be from 0 to 100, got 101"),
        (["--lanpaint-lambda", "0"], "--lanpaint-lambda must be from 0.1 to 50, got 0.0"),
        (["--lanpaint-step-size", "2"], "--lanpaint-step-size must be from 0.0001 to 1, got 2.0"),
        (["--lanpaint-beta", "-1"], "--lanpaint-beta must be from 0.0001 to 5, got -1.0"),
        (["--lanpaint-steps", "x"], "argument --lanpaint-steps: invalid int value: 'x'"),
        (
            ["--method", "blend", "--lanpaint-steps", "3"],
            "--lanpaint-steps applies only to --method lanpaint, not blend",
        ),
        (["--steps", "999", "--lanpaint-steps", "20"], "lower --steps or --lanpaint-steps"),
    ],
)
def test_bad_options_are_one_line(flags, phrase, tmp_path, tiny4, capsys):
    flags = flags if "--method" in flags else ["--method", "lanpaint", *flags]
    code, _, err = run_cli([*cli_args(tmp_path, tiny4), *flags], capsys)
    assert_one_line_error(code, err, phrase)
    assert not (tmp_path / "out.png").exists()
