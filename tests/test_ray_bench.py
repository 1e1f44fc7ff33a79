"""`inpaintkit bench --ray`: the same files as the single-process run, resumable, and a killed worker loses nothing.

One local Ray cluster (2 CPUs) serves the whole module: `--ray local` uses the session this process already has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inpaintkit.cli import main
from inpaintkit.errors import InputError

from .helpers import assert_one_line_error, run_cli
from .test_bench import bench_args, read_rows, write_dataset
from .test_pipe import write_pipe

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray Data on its own settings

METHODS = ("blend", "native")
NAMES = "abc"
TIMING = ("seconds", "peak_memory_mb")


@dataclass
class Crashes:
    """The cluster's test switches: while `once` exists, the first actor to take a row exits; while `poison` exists,
    every actor given the sample it names exits."""

    once: Path
    poison: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local 2-CPU cluster whose actors crash when the tests say so."""
    from inpaintkit.evaluation.cluster import CRASH_ON, CRASH_ONCE

    folder = tmp_path_factory.mktemp("ray")
    crashes = Crashes(folder / "crash-once", folder / "crash-on")
    os.environ[CRASH_ONCE] = str(crashes.once)  # before ray.init: the workers inherit the environment
    os.environ[CRASH_ON] = str(crashes.poison)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield crashes
    finally:
        ray.shutdown()
        os.environ.pop(CRASH_ONCE, None)
        os.environ.pop(CRASH_ON, None)


def no_scoring_here(*args, **kwargs):
    raise AssertionError("the driver scored an output that a Ray actor made")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny9, tiny_clip, cluster):
    """The dataset, a single-process run and a --ray run of it (whose driver may score nothing: the actors do)."""
    root = tmp_path_factory.mktemp("ray-bench")
    dataset = write_dataset(root / "dataset")
    local, clustered = root / "local", root / "ray"
    assert main([str(arg) for arg in bench_args(dataset, local, tiny9, tiny_clip)]) == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("inpaintkit.evaluation.run.score", no_scoring_here)  # the driver's process only
        assert main([str(arg) for arg in bench_args(dataset, clustered, tiny9, tiny_clip, "--ray", "local")]) == 0
    return dataset, local, clustered


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_same_outputs(expected, actual) -> None:
    for method in METHODS:
        assert sorted(path.name for path in (actual / method).iterdir()) == [f"{name}.png" for name in NAMES]
        for name in NAMES:
            assert np.array_equal(pixels(expected / method / f"{name}.png"), pixels(actual / method / f"{name}.png"))


def status_lines(out: str) -> dict[str, list[str]]:
    """PATH -> the statuses printed for it."""
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        path, _, status = line.partition("\t")
        lines.setdefault(path, []).append(status)
    return lines


def test_ray_run_makes_the_same_outputs_and_metrics_as_the_local_run(runs):
    _, local, clustered = runs
    assert_same_outputs(local, clustered)

    def untimed(dst):
        return [
            {key: value for key, value in row.items() if key not in TIMING} for row in read_rows(dst / "metrics.csv")
        ]

    assert untimed(clustered) == untimed(local)
    assert (clustered / "report.md").is_file() and (clustered / "summary.json").is_file()
    assert sorted(path.name for path in (clustered / "grids").iterdir()) == sorted(
        path.name for path in (local / "grids").iterdir()
    )


def test_resuming_a_half_finished_ray_run_makes_only_the_missing_outputs(runs, tmp_path, tiny9, tiny_clip, capsys):
    dataset, local, clustered = runs
    dst = tmp_path / "resumed"
    shutil.copytree(clustered, dst)
    missing = {dst / "blend" / "a.png", dst / "native" / "c.png"}
    for path in missing:
        path.unlink()
    kept = {path: path.stat().st_mtime_ns for method in METHODS for path in (dst / method).glob("*.png")}

    code, out, _ = run_cli(bench_args(dataset, dst, tiny9, tiny_clip, "--ray", "local"), capsys)

    assert code == 0
    lines = status_lines(out)
    for path in missing:
        assert len(lines[str(path)]) == 1 and lines[str(path)][0].startswith("generated in")
    for path, mtime in kept.items():
        assert lines[str(path)] == ["existing"] and path.stat().st_mtime_ns == mtime
    assert_same_outputs(local, dst)


def test_a_worker_killed_mid_run_loses_nothing_and_makes_each_output_once(
    runs, cluster, tmp_path, tiny9, tiny_clip, capsys
):
    dataset, local, _ = runs
    dst = tmp_path / "killed"
    cluster.once.touch()  # the first actor to take a row exits on the spot

    code, out, _ = run_cli(bench_args(dataset, dst, tiny9, tiny_clip, "--ray", "local", "--ray-workers", "2"), capsys)

    assert code == 0 and not cluster.once.exists()  # it did die
    assert_same_outputs(local, dst)
    lines = status_lines(out)
    for method in METHODS:
        for name in NAMES:
            statuses = lines[str(dst / method / f"{name}.png")]
            assert len(statuses) == 1 and statuses[0].startswith("generated in")
    assert not [path for path in dst.rglob("*.tmp")]  # no half-written file left behind
    assert len(read_rows(dst / "metrics.csv")) == len(METHODS) * len(NAMES)


def test_ray_flag_without_ray_installed_is_one_line(monkeypatch, tmp_path, tiny9, tiny_clip, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    dataset = write_dataset(tmp_path / "dataset")
    code, _, err = run_cli(bench_args(dataset, tmp_path / "out", tiny9, tiny_clip, "--ray", "local"), capsys)
    assert_one_line_error(code, err, "pip install 'inpaintkit[cluster]'")


def test_ray_workers_must_be_at_least_one(tmp_path, tiny9, tiny_clip, capsys):
    code, _, err = run_cli(bench_args(tmp_path, tmp_path / "out", tiny9, tiny_clip, "--ray-workers", "0"), capsys)
    assert code == 2 and "--ray-workers" in err


def untimed(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{key: value for key, value in row.items() if key not in TIMING} for row in rows]


def pipe_args(dst, images, masks, tiny9, tiny_clip, *extra) -> list:
    return [
        *bench_args("pipe:test", dst, tiny9, tiny_clip, "--pipe-images", images, "--pipe-masks", masks, *extra),
        "--limit",
        "2",
    ]


def test_pipe_read_on_the_cluster_into_an_object_store_gives_the_local_run_s_results(
    cluster, tmp_path, tiny9, tiny_clip, capsys
):
    """PIPE's rows reach the actors through ray.data.read_parquet (the actors are given no sample list for PIPE), and
    the results go to a `file://` URI: fsspec's local file system, the object-store stand-in that every Ray worker
    process can see (an in-memory store lives in one process)."""
    images, masks = write_pipe(tmp_path / "pipe")
    local, stored = tmp_path / "local", tmp_path / "store"
    assert main([str(arg) for arg in pipe_args(local, images, masks, tiny9, tiny_clip)]) == 0
    uri = f"file://{stored}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("inpaintkit.evaluation.run.score", no_scoring_here)
        code, out, err = run_cli(pipe_args(uri, images, masks, tiny9, tiny_clip, "--ray", "local"), capsys)

    assert code == 0, err
    outputs = {f"{method}/{name}.png" for method in METHODS for name in ("coco-1-10", "lvis-3-30")}
    lines = status_lines(out)
    for output in outputs:
        assert np.array_equal(pixels(local / output), pixels(stored / output))  # exactly: the same sums, same order
        assert len(lines[f"{uri}/{output}"]) == 1 and lines[f"{uri}/{output}"][0].startswith("generated in")
    assert untimed(read_rows(stored / "metrics.csv")) == untimed(read_rows(local / "metrics.csv"))  # exactly equal
    assert (stored / "report.md").is_file() and (stored / "summary.json").is_file()
    assert not list(stored.rglob("*.tmp"))  # every commit moved its temporary key onto the final one


def test_a_sample_that_kills_every_worker_ends_the_run_in_one_sentence_naming_it(
    runs, cluster, tmp_path, tiny9, tiny_clip
):
    """In a process of its own, as a user runs it, so that stderr is all of it: Ray's C++ lines, Ray Data's logging
    and the workers' lines included. It joins the module's cluster, whose workers know the CRASH_ON file."""
    dataset, local, _ = runs
    dst = tmp_path / "poisoned"
    # --quiet among them; one worker: four tries all the same, with the fewest processes to start
    args = [arg for arg in bench_args(dataset, dst, tiny9, tiny_clip, "--ray-workers", "1") if arg != "--metric"]
    address = ray.get_runtime_context().gcs_address
    # The in-process runs' settings, for the same pixels: fp32 (conftest pins it) and one torch thread.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cluster.poison.write_text("b")  # every actor given sample b exits on the spot
    try:
        result = subprocess.run(
            [sys.executable, "-m", "inpaintkit.cli", *map(str, args), "--dtype", "fp32", "--ray", address],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,  # a hang fails here
        )
    finally:
        cluster.poison.unlink()

    # --quiet leaves one line of Ray's own: its core worker announces the log level that silences the rest.
    err = "\n".join(line for line in result.stderr.splitlines() if "RAY_BACKEND_LOG_LEVEL" not in line)
    assert_one_line_error(result.returncode, err, "The sample b stopped its Ray worker each of the 4 times")
    made = [path for method in METHODS for path in (dst / method).glob("*.png")]
    assert {path.stem for path in made} <= {"a", "c"}  # b never made; a and c made, or not yet
    for path in made:  # whole: every output present decodes, with the local run's pixels
        assert np.array_equal(pixels(path), pixels(local / path.parent.name / path.name))
    assert not list(dst.rglob("*.tmp"))


def test_pipe_on_ray_reads_the_parquet_files_datasets_finds_in_a_dataset_folder(tmp_path):
    from inpaintkit.evaluation.ray_pipe import parquet_files

    images, _ = write_pipe(tmp_path / "pipe")
    data = tmp_path / "PIPE" / "data"
    data.mkdir(parents=True)
    shutil.copy(images, data / "test-00000-of-00001.parquet")  # the hub's layout: the split in the file name
    assert parquet_files(str(tmp_path / "PIPE"), "test") == ([str(data / "test-00000-of-00001.parquet")], None)
    assert parquet_files(str(images), "test") == ([str(images)], None)  # a parquet file is itself, whatever the split
    with pytest.raises(InputError, match="has no split 'train'"):
        parquet_files(str(tmp_path / "PIPE"), "train")


def test_an_in_memory_store_is_refused_with_ray_in_one_sentence(cluster, tmp_path, tiny9, tiny_clip, capsys):
    args = bench_args(write_dataset(tmp_path / "d"), "memory://bucket/run", tiny9, tiny_clip, "--ray", "local")
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "the Ray workers cannot write to it")
