"""Pixel-space work after decoding."""

from __future__ import annotations

import numpy as np

from .masks import bounding_box


def paste_back(generated: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Alpha-blend generated over original pixels (HxWx3 uint8) with an HxW weight in [0, 1].

    Where the weight is exactly 0 the result is the original, byte for byte (it is never written there).
    """
    result = original.copy()
    box = bounding_box(weight > 0)  # a small mask on a big photo: blend only there
    if box is None:
        return result
    alpha = weight[box][:, :, None].astype(np.float32)
    blended = alpha * generated[box].astype(np.float32) + (1.0 - alpha) * original[box].astype(np.float32)
    blended = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    result[box] = np.where(alpha > 0, blended, original[box])  # inside the box, weight-0 pixels stay untouched too
    return result


def poisson_blend(generated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Seamless cloning (Pérez et al. 2003, OpenCV NORMAL_CLONE) of the generated masked region into the original."""
    import cv2

    binary = (mask >= 0.5).astype(np.uint8) * 255
    if not binary.any():
        return generated.copy()
    margin = 2  # seamlessClone needs the region away from the image border
    source = np.pad(generated, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    target = np.pad(original, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    binary = np.pad(binary, margin)
    x, y, width, height = cv2.boundingRect(binary)
    blended = cv2.seamlessClone(source, target, binary, (x + width // 2, y + height // 2), cv2.NORMAL_CLONE)
    return blended[margin:-margin, margin:-margin]
