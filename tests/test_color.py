"""match_color: the generated region takes the LAB statistics of the ring of known pixels around it."""

from __future__ import annotations

import numpy as np

from inpaintkit.color import match_color, ring_around, to_lab

from .conftest import box_mask, gradient_image

BOX = (20, 16, 44, 48)  # 24x32 hole in a 64x64 image, with at least 16 px of known pixels all round


def hole_mask() -> np.ndarray:
    return box_mask(64, 64, BOX).astype(np.float32) / 255.0


def textured(colour: tuple[int, int, int], amplitude: int, seed: int) -> np.ndarray:
    """64x64 RGB: a colour plus uniform per-channel noise of +-amplitude (no clipping for our colours)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-amplitude, amplitude + 1, size=(64, 64, 3))
    return np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)


def lab_stats(pixels: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = to_lab(pixels)[where].astype(np.float64)
    return lab.mean(axis=0), lab.std(axis=0)


def test_shifted_region_mean_moves_to_the_ring_mean():
    # The generated region is the original's texture with a colour cast: matching must remove >90%
    # of the LAB distance between the region's mean and the ring's (left over: uint8 rounding only).
    mask = hole_mask()
    hole = mask >= 0.5
    original = textured((120, 110, 100), 15, seed=0)
    generated = original.copy()
    generated[hole] = (original[hole].astype(int) + (45, -30, 35)).astype(np.uint8)
    ring_mean, _ = lab_stats(original, ring_around(mask, 16))
    before = np.linalg.norm(lab_stats(generated, hole)[0] - ring_mean)
    after = np.linalg.norm(lab_stats(match_color(generated, original, mask), hole)[0] - ring_mean)
    assert before > 10
    assert after < 0.1 * before


def test_region_std_matches_the_ring_std():
    # A high-contrast region over a low-contrast surrounding: after matching each LAB channel's std
    # is within 10% of the ring's (uint8 rounding adds about 0.3 LAB units of noise; the ring's std is
    # several units), having started more than twice as large.
    mask = hole_mask()
    hole = mask >= 0.5
    original = textured((120, 110, 100), 10, seed=1)
    generated = textured((150, 90, 70), 45, seed=2)
    ring_mean, ring_std = lab_stats(original, ring_around(mask, 16))
    assert (lab_stats(generated, hole)[1] > 2 * ring_std).all()
    mean, std = lab_stats(match_color(generated, original, mask), hole)
    assert np.allclose(std, ring_std, rtol=0.1)
    assert np.abs(mean - ring_mean).max() < 1.0


def test_only_the_ring_is_the_reference():
    # Known pixels within 4 px of the hole are green, those farther out magenta: with ring=4 the
    # region must come out green.
    mask = hole_mask()
    hole = mask >= 0.5
    original = np.empty((64, 64, 3), dtype=np.uint8)
    original[:] = (200, 40, 200)
    left, top, right, bottom = BOX
    original[top - 4 : bottom + 4, left - 4 : right + 4] = (40, 200, 60)
    generated = gradient_image(64, 64, seed=3)
    matched = match_color(generated, original, mask, ring=4)[hole].astype(int)
    assert np.abs(matched - (40, 200, 60)).max() <= 2  # the ring is flat, so the region becomes flat too


def test_pixels_outside_the_mask_are_byte_identical_to_generated():
    mask = hole_mask()
    mask[0:6, 0:6] = 0.49  # soft values below 0.5 are known
    known = mask < 0.5
    generated = gradient_image(64, 64, seed=4)
    original = textured((60, 160, 200), 20, seed=5)
    matched = match_color(generated, original, mask)
    assert np.array_equal(matched[known], generated[known])
    assert not np.array_equal(matched[~known], generated[~known])  # and the region did change


def test_flat_region_is_only_shifted():
    # A one-colour region has no contrast to scale (std 0): it must become one colour, the ring's
    # mean, with no NaN or division blow-up.
    mask = hole_mask()
    hole = mask >= 0.5
    original = textured((120, 110, 100), 15, seed=6)
    generated = original.copy()
    generated[hole] = (30, 200, 40)
    matched = match_color(generated, original, mask)[hole]
    assert (matched == matched[0]).all()
    ring_mean, _ = lab_stats(original, ring_around(mask, 16))
    assert np.abs(to_lab(matched[None])[0, 0] - ring_mean).max() < 1.5


def test_empty_mask_and_full_mask_return_generated_unchanged():
    generated = gradient_image(32, 24, seed=7)
    original = gradient_image(32, 24, seed=8)
    for mask in (np.zeros((24, 32), dtype=np.float32), np.ones((24, 32), dtype=np.float32)):
        matched = match_color(generated, original, mask)
        assert np.array_equal(matched, generated)
        assert not np.shares_memory(matched, generated)
