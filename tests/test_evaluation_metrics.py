"""The metrics' values against hand-computed ones, and the learned metrics' code paths with tiny injected networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inpaintkit.evaluation import learned_metrics
from inpaintkit.evaluation.learned_metrics import (
    ClipScorer,
    choose_subset_size,
    kernel_inception_distance,
    kid_crop,
    load_clip,
    load_learned_metrics,
)
from inpaintkit.evaluation.pixel_metrics import psnr, region_mse, region_ssim
from inpaintkit.evaluation.scoring import MetricsTable, format_value, summarize
from inpaintkit.masks import bounding_box

from .conftest import box_mask, gradient_image


@pytest.fixture
def picture():
    image = gradient_image(48, 40, seed=3)
    hole = box_mask(48, 40, (10, 8, 30, 24)) > 0
    return image, hole


def test_background_of_an_image_with_itself_has_zero_mse_and_infinite_psnr(picture):
    image, hole = picture
    assert region_mse(image, image, ~hole) == 0.0
    assert psnr(0.0) == math.inf


def test_a_known_background_offset_gives_the_known_mse_and_psnr(picture):
    image, hole = picture
    image = np.clip(image, 0, 200).astype(np.uint8)  # room to add 10 without clipping
    shifted = image.copy()
    shifted[~hole] += 10
    expected = (10 / 255) ** 2  # every background pixel and channel is off by 10/255
    assert region_mse(shifted, image, ~hole) == pytest.approx(expected, rel=1e-12)
    assert psnr(expected) == pytest.approx(20 * math.log10(25.5), rel=1e-12)  # 10 log10(1 / (10/255)^2)


def test_changes_inside_the_hole_leave_the_background_metrics_perfect(picture):
    image, hole = picture
    repainted = image.copy()
    repainted[hole] = 255 - repainted[hole]
    assert region_mse(repainted, image, ~hole) == 0.0
    # SSIM of identical images is 1 up to float64 rounding in the Gaussian filtering.
    assert region_ssim(repainted, image, ~hole) == pytest.approx(1.0, abs=1e-9)


def test_background_ssim_drops_when_the_background_changes(picture):
    image, hole = picture
    noisy = image.astype(np.int16) + np.random.default_rng(0).integers(-40, 41, image.shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    assert region_ssim(noisy, image, ~hole) < 0.9


def test_mse_inside_the_mask_against_a_ground_truth(picture):
    image, hole = picture
    truth = np.clip(image, 0, 200).astype(np.uint8)
    prediction = truth.copy()
    prediction[hole] += 20
    prediction[~hole] = 0  # the background must not count
    assert region_mse(prediction, truth, hole) == pytest.approx((20 / 255) ** 2, rel=1e-12)


def test_empty_regions_are_not_applicable(picture):
    image, _ = picture
    nothing = np.zeros(image.shape[:2], dtype=bool)
    assert math.isnan(region_mse(image, image, nothing))
    assert math.isnan(psnr(region_mse(image, image, nothing)))
    assert math.isnan(region_ssim(image, image, nothing))
    assert bounding_box(nothing) is None


def test_bounding_box_is_exclusive_on_the_right_and_bottom(picture):
    _, hole = picture
    assert bounding_box(hole) == (
        slice(8, 24),
        slice(10, 30),
    )  # box_mask's (left, top, right, bottom) = (10, 8, 30, 24)


def test_summary_is_mean_and_population_std_and_counts_identical_regions_apart():
    assert summarize([1.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 2, "identical": 0}
    assert summarize([math.inf, 30.0, 20.0]) == {"mean": 25.0, "std": 5.0, "n": 3, "identical": 1}
    assert summarize([math.inf, math.inf]) == {"mean": math.inf, "std": None, "n": 2, "identical": 2}
    assert summarize([]) == {"mean": None, "std": None, "n": 0, "identical": 0}


def test_metrics_table_round_trips_every_bit(tmp_path):
    table = MetricsTable(tmp_path / "metrics.csv")
    value = 1 / 3
    table.update(
        "a", "blend", {"background_mse": value, "background_psnr": math.inf, "masked_mse": math.nan}, digest="d1"
    )
    table.save()
    again = MetricsTable(tmp_path / "metrics.csv")
    assert again.values("blend", "background_mse", {"a"}) == [value]
    assert again.values("blend", "background_psnr", {"a"}) == [math.inf]
    assert again.values("blend", "masked_mse", {"a"}) == []  # nan = not applicable, left out
    assert again.missing("a", "blend", {"background_mse", "masked_mse", "clip_score"}) == {"clip_score"}
    assert format_value(math.inf) == "inf"
    again.keep_if_current("a", "blend", "d2")  # computed from other pixels: dropped, to be computed again
    assert again.missing("a", "blend", {"background_mse"}) == {"background_mse"}


def test_clip_score_is_torchmetrics_formula_on_the_injected_model(tiny_clip):
    model, processor = load_clip(str(tiny_clip))
    scorer = ClipScorer(model, processor)
    prompts = ["a red bicycle", "the sea", "green", "a cat on a chair", "x"]
    images = [gradient_image(40, 32, seed=seed) for seed in range(4)]
    scores = []
    for image in images:
        for prompt in prompts:
            with torch.no_grad():
                pixels = processor(images=[torch.from_numpy(image).permute(2, 0, 1)], return_tensors="pt")[
                    "pixel_values"
                ]
                tokens = processor(text=[prompt], return_tensors="pt", padding=True)
                image_features = model.get_image_features(pixel_values=pixels).pooler_output
                text_features = model.get_text_features(**tokens).pooler_output
            cosine = torch.nn.functional.cosine_similarity(image_features, text_features).item()
            expected = 100 * max(cosine, 0.0)  # torchmetrics' definition of the CLIP score
            score = scorer(image, prompt)
            # float32 features: agreement to 1e-4 of a score on a 0-100 scale
            assert score == pytest.approx(expected, abs=1e-4)
            scores.append(score)
    assert any(score > 0 for score in scores), "the check needs at least one positive cosine to mean anything"


def test_a_prompt_longer_than_clip_reads_is_cut_at_a_word_and_keeps_its_end_token(tiny_clip):
    model, processor = load_clip(str(tiny_clip))
    scorer = ClipScorer(model, processor)
    image = gradient_image(40, 32, seed=1)
    long_prompt = " ".join(f"w{index % 10}" for index in range(200))
    fitted = scorer.fit(long_prompt)
    tokens = processor(text=[fitted], return_tensors="pt", padding=True)
    assert tokens.input_ids.shape[1] <= 77 and long_prompt.startswith(fitted)
    assert len(processor(text=[fitted + " w0"]).input_ids[0]) > 77  # the longest prefix that fits
    with torch.no_grad():
        pixels = processor(images=[torch.from_numpy(image).permute(2, 0, 1)], return_tensors="pt")["pixel_values"]
        cosine = torch.nn.functional.cosine_similarity(
            model.get_image_features(pixel_values=pixels).pooler_output, model.get_text_features(**tokens).pooler_output
        ).item()
    assert scorer(image, long_prompt) == pytest.approx(100 * max(cosine, 0.0), abs=1e-4)


class ChannelStatistics(torch.nn.Module):
    """A tiny KID feature extractor: per-channel mean and std of 4x4 blocks (48 numbers per image)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        blocks = torch.nn.functional.adaptive_avg_pool2d(images.double() / 255, 4)
        return torch.cat([blocks.flatten(1), images.double().std(dim=(2, 3)) / 255], dim=1)


def test_kid_separates_different_distributions_with_an_injected_extractor():
    rng = np.random.default_rng(0)
    textures = [kid_crop(gradient_image(40, 40, seed=seed)) for seed in range(8)]
    similar = [kid_crop(gradient_image(40, 40, seed=seed)) for seed in range(8, 16)]
    flat = [kid_crop(np.full((40, 40, 3), rng.integers(0, 256, 3), dtype=np.uint8)) for _ in range(8)]
    near = kernel_inception_distance(textures, similar, ChannelStatistics())
    far = kernel_inception_distance(textures, flat, ChannelStatistics())
    assert near.subset_size == far.subset_size == 4  # half of the 8 samples
    # Same-distribution KID is about 0 (3e-5 here); a flat-colour set is thousands of times farther.
    assert far.mean > 100 * max(near.mean, near.std)
    again = kernel_inception_distance(textures, flat, ChannelStatistics())
    assert (again.mean, again.std) == (far.mean, far.std)  # seeded subsets: a resumed run reports the same KID


class BatchSizes(ChannelStatistics):
    """ChannelStatistics that remembers how many crops each call received."""

    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(images))
        return super().forward(images)


def test_kid_features_are_computed_a_batch_at_a_time_with_the_same_result(monkeypatch):
    """A PIPE split has thousands of crops; Inception on all of them at once would not fit in memory."""
    real = [kid_crop(gradient_image(24, 24, seed=seed)) for seed in range(7)]
    fake = [kid_crop(gradient_image(24, 24, seed=seed)) for seed in range(7, 12)]
    monkeypatch.setattr(learned_metrics, "KID_BATCH", 3)
    batched = BatchSizes()
    in_batches = kernel_inception_distance(real, fake, batched)
    assert batched.sizes == [3, 3, 1, 3, 2]
    monkeypatch.setattr(learned_metrics, "KID_BATCH", 100)
    whole = kernel_inception_distance(real, fake, ChannelStatistics())
    # Each crop's features do not depend on its batch-mates, so the KID is the same to the last bit.
    assert (in_batches.mean, in_batches.std) == (whole.mean, whole.std)


def test_kid_subset_size_follows_the_sample_count():
    assert [choose_subset_size(n) for n in (2, 3, 10, 752, 5000)] == [2, 2, 5, 376, 1000]


def test_kid_with_one_sample_says_it_needs_two():
    crop = kid_crop(gradient_image(20, 20))
    with pytest.raises(ValueError, match="KID needs at least 2 samples per method, got 1"):
        kernel_inception_distance([crop, crop], [crop], ChannelStatistics())


def test_kid_with_clip_features_runs_on_the_injected_clip(tiny_clip):
    learned = load_learned_metrics(str(tiny_clip), "clip")
    assert learned.unavailable == {}
    crops = [kid_crop(gradient_image(30, 30, seed=seed)) for seed in range(4)]
    result = kernel_inception_distance(crops, crops[::-1], learned.kid_features)
    assert math.isfinite(result.mean) and result.subset_size == 2


def test_a_clip_model_that_cannot_load_makes_clip_and_clip_kid_unavailable(tmp_path):
    learned = load_learned_metrics(str(tmp_path / "no-such-clip"), "clip")
    assert learned.clip is None and learned.kid_features is None
    assert "could not be loaded" in learned.unavailable["clip"]
    assert "needs the CLIP model" in learned.unavailable["kid"]
