"""A labelled comparison grid per sample: input | mask | (ground truth) | one column per method."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

TILE_HEIGHT = 256
LABEL_HEIGHT = 28
GAP = 4
BACKGROUND = (255, 255, 255)
MASK_TINT = np.array([255, 0, 0], dtype=np.float32)


def mask_overlay(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The input with the repaint region tinted red at 50%, so the mask is seen in place."""
    shown = image.astype(np.float32)
    shown[hole] = 0.5 * shown[hole] + 0.5 * MASK_TINT
    return shown.round().astype(np.uint8)


def comparison_grid(columns: list[tuple[str, Optional[np.ndarray]]]) -> Image.Image:
    """Tiles side by side under their labels; a None tile (a missing output) is drawn grey. The labels are
    also stored in the PNG text chunk 'columns' (JSON), so a reader can tell the columns apart."""
    height, width = next(tile.shape[:2] for _, tile in columns if tile is not None)
    tile_width = max(1, round(width * TILE_HEIGHT / height))
    grid = Image.new("RGB", (len(columns) * (tile_width + GAP) - GAP, LABEL_HEIGHT + TILE_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=16)
    for index, (label, tile) in enumerate(columns):
        left = index * (tile_width + GAP)
        draw.text((left + 4, 4), _fit(draw, label, font, tile_width - 8), fill=(0, 0, 0), font=font)
        if tile is None:
            grid.paste((160, 160, 160), (left, LABEL_HEIGHT, left + tile_width, LABEL_HEIGHT + TILE_HEIGHT))
        else:
            # Small images are enlarged with nearest-neighbour, so their pixels stay visible as pixels.
            resample = Image.Resampling.NEAREST if TILE_HEIGHT >= 2 * height else Image.Resampling.LANCZOS
            resized = Image.fromarray(tile).resize((tile_width, TILE_HEIGHT), resample)
            grid.paste(resized, (left, LABEL_HEIGHT))
    grid.info["columns"] = json.dumps([label for label, _ in columns])
    return grid


def grid_metadata(grid: Image.Image) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("columns", grid.info["columns"])
    return info


def _fit(draw: ImageDraw.ImageDraw, label: str, font, width: int) -> str:
    """The label, shortened with an ellipsis if it is wider than its column."""
    if draw.textlength(label, font=font) <= width:
        return label
    while label and draw.textlength(label + "…", font=font) > width:
        label = label[:-1]
    return label + "…"
