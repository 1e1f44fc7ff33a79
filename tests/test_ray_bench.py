"""`inpaintkit bench --ray`: the same files as the single-process run, resumable, and a killed worker loses nothing.

One local Ray cluster (2 CPUs) serves the whole module: `--ray local` uses the session this process already has.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from inpaintkit.cli import main

from .helpers import assert_one_line_error, run_cli
from .test_bench import bench_args, read_rows, write_dataset

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray Data on its own settings

METHODS = ("blend", "native")
NAMES = "abc"
TIMING = ("seconds", "peak_memory_mb")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local 2-CPU cluster whose actors exit on their first row while the returned flag file exists."""
    from inpaintkit.evaluation.cluster import CRASH_ONCE

    flag = tmp_path_factory.mktemp("ray") / "crash-once"
    os.environ[CRASH_ONCE] = str(flag)  # before ray.init: the workers inherit the environment
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield flag
    finally:
        ray.shutdown()
        os.environ.pop(CRASH_ONCE, None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny9, tiny_clip, cluster):
    """The dataset, a single-process run and a --ray run of it."""
    root = tmp_path_factory.mktemp("ray-bench")
    dataset = write_dataset(root / "dataset")
    local, clustered = root / "local", root / "ray"
    assert main([str(arg) for arg in bench_args(dataset, local, tiny9, tiny_clip)]) == 0
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
    cluster.touch()  # the first actor to take a row exits on the spot

    code, out, _ = run_cli(bench_args(dataset, dst, tiny9, tiny_clip, "--ray", "local", "--ray-workers", "2"), capsys)

    assert code == 0 and not cluster.exists()  # it did die
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
