"""Pixel-space work after decoding."""

from __future__ import annotations

import numpy as np


def paste_back(generated: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Alpha-blend generated over original pixels (HxWx3 uint8) with an HxW weight in [0, 1].

    Where the weight is exactly 0 the result is the original, byte for byte.
    """
    alpha = weight[:, :, None].astype(np.float32)
    blended = alpha * generated.astype(np.float32) + (1.0 - alpha) * original.astype(np.float32)
    blended = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return np.where(alpha > 0, blended, original)
