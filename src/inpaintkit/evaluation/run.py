"""The evaluation loop shared by `bench` (generate, then score) and `metrics` (score existing outputs).

Per sample: load it (a broken one is reported and skipped), make or find each method's output,
score what metrics.csv does not hold yet, save metrics.csv, draw the sample's grid. Then KID per
method, summary.json, the charts and report.md. Every file is written atomically, so an
interruption loses at most the output in flight, and a re-run picks up where it stopped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..io import atomic_file, open_image, read_png_parameters, save_png, to_rgb_array
from ..masks import bounding_box
from .grid import comparison_grid, grid_metadata, mask_overlay
from .learned_metrics import LearnedMetrics, kernel_inception_distance, kid_crop
from .report import Outcome, Skip, build_summary, write_charts, write_report, write_summary
from .samples import Pixels, Sample
from .scoring import METRICS, MetricsTable, content_digest, score

log = logging.getLogger("inpaintkit")

# Makes one method's output for a sample: the image and the parameters to store in its PNG.
Generate = Callable[[Sample, Pixels, str], tuple[Image.Image, dict[str, Any]]]
# Reports one finished (sample, method): the output path and a short status.
OnOutput = Callable[[Path, str], None]


@dataclass
class Evaluation:
    samples: list[Sample]
    methods: list[str]
    dst: Path
    prediction_path: Callable[[str, str], Path]  # (sample, method) -> where its output is
    generate: Optional[Generate] = None  # None: only score existing outputs
    fingerprint: Optional[dict[str, Any]] = (
        None  # what made the outputs (bench): an output made otherwise is made again
    )
    learned: Optional[LearnedMetrics] = None  # None: no metrics at all (bench without --metric)
    overwrite: bool = False  # regenerate outputs that exist
    info: dict[str, Any] = field(default_factory=dict)  # model, source, settings: for the report


def evaluate(evaluation: Evaluation, on_output: OnOutput) -> dict[str, Any]:
    """Run the evaluation and write its files; returns the summary."""
    dst = evaluation.dst
    table = MetricsTable(dst / "metrics.csv") if evaluation.learned is not None else None
    outcome = Outcome(methods=list(evaluation.methods), evaluated=[])
    crops = KidCrops()
    (dst / "grids").mkdir(parents=True, exist_ok=True)
    for sample in evaluation.samples:
        try:
            pixels = sample.load()
        except InputError as error:
            _skip(outcome, Skip(sample.name, str(error)))
            for method in evaluation.methods:
                on_output(evaluation.prediction_path(sample.name, method), "skipped")
            continue
        outcome.evaluated.append(sample.name)
        outputs = {
            method: _output(evaluation, sample, pixels, method, table, outcome, on_output)
            for method in evaluation.methods
        }
        if table is not None:
            table.save()
        try:
            outcome.grids.append(_write_grid(dst, sample.name, pixels, outputs))
        except InputError as error:  # e.g. a name too long for the file system: the run goes on
            log.warning("no grid for %s: %s", sample.name, error)
        if evaluation.learned is not None and evaluation.learned.kid_features is not None:
            crops.add(pixels, outputs)  # 299x299 crops per sample and method: kept only when KID will use them
    if evaluation.learned is not None:
        outcome.unavailable = dict(evaluation.learned.unavailable)
        if evaluation.learned.kid_features is not None:
            _kid(evaluation.learned, crops, outcome)
    summary = build_summary(table, outcome, evaluation.info)
    write_summary(dst, summary)
    charts = write_charts(dst, summary) if table is not None else []
    write_report(dst, summary, charts, outcome.grids)
    return summary


def _output(
    evaluation: Evaluation, sample: Sample, pixels: Pixels, method: str, table, outcome: Outcome, on_output: OnOutput
) -> Optional[np.ndarray]:
    """One method's output for a sample (made if needed), scored into the table; None if it could not be had."""
    path = evaluation.prediction_path(sample.name, method)
    try:
        if evaluation.generate is None:
            output, status = _checked_output(path, pixels), "existing"
        else:
            output, status = _made_or_kept(evaluation, sample, pixels, method, path)
    except InputError as error:  # this output only: the run goes on
        _skip(outcome, Skip(sample.name, str(error), method))
        on_output(path, "skipped")
        return None
    if table is not None:
        _score_into(table, sample, pixels, method, output, path, evaluation.learned)
    on_output(path, status)
    return output


def _made_or_kept(
    evaluation: Evaluation, sample: Sample, pixels: Pixels, method: str, path: Path
) -> tuple[np.ndarray, str]:
    """The output of an earlier run with the same fingerprint, or a new one (written atomically)."""
    existing = None if evaluation.overwrite else _read_output(path, pixels, evaluation.fingerprint)
    if existing is not None:
        return existing, "existing"
    try:
        image, parameters = evaluation.generate(sample, pixels, method)
    except (MemoryError, torch.OutOfMemoryError):  # one huge sample must not end a long run
        _free_cuda_cache()
        raise InputError("out of memory (try --crop-padding or a smaller image)") from None
    save_png(image, path, {**parameters, "bench_run": evaluation.fingerprint}, overwrite=True)
    return to_rgb_array(image), f"generated in {parameters['seconds']:.2f} s"


def _read_output(path: Path, pixels: Pixels, fingerprint: Optional[dict[str, Any]]) -> Optional[np.ndarray]:
    """An existing output to resume from, or None if it is missing, unusable or made by another run (then it is made
    again).
    """
    if not path.is_file():
        return None
    try:
        output = _checked_output(path, pixels)
    except InputError as error:
        log.warning("%s is unusable (%s); making it again.", path, error)
        return None
    if read_png_parameters(path).get("bench_run") != fingerprint:
        log.warning("%s was made with other settings; making it again.", path)
        return None
    return output


def _checked_output(path: Path, pixels: Pixels) -> np.ndarray:
    output = to_rgb_array(open_image(path, "prediction"))
    if output.shape != pixels.image.shape:
        raise InputError(
            f"the prediction {path} is {output.shape[1]}x{output.shape[0]} pixels but the image is "
            f"{pixels.image.shape[1]}x{pixels.image.shape[0]}"
        )
    return output


def _score_into(
    table: MetricsTable, sample: Sample, pixels: Pixels, method: str, output: np.ndarray, path: Path, learned
) -> None:
    digest = content_digest(pixels, sample.prompt, output)
    table.keep_if_current(sample.name, method, digest)
    missing = table.missing(sample.name, method, wanted_metrics(learned))
    if missing:
        table.update(sample.name, method, measure_output(output, pixels, sample.prompt, path, missing, learned), digest)


def wanted_metrics(learned: LearnedMetrics) -> set[str]:
    """The metrics.csv cells one output gets: the pixel ones, CLIP's if its model loaded, and the run's own."""
    wanted = {
        metric.name
        for metric in METRICS
        if metric.family == "pixel" or (metric.family == "clip" and learned.clip is not None)
    }
    return wanted | {"seconds", "peak_memory_mb"}


def measure_output(
    output: np.ndarray, pixels: Pixels, prompt: str, path: Path, wanted: set[str], learned: Optional[LearnedMetrics]
) -> dict[str, float]:
    """The `wanted` per-sample metrics of one output; the timings come from its PNG (a Ray actor calls this too)."""
    values = score(output, pixels, prompt, wanted, learned)
    if wanted & {"seconds", "peak_memory_mb"}:
        values.update(_run_measurements(path))
    return values


def _run_measurements(path: Path) -> dict[str, float]:
    """Seconds and peak memory that `bench` stored in the output's PNG; nan for outputs made by other tools."""
    parameters = read_png_parameters(path)
    return {
        name: float(parameters.get(name) if parameters.get(name) is not None else math.nan)
        for name in ("seconds", "peak_memory_mb")
    }


def _write_grid(dst: Path, name: str, pixels: Pixels, outputs: dict[str, Optional[np.ndarray]]) -> str:
    columns: list[tuple[str, Optional[np.ndarray]]] = [
        ("input", pixels.image),
        ("mask", mask_overlay(pixels.image, pixels.hole)),
    ]
    if pixels.target is not None:
        columns.append(("ground truth", pixels.target))
    columns += list(outputs.items())
    grid = comparison_grid(columns)
    with atomic_file(dst / "grids" / f"{name}.png") as handle:
        grid.save(handle, format="PNG", pnginfo=grid_metadata(grid))
    return f"grids/{name}.png"


class KidCrops:
    """The mask-box crops KID compares: the reference (ground truth, or the input) and each method's."""

    def __init__(self):
        self.inputs: list[np.ndarray] = []
        self.truths: list[Optional[np.ndarray]] = []
        self.outputs: dict[str, list[np.ndarray]] = {}

    def add(self, pixels: Pixels, outputs: dict[str, Optional[np.ndarray]]) -> None:
        box = bounding_box(pixels.hole)
        if box is None:
            return
        self.inputs.append(kid_crop(pixels.image[box]))
        self.truths.append(None if pixels.target is None else kid_crop(pixels.target[box]))
        for method, output in outputs.items():
            if output is not None:
                self.outputs.setdefault(method, []).append(kid_crop(output[box]))

    @property
    def against_truth(self) -> bool:
        return bool(self.truths) and all(truth is not None for truth in self.truths)

    def reference(self) -> list[np.ndarray]:
        return list(self.truths) if self.against_truth else self.inputs  # type: ignore[arg-type]


def _kid(learned: LearnedMetrics, crops: KidCrops, outcome: Outcome) -> None:
    reference = crops.reference()
    outcome.kid_reference = "ground truth" if crops.against_truth else "input"
    for method in outcome.methods:
        try:
            outcome.kid[method] = kernel_inception_distance(
                reference, crops.outputs.get(method, []), learned.kid_features, learned.device
            )
        except ValueError as error:  # too few samples
            outcome.kid_errors[method] = str(error)


def _free_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _skip(outcome: Outcome, skip: Skip) -> None:
    where = f"{skip.sample}" + (f" ({skip.method})" if skip.method else "")
    log.warning("skipped %s: %s", where, skip.reason)
    outcome.skipped.append(skip)
