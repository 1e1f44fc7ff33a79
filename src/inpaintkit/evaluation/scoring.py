"""Per-sample metric rows (metrics.csv) that survive interruption, and their per-method summary.

A cell is empty when it has not been computed yet (so a resumed run computes it), `nan` when the
metric does not apply (no ground truth, empty prompt, empty region), and a number otherwise.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..io import write_text_atomic
from .learned_metrics import LearnedMetrics
from .pixel_metrics import bounding_box, crop, psnr, region_mse, region_ssim
from .samples import Pixels


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    family: str  # "pixel", "clip" (needs the CLIP model) or "run" (measured while generating)


METRICS = (
    Metric("background_mse", "background MSE", False, "pixel"),
    Metric("background_psnr", "background PSNR (dB)", True, "pixel"),
    Metric("background_ssim", "background SSIM", True, "pixel"),
    Metric("clip_score", "CLIP score (full image)", True, "clip"),
    Metric("clip_score_crop", "CLIP score (mask crop)", True, "clip"),
    Metric("masked_mse", "MSE in the mask vs ground truth", False, "pixel"),
    Metric("masked_psnr", "PSNR in the mask vs ground truth (dB)", True, "pixel"),
    Metric("seconds", "seconds per image", False, "run"),
    Metric("peak_memory_mb", "peak memory (MB)", False, "run"),
)
METRIC_BY_NAME = {metric.name: metric for metric in METRICS}
KEY_COLUMNS = ("sample", "method")
COLUMNS = (*KEY_COLUMNS, *(metric.name for metric in METRICS))


def score(output: np.ndarray, pixels: Pixels, prompt: str, wanted: set[str], learned: Optional[LearnedMetrics]) -> dict[str, float]:
    """The wanted metrics of one output (HxWx3 uint8) against its sample; CLIP ones only if a scorer is loaded."""
    hole = pixels.hole
    background = ~hole
    values: dict[str, float] = {}
    if wanted & {"background_mse", "background_psnr"}:
        mse = region_mse(output, pixels.image, background)
        values.update(background_mse=mse, background_psnr=psnr(mse))
    if "background_ssim" in wanted:
        values["background_ssim"] = region_ssim(output, pixels.image, background)
    if wanted & {"masked_mse", "masked_psnr"}:
        mse = math.nan if pixels.target is None else region_mse(output, pixels.target, hole)
        values.update(masked_mse=mse, masked_psnr=psnr(mse))
    if learned is not None and learned.clip is not None and wanted & {"clip_score", "clip_score_crop"}:
        box = bounding_box(hole)
        applies = bool(prompt.strip())
        values["clip_score"] = learned.clip(output, prompt) if applies else math.nan
        values["clip_score_crop"] = learned.clip(crop(output, box), prompt) if applies and box else math.nan
    return {name: value for name, value in values.items() if name in wanted}


class MetricsTable:
    """metrics.csv: one row per (sample, method), rewritten atomically after every change."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[tuple[str, str], dict[str, str]] = {}
        if path.is_file():
            for row in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
                key = (row.get("sample", ""), row.get("method", ""))
                self.rows[key] = {column: row.get(column) or "" for column in COLUMNS}

    def missing(self, sample: str, method: str, wanted: set[str]) -> set[str]:
        """The wanted metrics this row does not hold yet."""
        row = self.rows.get((sample, method), {})
        return {name for name in wanted if not row.get(name)}

    def update(self, sample: str, method: str, values: dict[str, float]) -> None:
        row = self.rows.setdefault((sample, method), {column: "" for column in COLUMNS})
        row.update(sample=sample, method=method)
        row.update({name: format_value(value) for name, value in values.items()})

    def forget(self, sample: str, method: str) -> None:
        """Drop a row whose output was just regenerated: its old values describe another image."""
        self.rows.pop((sample, method), None)

    def save(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for key in sorted(self.rows):
            writer.writerow(self.rows[key])
        write_text_atomic(self.path, buffer.getvalue())

    def values(self, method: str, metric: str, samples: set[str]) -> list[float]:
        """The numbers this method got on `metric` over `samples` (not-applicable and missing cells left out)."""
        cells = (row.get(metric, "") for (sample, owner), row in self.rows.items() if owner == method and sample in samples)
        return [value for value in (parse_value(cell) for cell in cells) if value is not None and not math.isnan(value)]


def format_value(value: float) -> str:
    """repr keeps every bit, so a resumed run writes the same file; inf and nan are spelled out."""
    return repr(float(value)) if math.isfinite(value) else str(float(value))


def parse_value(cell: str) -> Optional[float]:
    if not cell:
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """Mean and population std (ddof 0) over the samples; +inf (e.g. PSNR of an identical background) stays +inf."""
    if not values:
        return {"mean": None, "std": None, "n": 0}
    array = np.asarray(values, dtype=np.float64)
    if np.isinf(array).any():
        return {"mean": float(array.mean()), "std": None, "n": len(values)}
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(values)}
