"""`inpaintkit bench` and `inpaintkit metrics` end to end on a tiny model and a generated dataset."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inpaintkit.inpainter import Inpainter

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli

SIZE = 64
TILE = 256  # the grid's tile height: a 64 px sample is enlarged 4x with nearest-neighbour
LABEL = 28  # the grid's label band
GAP = 4


def write_dataset(folder: Path) -> Path:
    """Three good samples (one with a ground truth) and one file that is not an image."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(["a", "b", "c"]):
        Image.fromarray(gradient_image(SIZE, SIZE, seed=index)).save(folder / f"{name}.png")
        Image.fromarray(box_mask(SIZE, SIZE, (12 + 4 * index, 16, 44, 48))).save(folder / f"{name}.mask.png")
        (folder / f"{name}.txt").write_text("a red ball\n")
    Image.fromarray(gradient_image(SIZE, SIZE, seed=7)).save(folder / "b.gt.png")
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    Image.fromarray(box_mask(SIZE, SIZE, (0, 0, 8, 8))).save(folder / "broken.mask.png")
    return folder


def bench_args(dataset: Path, dst: Path, model: Path, clip: Path, *extra) -> list:
    return [
        "bench",
        "--pipeline",
        "blend,native",
        "--src",
        dataset,
        "--dst",
        dst,
        "--model",
        model,
        "--device",
        "cpu",
        "--steps",
        "2",
        "--metric",
        "--clip-model",
        clip,
        "--kid-features",
        "clip",
        "--quiet",
        *extra,
    ]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny9, tiny_clip):
    """One complete bench run, shared by the tests that only read its files."""
    root = tmp_path_factory.mktemp("bench")
    dataset = write_dataset(root / "dataset")
    dst = root / "results"
    from _pytest.capture import CaptureFixture  # noqa: F401  (run_cli needs capsys; call main directly instead)

    from inpaintkit.cli import main

    assert main([str(arg) for arg in bench_args(dataset, dst, tiny9, tiny_clip)]) == 0
    return dataset, dst


def test_bench_writes_one_output_per_sample_and_method(finished):
    dataset, dst = finished
    for method in ("blend", "native"):
        assert sorted(path.name for path in (dst / method).glob("*.png")) == ["a.png", "b.png", "c.png"]
        for name in "abc":
            output = np.asarray(Image.open(dst / method / f"{name}.png").convert("RGB"))
            source = np.asarray(Image.open(dataset / f"{name}.png"))
            hole = np.asarray(Image.open(dataset / f"{name}.mask.png")) >= 128
            assert np.array_equal(output[~hole], source[~hole])  # paste-back: background byte-identical
            assert not np.array_equal(output[hole], source[hole])


def test_every_method_gets_the_same_seed_and_settings(finished):
    _, dst = finished
    from inpaintkit.io import read_png_parameters

    blend = read_png_parameters(dst / "blend" / "a.png")
    native = read_png_parameters(dst / "native" / "a.png")
    assert blend["seed"] == native["seed"] == 0  # the default fixed seed
    assert (blend["method"], native["method"]) == ("blend", "native")
    shared = {key for key in blend if key not in ("method", "seconds", "peak_memory_mb")}
    assert {key: blend[key] for key in shared} == {key: native[key] for key in shared}
    assert blend["seconds"] > 0 and blend["peak_memory_mb"] > 0


def test_metrics_csv_has_a_row_per_sample_and_method_with_the_expected_values(finished):
    dataset, dst = finished
    rows = {(row["sample"], row["method"]): row for row in read_rows(dst / "metrics.csv")}
    assert set(rows) == {(name, method) for name in "abc" for method in ("blend", "native")}
    for (name, method), row in rows.items():
        assert float(row["background_mse"]) == 0.0 and row["background_psnr"] == "inf"
        assert float(row["background_ssim"]) == pytest.approx(1.0, abs=1e-9)  # untouched background
        assert 0.0 <= float(row["clip_score"]) <= 100.0 and 0.0 <= float(row["clip_score_crop"]) <= 100.0
        assert float(row["seconds"]) > 0
        # masked metrics only where there is a ground truth (b): recomputed here by hand
        if name == "b":
            output = np.asarray(Image.open(dst / method / "b.png").convert("RGB")).astype(np.float64)
            truth = np.asarray(Image.open(dataset / "b.gt.png")).astype(np.float64)
            hole = np.asarray(Image.open(dataset / "b.mask.png")) >= 128
            expected = np.mean(((output[hole] - truth[hole]) / 255) ** 2)
            assert float(row["masked_mse"]) == pytest.approx(expected, rel=1e-12)
            assert float(row["masked_psnr"]) == pytest.approx(10 * math.log10(1 / expected), rel=1e-12)
        else:
            assert row["masked_mse"] == "nan" and row["masked_psnr"] == "nan"


def test_summary_aggregates_per_method_and_reports_kid_and_the_skipped_sample(finished):
    _, dst = finished
    summary = json.loads((dst / "summary.json").read_text())
    assert summary["samples_evaluated"] == 3
    assert summary["skipped"] == [{"sample": "broken", "reason": summary["skipped"][0]["reason"], "method": None}]
    assert "not an image format" in summary["skipped"][0]["reason"]
    rows = read_rows(dst / "metrics.csv")
    for method in ("blend", "native"):
        ssims = [float(row["background_ssim"]) for row in rows if row["method"] == method]
        stat = summary["metrics"][method]["background_ssim"]
        assert stat["mean"] == pytest.approx(np.mean(ssims), rel=1e-12) and stat["n"] == 3
        assert summary["metrics"][method]["background_psnr"]["mean"] == "inf"
        assert summary["metrics"][method]["masked_mse"]["n"] == 1
        assert summary["kid"][method]["subset_size"] == 2 and summary["kid"][method]["samples"] == 3
    assert summary["unavailable"] == {}
    assert summary["kid_reference"] == "input"  # only b has a ground truth, so KID compares with the inputs' crops


def test_report_has_the_table_charts_and_grids(finished):
    _, dst = finished
    report = (dst / "report.md").read_text()
    assert "| blend |" in report and "| native |" in report
    assert "## KID on the mask crops" in report and "broken" in report
    charts = sorted(path.name for path in (dst / "charts").glob("*.png"))
    assert "background_ssim.png" in charts and "clip_score.png" in charts
    for chart in charts:
        assert f"charts/{chart}" in report
        assert Image.open(dst / "charts" / chart).size[0] > 100


def test_the_grid_has_one_labelled_column_per_method(finished):
    dataset, dst = finished
    grid = Image.open(dst / "grids" / "b.png")
    assert json.loads(grid.text["columns"]) == ["input", "mask", "ground truth", "blend", "native"]
    pixels = np.asarray(grid.convert("RGB"))
    assert grid.size == (5 * TILE + 4 * GAP, LABEL + TILE)
    for column, label in enumerate(["input", "mask", "ground truth", "blend", "native"]):
        left = column * (TILE + GAP)
        band = pixels[:LABEL, left : left + TILE]
        assert (band < 128).any(), f"no label text drawn above column {label}"
        if label in ("blend", "native"):
            output = np.asarray(Image.open(dst / label / "b.png").convert("RGB"))
            enlarged = output.repeat(4, axis=0).repeat(4, axis=1)  # nearest-neighbour 4x
            assert np.array_equal(pixels[LABEL:, left : left + TILE], enlarged)


def test_resuming_after_an_interruption_gives_the_same_metrics(tmp_path, tiny9, tiny_clip, capsys, monkeypatch):
    dataset = write_dataset(tmp_path / "dataset")
    dst = tmp_path / "results"
    calls = {"n": 0}
    original_run = Inpainter.run

    def interrupted_run(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the 2nd method of the 2nd sample: Ctrl-C while it runs
            raise KeyboardInterrupt
        return original_run(self, *args, **kwargs)

    monkeypatch.setattr(Inpainter, "run", interrupted_run)
    code, _, err = run_cli(bench_args(dataset, dst, tiny9, tiny_clip), capsys)
    assert code == 130 and "interrupted" in err
    written = sorted(str(path.relative_to(dst)) for path in dst.glob("*/*.png") if path.parent.name != "grids")
    assert written == ["blend/a.png", "blend/b.png", "native/a.png"]  # nothing half-written
    before = {path: path.stat().st_mtime_ns for path in (dst / "blend" / "a.png", dst / "native" / "a.png")}
    rows_before = {(row["sample"], row["method"]): row for row in read_rows(dst / "metrics.csv")}
    assert set(rows_before) == {("a", "blend"), ("a", "native")}  # saved after the finished sample

    monkeypatch.setattr(Inpainter, "run", original_run)
    code, _, _ = run_cli(bench_args(dataset, dst, tiny9, tiny_clip), capsys)
    assert code == 0
    assert {path: path.stat().st_mtime_ns for path in before} == before  # finished outputs were not made again
    resumed = {(row["sample"], row["method"]): row for row in read_rows(dst / "metrics.csv")}
    assert {key: resumed[key] for key in rows_before} == rows_before  # nor re-scored

    uninterrupted = tmp_path / "uninterrupted"
    assert run_cli(bench_args(dataset, uninterrupted, tiny9, tiny_clip), capsys)[0] == 0
    reference = {(row["sample"], row["method"]): row for row in read_rows(uninterrupted / "metrics.csv")}
    timing = ("seconds", "peak_memory_mb")  # measured, so they differ between two runs

    def without_timing(rows):
        return {
            key: {column: value for column, value in row.items() if column not in timing} for key, row in rows.items()
        }

    assert without_timing(resumed) == without_timing(reference)


def test_a_resume_with_other_settings_is_refused(finished, tiny9, tiny_clip, capsys):
    dataset, dst = finished
    code, _, err = run_cli(bench_args(dataset, dst, tiny9, tiny_clip)[:-1] + ["--steps", "3", "--quiet"], capsys)
    assert_one_line_error(code, err, "holds a run with other settings (steps)")


def test_run_json_holds_the_dtype_auto_resolved_to(finished, tiny9, tiny_clip, capsys):
    """`auto` is bf16 or fp32 depending on the CPU: a resume on another machine must not mix the two."""
    dataset, dst = finished
    assert json.loads((dst / "run.json").read_text())["dtype"] == "fp32"  # the suite pins auto to fp32 on a CPU
    assert json.loads((dst / "run.json").read_text())["device"] == "cpu"
    code, _, err = run_cli(bench_args(dataset, dst, tiny9, tiny_clip, "--dtype", "fp32"), capsys)
    assert code == 0, err  # the same run as auto, so it resumes
    code, _, err = run_cli(bench_args(dataset, dst, tiny9, tiny_clip, "--dtype", "bf16"), capsys)
    assert_one_line_error(code, err, "holds a run with other settings (dtype)")


def test_offline_learned_metrics_are_reported_unavailable_and_the_rest_still_runs(tmp_path, tiny9, capsys):
    dataset = write_dataset(tmp_path / "dataset")
    dst = tmp_path / "results"
    code, _, err = run_cli(bench_args(dataset, dst, tiny9, tmp_path / "missing-clip", "--limit", "2"), capsys)
    assert code == 0, err
    summary = json.loads((dst / "summary.json").read_text())
    assert "could not be loaded" in summary["unavailable"]["clip"]
    assert "needs the CLIP model" in summary["unavailable"]["kid"]
    assert summary["metrics"]["blend"]["background_mse"]["n"] == 2
    assert summary["metrics"]["blend"]["clip_score"]["n"] == 0
    assert "## Unavailable metrics" in (dst / "report.md").read_text()


def test_metrics_scores_outputs_made_elsewhere(finished, tmp_path, tiny_clip, capsys):
    dataset, dst = finished
    scored = tmp_path / "scored"
    code, out, err = run_cli(
        [
            "metrics",
            "--src",
            dataset,
            "--pred",
            dst,
            "--dst",
            scored,
            "--clip-model",
            tiny_clip,
            "--kid-features",
            "clip",
        ],
        capsys,
    )
    assert code == 0, err
    assert f"{scored / 'report.md'}\t3 samples, 1 skipped" in out
    assert read_rows(scored / "metrics.csv") == read_rows(dst / "metrics.csv")  # bench's timings come from the PNGs


def test_metrics_on_one_flat_folder_reports_a_wrong_sized_prediction(finished, tmp_path, capsys):
    dataset, dst = finished
    flat = tmp_path / "othertool"
    flat.mkdir()
    for name in "ab":  # re-saved without inpaintkit's metadata, as another tool would write them
        Image.open(dst / "blend" / f"{name}.png").convert("RGB").save(flat / f"{name}.png")
    Image.new("RGB", (10, 10)).save(flat / "c.png")
    code, _, err = run_cli(["metrics", "--src", dataset, "--pred", flat, "--clip-model", tmp_path / "none"], capsys)
    assert code == 0, err
    summary = json.loads((flat / "summary.json").read_text())
    assert summary["methods"] == ["othertool"]
    reasons = {(skip["sample"], skip["method"]): skip["reason"] for skip in summary["skipped"]}
    assert "10x10 pixels but the image is 64x64" in reasons[("c", "othertool")]
    rows = read_rows(flat / "metrics.csv")
    assert sorted(row["sample"] for row in rows) == ["a", "b"] and all(row["seconds"] == "nan" for row in rows)


@pytest.mark.parametrize(
    "change, phrase",
    [
        (["--pipeline", "blend,magic"], "Unknown method(s) magic in --pipeline"),
        (["--pipeline", "blend,blend"], "--pipeline names blend more than once"),
        (["--src", "/no/such/folder"], "--src /no/such/folder does not exist"),
        (["--limit", "0"], "argument --limit: must be at least 1, got 0"),
        (["--steps", "0"], "Steps must be"),
        (["--blend-start", "2"], "blend-start"),
    ],
)
def test_bad_bench_arguments_are_one_line_before_any_work(change, phrase, tmp_path, tiny9, capsys):
    dataset = write_dataset(tmp_path / "dataset")
    args = bench_args(dataset, tmp_path / "results", tiny9, tmp_path / "clip")
    for flag, value in zip(change[::2], change[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    if "bld" not in args[2] and change[0] == "--blend-start":
        args[2] = "blend,bld"
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, phrase)
    assert not list((tmp_path / "results").glob("*/*.png"))


def test_a_method_the_checkpoint_cannot_run_is_refused_before_any_output(tmp_path, tiny4, capsys):
    dataset = write_dataset(tmp_path / "dataset")
    args = bench_args(dataset, tmp_path / "results", tiny4, tmp_path / "clip")
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "needs a dedicated inpainting checkpoint")
    assert not list((tmp_path / "results").glob("*/*.png"))
    assert not (tmp_path / "results" / "run.json").exists()  # a run that never started does not bind the folder


def test_listing_with_a_bad_line_skips_only_that_sample(tmp_path, tiny9, capsys):
    dataset = write_dataset(tmp_path / "dataset")
    lines = [
        json.dumps({"image": "a.png", "mask": "a.mask.png", "prompt": "a cat", "name": "first"}),
        "{not json",
        json.dumps({"image": "c.png", "prompt": "no mask"}),
        json.dumps({"image": "b.png", "mask": "b.mask.png", "prompt": "a dog", "target": "b.gt.png"}),
        json.dumps({"image": "a.png", "mask": "c.mask.png", "prompt": "a second a", "name": "first"}),
        json.dumps({"image": "c.png", "mask": "small.mask.png", "prompt": "wrong mask size", "name": "wrongsize"}),
    ]
    Image.new("L", (32, 32), 255).save(dataset / "small.mask.png")
    (dataset / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    dst = tmp_path / "results"
    code, _, err = run_cli(
        ["bench", "--method", "blend", "--src", dataset, "--dst", dst, "--model", tiny9, "--steps", "1", "--quiet"],
        capsys,
    )
    assert code == 0, err
    assert sorted(path.name for path in (dst / "blend").glob("*.png")) == ["b.png", "first.png"]
    reasons = [skip["reason"] for skip in json.loads((dst / "summary.json").read_text())["skipped"]]
    assert any("line 2: not valid JSON" in reason for reason in reasons)
    assert any("line 3: no mask given" in reason for reason in reasons)
    assert any("line 5: sample name 'first' is used twice" in reason for reason in reasons)
    assert any("The mask is 32x32 pixels but the image is 64x64" in reason for reason in reasons)
    from inpaintkit.io import read_png_parameters

    assert read_png_parameters(dst / "blend" / "first.png")["prompt"] == "a cat"


def test_a_csv_listing_without_the_needed_columns_is_refused(tmp_path, tiny9, capsys):
    listing = tmp_path / "prompts.csv"
    listing.write_text("picture,prompt\na.png,cat\n")
    code, _, err = run_cli(
        ["bench", "--pipeline", "blend", "--src", listing, "--dst", tmp_path / "out", "--model", tiny9], capsys
    )
    assert_one_line_error(code, err, "needs a header with columns image, mask, prompt")


def test_a_sample_that_runs_out_of_memory_is_skipped_and_the_run_goes_on(tmp_path, tiny9, capsys, monkeypatch):
    dataset = write_dataset(tmp_path / "dataset")
    original_run = Inpainter.run

    def run_out_of_memory_on_b(self, image, *args, **kwargs):
        if np.array_equal(np.asarray(image), gradient_image(SIZE, SIZE, seed=1)):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original_run(self, image, *args, **kwargs)

    monkeypatch.setattr(Inpainter, "run", run_out_of_memory_on_b)
    dst = tmp_path / "results"
    code, _, err = run_cli(
        ["bench", "--pipeline", "blend", "--src", dataset, "--dst", dst, "--model", tiny9, "--steps", "1", "--quiet"],
        capsys,
    )
    assert code == 0, err
    assert sorted(path.name for path in (dst / "blend").glob("*.png")) == ["a.png", "c.png"]
    skipped = json.loads((dst / "summary.json").read_text())["skipped"]
    assert {
        "sample": "b",
        "method": "blend",
        "reason": "out of memory (try --crop-padding or a smaller image)",
    } in skipped


def test_an_interrupted_overwrite_resumed_remakes_every_old_output(tmp_path, tiny9, capsys, monkeypatch):
    dataset = write_dataset(tmp_path / "dataset")
    dst = tmp_path / "results"
    args = ["bench", "--pipeline", "blend", "--src", dataset, "--dst", dst, "--model", tiny9, "--steps", "1", "--quiet"]
    assert run_cli(args, capsys)[0] == 0  # seed 0 everywhere
    calls = {"n": 0}
    original_run = Inpainter.run

    def interrupted_run(self, *arguments, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original_run(self, *arguments, **kwargs)

    monkeypatch.setattr(Inpainter, "run", interrupted_run)
    assert run_cli(args + ["--seed", "1", "--overwrite"], capsys)[0] == 130  # a made again, then Ctrl-C
    monkeypatch.setattr(Inpainter, "run", original_run)
    assert run_cli(args + ["--seed", "1"], capsys)[0] == 0
    from inpaintkit.io import read_png_parameters

    assert [read_png_parameters(dst / "blend" / f"{name}.png")["seed"] for name in "abc"] == [1, 1, 1]


def test_metrics_are_computed_again_when_a_prediction_changes(finished, tmp_path, capsys):
    dataset, dst = finished
    pred = tmp_path / "pred" / "tool"
    pred.mkdir(parents=True)
    for name in "abc":
        Image.open(dst / "blend" / f"{name}.png").convert("RGB").save(pred / f"{name}.png")
    args = ["metrics", "--src", dataset, "--pred", pred.parent, "--clip-model", tmp_path / "none", "--quiet"]
    assert run_cli(args, capsys)[0] == 0
    shifted = np.asarray(Image.open(dataset / "a.png")).astype(np.int16)
    shifted = np.clip(shifted + 10, 0, 255).astype(np.uint8)  # the whole image changed: the background too
    Image.fromarray(shifted).save(pred / "a.png")
    assert run_cli(args, capsys)[0] == 0
    row = next(row for row in read_rows(pred.parent / "metrics.csv") if row["sample"] == "a")
    source = np.asarray(Image.open(dataset / "a.png")).astype(np.float64)
    hole = np.asarray(Image.open(dataset / "a.mask.png")) >= 128
    expected = np.mean(((shifted.astype(np.float64)[~hole] - source[~hole]) / 255) ** 2)
    assert float(row["background_mse"]) == pytest.approx(expected, rel=1e-12)


def test_folder_oddities_are_reported_per_sample(tmp_path, tiny9, capsys):
    dataset = write_dataset(tmp_path / "dataset")
    Image.fromarray(gradient_image(SIZE, SIZE, seed=5)).save(dataset / "a.jpg")  # a second image named a
    (dataset / "c.txt").write_bytes(b"caf\xe9")  # Latin-1, not UTF-8
    long_name = "L" * 240  # fits the file system; its temporary file's name is cut so that it fits too
    Image.fromarray(gradient_image(SIZE, SIZE, seed=6)).save(dataset / f"{long_name}.png")
    Image.fromarray(box_mask(SIZE, SIZE, (8, 8, 30, 30))).save(dataset / f"{long_name}.mask.png")
    dst = tmp_path / "results"
    code, _, err = run_cli(
        ["bench", "--pipeline", "blend", "--src", dataset, "--dst", dst, "--model", tiny9, "--steps", "1", "--quiet"],
        capsys,
    )
    assert code == 0, err
    reasons = {skip["sample"]: skip["reason"] for skip in json.loads((dst / "summary.json").read_text())["skipped"]}
    assert reasons["a.png"] == "a.png: another image is also named a"  # a.jpg sorts first and is the sample a
    assert reasons["c"] == "c.txt is not UTF-8 text"
    assert long_name not in reasons  # it used to be skipped after its work was done
    assert sorted(path.name for path in (dst / "blend").glob("*.png")) == sorted(["a.png", "b.png", f"{long_name}.png"])


def test_a_csv_listing_saved_with_a_byte_order_mark_is_read(tmp_path, tiny9, capsys):
    dataset = write_dataset(tmp_path / "dataset")
    (dataset / "prompts.csv").write_text("image,mask,prompt\na.png,a.mask.png,a cat\n", encoding="utf-8-sig")
    dst = tmp_path / "results"
    code, _, err = run_cli(
        ["bench", "--pipeline", "blend", "--src", dataset, "--dst", dst, "--model", tiny9, "--steps", "1", "--quiet"],
        capsys,
    )
    assert code == 0, err
    assert [path.name for path in (dst / "blend").glob("*.png")] == ["a.png"]


def test_metrics_with_a_mistyped_method_folder_is_refused(finished, tmp_path, capsys):
    dataset, dst = finished
    code, _, err = run_cli(
        ["metrics", "--src", dataset, "--pred", dst, "--method", "blnd", "--dst", tmp_path / "m"], capsys
    )
    assert_one_line_error(code, err, f"No prediction folder {dst / 'blnd'}; --method names subfolders of --pred")


def test_metrics_on_an_unknown_device_is_one_sentence(finished, tmp_path, capsys):
    dataset, dst = finished
    code, _, err = run_cli(
        ["metrics", "--src", dataset, "--pred", dst, "--dst", tmp_path / "m", "--device", "gpu"], capsys
    )
    assert_one_line_error(code, err, "Unknown device 'gpu'; use auto, cpu or cuda.")


def test_metrics_errors_name_the_flag_the_user_gave(finished, tmp_path, capsys):
    dataset, dst = finished
    code, _, err = run_cli(
        ["metrics", "--src", dataset, "--pred", dst, "--method", "blend,blend", "--dst", tmp_path / "m"], capsys
    )
    assert_one_line_error(code, err, "--method names blend more than once.")


@pytest.mark.parametrize("command", ["metrics", "bench"])
def test_scoring_without_the_eval_extra_is_refused_before_any_work(
    finished, tmp_path, tiny9, tiny_clip, capsys, monkeypatch, command
):
    import importlib.util

    dataset, dst = finished
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "torchmetrics" else real_find_spec(name, *args)
    )
    args = (
        ["metrics", "--src", dataset, "--pred", dst, "--dst", tmp_path / "m"]
        if command == "metrics"
        else bench_args(dataset, tmp_path / "out", tiny9, tiny_clip)
    )
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(
        code, err, "Scoring needs torchmetrics, which is not installed: pip install 'inpaintkit[eval]'."
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "m").exists()  # refused before any work


def test_an_unreadable_csv_listing_is_one_sentence(tmp_path, tiny9, capsys):
    dataset = write_dataset(tmp_path / "dataset")
    (dataset / "prompts.csv").write_text(
        'image,mask,prompt\na.png,a.mask.png,"' + "x" * 200_000 + '"\n', encoding="utf-8"
    )
    code, _, err = run_cli(
        ["bench", "--pipeline", "blend", "--src", dataset / "prompts.csv", "--dst", tmp_path / "out", "--model", tiny9],
        capsys,
    )
    assert_one_line_error(code, err, "prompts.csv is not a readable CSV (line")


def test_a_listing_row_without_an_image_is_reported_as_such(tmp_path, tiny9, capsys):
    dataset = write_dataset(tmp_path / "dataset")
    rows = [{"image": "a.png", "mask": "a.mask.png", "prompt": "x"}, {"mask": "b.mask.png"}, {"mask": "c.mask.png"}]
    (dataset / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    code, _, err = run_cli(
        [
            "bench",
            "--pipeline",
            "blend",
            "--src",
            dataset / "prompts.jsonl",
            "--dst",
            tmp_path / "out",
            "--model",
            tiny9,
            "--steps",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    # not "sample name 'dataset' is used twice": an empty image path once named the row after the listing's folder
    assert "prompts.jsonl line 2: no image given" in err and "prompts.jsonl line 3: no image given" in err


def test_another_tools_unreadable_metrics_csv_is_computed_again(finished, tmp_path, capsys):
    dataset, dst = finished
    target = tmp_path / "m"
    target.mkdir()
    (target / "metrics.csv").write_text('sample,method\n"' + "x" * 200_000 + '",blend\n', encoding="utf-8")
    code, _, err = run_cli(["metrics", "--src", dataset, "--pred", dst, "--dst", target], capsys)
    assert code == 0, err
    assert "is unreadable" in err and len(read_rows(target / "metrics.csv")) == len(read_rows(dst / "metrics.csv"))


def test_bench_applies_a_preset_to_what_was_not_given(tmp_path, tiny4, capsys):
    dataset = write_dataset(tmp_path / "dataset")
    dst = tmp_path / "results"
    code, _, err = run_cli(
        ["bench", "--pipeline", "blend", "--src", dataset, "--dst", dst, "--model", tiny4, "--preset", "lcm-lora",
         "--steps", "2", "--limit", "1", "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    settings = json.loads((dst / "run.json").read_text())["settings"]
    assert (settings["steps"], settings["guidance"], settings["scheduler"]) == (2, 1.0, "lcm")  # --steps typed: kept
