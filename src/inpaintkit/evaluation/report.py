"""summary.json, report.md and one bar chart per metric, from the metrics table and the KID results."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from ..io import atomic_file, write_text_atomic
from .learned_metrics import KidResult
from .pixel_metrics import __doc__ as PIXEL_CONVENTIONS
from .scoring import METRICS, MetricsTable, summarize

KID_CONVENTION = (
    "KID (torchmetrics KernelInceptionDistance, 100 random subsets, polynomial kernel) compares each method's "
    "crops of the mask's bounding box, resized to 299x299, with the ground truth's crops when every sample has "
    "a ground truth and with the input's crops otherwise; lower is better. The subset size is half the samples "
    "(at least 2, at most 1000); the subsets are drawn with a fixed seed."
)
GRIDS_SHOWN = 8


@dataclass
class Skip:
    sample: str
    reason: str
    method: Optional[str] = None  # None: the whole sample was skipped


@dataclass
class Outcome:
    """What an evaluation produced, for the summary and the report."""

    methods: list[str]
    evaluated: list[str]  # sample names that loaded
    skipped: list[Skip] = field(default_factory=list)
    kid: dict[str, KidResult] = field(default_factory=dict)
    kid_errors: dict[str, str] = field(default_factory=dict)  # method -> why KID could not be computed
    kid_reference: Optional[str] = None  # "ground truth" or "input": what the methods' crops were compared with
    unavailable: dict[str, str] = field(default_factory=dict)  # metric family -> reason
    grids: list[str] = field(default_factory=list)  # grid files, relative to dst


def build_summary(table: Optional[MetricsTable], outcome: Outcome, info: dict[str, Any]) -> dict[str, Any]:
    samples = set(outcome.evaluated)
    metrics: dict[str, dict[str, Any]] = {}
    for method in outcome.methods:
        metrics[method] = (
            {metric.name: summarize(table.values(method, metric.name, samples)) for metric in METRICS} if table else {}
        )
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **info,
        "methods": outcome.methods,
        "samples_evaluated": len(outcome.evaluated),
        "skipped": [asdict(skip) for skip in outcome.skipped],
        "metrics": metrics,
        "best": best_methods(metrics),
        "kid": {method: asdict(result) for method, result in outcome.kid.items()},
        "kid_errors": outcome.kid_errors,
        "kid_reference": outcome.kid_reference,
        "unavailable": outcome.unavailable,
        "conventions": {"pixel": " ".join(PIXEL_CONVENTIONS.split()), "kid": KID_CONVENTION},
    }


def best_methods(metrics: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """For each metric, the method(s) with the best mean (ties share the title); only with two or more methods."""
    best: dict[str, list[str]] = {}
    for metric in METRICS:
        means = {
            method: values[metric.name]["mean"]
            for method, values in metrics.items()
            if values.get(metric.name, {}).get("mean") is not None
        }
        if len(means) < 2:
            continue
        target = max(means.values()) if metric.higher_is_better else min(means.values())
        best[metric.name] = [method for method, mean in means.items() if mean == target]
    return best


def write_summary(dst: Path, summary: dict[str, Any]) -> None:
    write_text_atomic(dst / "summary.json", json.dumps(_finite(summary), indent=2) + "\n")


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: they are written as the strings 'inf', '-inf', 'nan'."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def write_charts(dst: Path, summary: dict[str, Any]) -> list[str]:
    """One bar chart (mean with a std error bar per method) per metric that has values; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (dst / "charts").mkdir(exist_ok=True)
    charts = []
    for metric in METRICS:
        stats = {method: values.get(metric.name, {}) for method, values in summary["metrics"].items()}
        stats = {method: stat for method, stat in stats.items() if stat.get("mean") is not None}
        if not stats:
            continue
        figure, axes = plt.subplots(figsize=(max(3.6, 1.2 + 1.1 * len(stats)), 3.4), dpi=100)
        names = list(stats)
        means = [stat["mean"] for stat in stats.values()]
        finite = [mean if math.isfinite(mean) else 0.0 for mean in means]
        errors = [stat["std"] or 0.0 for stat in stats.values()]
        best = set(summary["best"].get(metric.name, []))
        bars = axes.bar(
            names, finite, yerr=errors, capsize=4, color=["#2a9d8f" if name in best else "#8ab" for name in names]
        )
        for bar, mean in zip(bars, means):
            text = "∞ (identical)" if mean == math.inf else f"{mean:.4g}"
            axes.annotate(
                text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8
            )
        axes.set_title(f"{metric.label}\n({'higher' if metric.higher_is_better else 'lower'} is better)", fontsize=9)
        axes.tick_params(axis="x", labelsize=8)
        figure.tight_layout()
        target = dst / "charts" / f"{metric.name}.png"
        with atomic_file(target) as handle:
            figure.savefig(handle, format="png")
        plt.close(figure)
        charts.append(f"charts/{metric.name}.png")
    return charts


def write_report(dst: Path, summary: dict[str, Any], charts: list[str], grids: list[str]) -> None:
    lines = [f"# inpaintkit evaluation: {', '.join(summary['methods'])}", ""]
    lines += [f"- {key}: {value}" for key, value in _run_facts(summary)]
    lines += [
        "",
        "## Summary",
        "",
        "Mean ± std over the samples (population std); **bold** = best; ↑ higher is better, ↓ lower is better.",
        "",
    ]
    lines += _summary_table(summary)
    lines += _kid_section(summary)
    if summary["unavailable"]:
        lines += ["", "## Unavailable metrics", ""] + [
            f"- {family.upper()}: {reason}" for family, reason in summary["unavailable"].items()
        ]
    lines += ["", "## Conventions", "", summary["conventions"]["pixel"], "", summary["conventions"]["kid"]]
    if charts:
        lines += ["", "## Charts", ""] + [f"![{Path(chart).stem}]({chart})" for chart in charts]
    if summary["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [
            f"- {skip['sample']}{' / ' + skip['method'] if skip['method'] else ''}: {skip['reason']}"
            for skip in summary["skipped"]
        ]
    if grids:
        lines += [
            "",
            "## Comparison grids",
            "",
            f"input | mask (red) | ground truth if any | one column per method; all {len(grids)} in `grids/`.",
            "",
        ]
        lines += [f"![{Path(grid).stem}]({grid})" for grid in grids[:GRIDS_SHOWN]]
    write_text_atomic(dst / "report.md", "\n".join(lines) + "\n")


def _run_facts(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    facts = [("created", summary["created"]), ("samples evaluated", summary["samples_evaluated"])]
    facts += [(key, summary[key]) for key in ("source", "model", "device", "dtype") if summary.get(key)]
    if summary.get("settings"):
        given = {
            key: value for key, value in summary["settings"].items() if value is not None
        }  # None = the method's default
        facts.append(("settings (all methods)", ", ".join(f"{key}={value!r}" for key, value in given.items())))
    return facts


def _summary_table(summary: dict[str, Any]) -> list[str]:
    shown = [
        metric
        for metric in METRICS
        if any(values.get(metric.name, {}).get("n") for values in summary["metrics"].values())
    ]
    if not shown:
        return ["(no metrics computed: run with --metric)"]
    header = (
        "| method | "
        + " | ".join(f"{metric.label} {'↑' if metric.higher_is_better else '↓'}" for metric in shown)
        + " |"
    )
    lines = [header, "|---" * (len(shown) + 1) + "|"]
    for method, values in summary["metrics"].items():
        cells = [
            _cell(
                values.get(metric.name, {}),
                method in summary["best"].get(metric.name, []),
                summary["samples_evaluated"],
            )
            for metric in shown
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _cell(stat: dict[str, Any], best: bool, samples: int) -> str:
    """'mean ± std', bold if best, with the sample count when not every sample had a value (e.g. ground truth)."""
    if not stat.get("n"):
        return "–"
    mean, std = stat["mean"], stat["std"]
    text = "∞ (identical)" if mean == math.inf else f"{mean:.4g}" + ("" if std is None else f" ± {std:.2g}")
    text = f"**{text}**" if best else text
    if stat.get("identical") and mean != math.inf:
        text += f" (+{stat['identical']} identical)"
    return text if stat["n"] == samples else f"{text} (n={stat['n']})"


def _kid_section(summary: dict[str, Any]) -> list[str]:
    lines = ["", "## KID on the mask crops ↓", ""]
    if "kid" in summary["unavailable"]:
        return lines + [f"Unavailable: {summary['unavailable']['kid']}"]
    if not summary["kid"] and not summary["kid_errors"]:
        return lines + ["(not computed: run with --metric)"]
    lines += [f"Reference crops: the {summary['kid_reference']} images'.", ""]
    lines += ["| method | KID | subset size | samples |", "|---|---|---|---|"]
    lines += [
        f"| {method} | {result['mean']:.4g} ± {result['std']:.2g} | {result['subset_size']} | {result['samples']} |"
        for method, result in summary["kid"].items()
    ]
    lines += [f"| {method} | – ({reason}) | | |" for method, reason in summary["kid_errors"].items()]
    return lines
