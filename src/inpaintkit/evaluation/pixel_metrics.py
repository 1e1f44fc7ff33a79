"""Pixel metrics of an inpainted image against its input (the background) and its ground truth (the hole).

Conventions (BrushBench's, TencentARC/BrushNet): pixel values are scaled to [0, 1]; MSE is the mean
squared difference over the pixels *and channels* of the region only (not over the whole image with
the other region zeroed); PSNR = 10 log10(1 / MSE), +inf when MSE is 0. The background is where the
user's mask is < 0.5, the hole where it is >= 0.5, before any --mask-grow or --mask-blur, so a blur
band that changes background pixels is counted against the method. Background SSIM: the hole is
set to black in both images (BrushBench's masking), then the standard 11x11-Gaussian (sigma 1.5)
SSIM map (torchmetrics) is averaged over the background pixels, so an untouched background scores
exactly 1 whatever the hole holds.
"""

from __future__ import annotations

import math

import numpy as np

NAN = float("nan")


def region_mse(prediction: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """Mean squared difference over `region` (HxW bool) of two HxWx3 uint8 images, in [0, 1] units; NaN if empty."""
    if not region.any():
        return NAN
    difference = prediction[region].astype(np.float64) - reference[region].astype(np.float64)
    return float(np.mean((difference / 255.0) ** 2))


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for values in [0, 1] (MAX = 1)."""
    if math.isnan(mse):
        return NAN
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def region_ssim(prediction: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """SSIM of `region`: both images black outside it, the SSIM map averaged over it; NaN if it is empty."""
    if not region.any():
        return NAN
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    def tensor(image: np.ndarray) -> torch.Tensor:
        kept = np.where(region[..., None], image, 0)
        return torch.from_numpy(kept).permute(2, 0, 1)[None].double() / 255.0

    _, ssim_map = structural_similarity_index_measure(
        tensor(prediction), tensor(reference), data_range=1.0, return_full_image=True, reduction="none"
    )
    per_pixel = ssim_map[0].mean(dim=0).numpy()  # the three channels' SSIM, averaged
    return float(per_pixel[region].mean())
