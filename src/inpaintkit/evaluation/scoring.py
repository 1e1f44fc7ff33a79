"""Per-sample metric rows (metrics.csv) that survive interruption, and their per-method summary.

A cell is empty when it has not been computed yet (so a resumed run computes it), `nan` when the
metric does not apply (no ground truth, empty prompt, empty region), and a number otherwise. Each
row carries a digest of the pixels and prompt it was computed from: when the output, the input or
the prompt changes, the row is computed again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..io import write_text_atomic
from ..masks import bounding_box
from .learned_metrics import LearnedMetrics
from .pixel_metrics import psnr, region_mse, region_ssim
from .samples import Pixels

log = logging.getLogger("inpaintkit")


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
COLUMNS = (*KEY_COLUMNS, *(metric.name for metric in METRICS), "digest")


def content_digest(pixels: Pixels, prompt: str, output: np.ndarray) -> str:
    """What a row's values depend on: input, mask, ground truth, prompt and output (SHA-1, 16 hex digits)."""
    digest = hashlib.sha1(prompt.encode("utf-8"))
    for array in (pixels.image, pixels.mask, pixels.target, output):
        if array is not None:
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def score(
    output: np.ndarray, pixels: Pixels, prompt: str, wanted: set[str], learned: Optional[LearnedMetrics]
) -> dict[str, float]:
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
        values["clip_score_crop"] = learned.clip(output[box], prompt) if applies and box else math.nan
    return {name: value for name, value in values.items() if name in wanted}


class MetricsTable:
    """metrics.csv: one row per (sample, method), rewritten atomically after every change."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[tuple[str, str], dict[str, str]] = {}
        if not path.is_file():
            return
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            log.warning("%s is unreadable (%s); every metric is computed again.", path, error)
            return
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as error:  # e.g. another tool's metrics.csv with a huge field, in --pred
            log.warning("%s is unreadable (%s); every metric is computed again.", path, error)
            return
        for row in rows:
            key = (row.get("sample"), row.get("method"))
            if all(isinstance(part, str) and part for part in key):  # a row cut off mid-key is dropped
                self.rows[key] = {column: row.get(column) or "" for column in COLUMNS}  # type: ignore[index]

    def keep_if_current(self, sample: str, method: str, digest: str) -> None:
        """Drop the row if it was computed from other pixels or another prompt."""
        row = self.rows.get((sample, method))
        if row is not None and row.get("digest") != digest:
            del self.rows[(sample, method)]

    def missing(self, sample: str, method: str, wanted: set[str]) -> set[str]:
        """The wanted metrics this row does not hold yet (an unreadable cell counts as missing)."""
        row = self.rows.get((sample, method), {})
        return {name for name in wanted if parse_value(row.get(name, "")) is None}

    def update(self, sample: str, method: str, values: dict[str, float], digest: str) -> None:
        row = self.rows.setdefault((sample, method), {column: "" for column in COLUMNS})
        row.update(sample=sample, method=method, digest=digest)
        row.update({name: format_value(value) for name, value in values.items()})

    def save(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for key in sorted(self.rows):
            writer.writerow(self.rows[key])
        write_text_atomic(self.path, buffer.getvalue())

    def values(self, method: str, metric: str, samples: set[str]) -> list[float]:
        """The numbers this method got on `metric` over `samples` (not-applicable and missing cells left out)."""
        cells = (
            row.get(metric, "") for (sample, owner), row in self.rows.items() if owner == method and sample in samples
        )
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
    """Mean and population std (ddof 0) over the samples.

    +inf (the PSNR of an identical region) cannot be averaged with numbers: the mean and std are then
    over the finite values, `identical` counts the others, and only an all-identical method's mean is inf.
    """
    if not values:
        return {"mean": None, "std": None, "n": 0, "identical": 0}
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    identical = int(np.isposinf(array).sum())
    if finite.size == 0:
        return {"mean": math.inf, "std": None, "n": len(values), "identical": identical}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": len(values), "identical": identical}
