"""`bench --dst URI`: the results on an object store, committed atomically, resumed from what is there.

The object store is fsspec's in-memory file system (`memory://`), a stand-in that needs no network and has no real
folders, as S3 and GCS have none; each test uses a bucket of its own, since it is shared by the whole process.
(test_ray_bench.py runs the same code from Ray actors on a `file://` URI: an in-memory store lives in one process.)
"""

from __future__ import annotations

import csv
import io
import json
import uuid

import numpy as np
import pytest
from PIL import Image

from inpaintkit.cli import main
from inpaintkit.errors import InputError
from inpaintkit.evaluation.store import ObjectStore, object_store_uri

from .helpers import assert_one_line_error, run_cli
from .test_bench import bench_args, write_dataset

fsspec = pytest.importorskip("fsspec")
METHODS = ("blend", "native")
NAMES = "abc"
TIMING = ("seconds", "peak_memory_mb")


def memory():
    return fsspec.filesystem("memory")


def new_bucket() -> str:
    return f"memory://bucket-{uuid.uuid4().hex[:8]}/run"


def stored_pixels(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(memory().cat_file(uri))).convert("RGB"))


def untimed_rows(text: str) -> list[dict[str, str]]:
    return [
        {key: value for key, value in row.items() if key not in TIMING} for row in csv.DictReader(io.StringIO(text))
    ]


def status_lines(out: str) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        path, _, status = line.partition("\t")
        lines.setdefault(path, []).append(status)
    return lines


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny9, tiny_clip):
    """The dataset, a run into a local folder and the same run into the in-memory store."""
    root = tmp_path_factory.mktemp("store-bench")
    dataset = write_dataset(root / "dataset")
    local, uri = root / "local", new_bucket()
    assert main([str(arg) for arg in bench_args(dataset, local, tiny9, tiny_clip)]) == 0
    assert main([str(arg) for arg in bench_args(dataset, uri, tiny9, tiny_clip)]) == 0
    return dataset, local, uri


def test_a_run_into_an_object_store_writes_the_same_results_as_into_a_folder(runs):
    _, local, uri = runs
    for method in METHODS:
        for name in NAMES:  # the same pixels: generation does not depend on where the output goes
            assert np.array_equal(
                stored_pixels(f"{uri}/{method}/{name}.png"),
                np.asarray(Image.open(local / method / f"{name}.png").convert("RGB")),
            )
    stored = untimed_rows(memory().cat_file(f"{uri}/metrics.csv").decode())
    assert stored == untimed_rows((local / "metrics.csv").read_text())  # exactly equal, as text
    keys = memory().find(uri)
    for name in ("/run.json", "/summary.json", "/report.md", "/grids/a.png", "/charts/background_ssim.png"):
        assert any(key.endswith(name) for key in keys), name
    assert not [key for key in keys if key.endswith(".tmp")]  # every commit moved its temporary key away


def test_a_resume_from_the_store_keeps_the_valid_outputs_and_remakes_the_others(runs, tiny9, tiny_clip, capsys):
    dataset, _, first = runs
    uri = new_bucket()
    memory().copy(f"{first}/", f"{uri}/", recursive=True)
    memory().rm_file(f"{uri}/blend/a.png")  # missing
    memory().pipe_file(f"{uri}/native/c.png", b"half a PNG")  # unusable
    kept = {f"{uri}/{method}/{name}.png" for method in METHODS for name in NAMES} - {
        f"{uri}/blend/a.png",
        f"{uri}/native/c.png",
    }
    before = {key: memory().cat_file(key) for key in kept}

    code, out, _ = run_cli(bench_args(dataset, uri, tiny9, tiny_clip), capsys)

    assert code == 0
    lines = status_lines(out)
    for key in kept:  # named by their URI, skipped, and their objects untouched
        assert lines[key] == ["existing"] and memory().cat_file(key) == before[key]
    for key in (f"{uri}/blend/a.png", f"{uri}/native/c.png"):
        assert len(lines[key]) == 1 and lines[key][0].startswith("generated in")
        assert np.array_equal(stored_pixels(key), stored_pixels(key.replace(uri, first)))
    assert untimed_rows(memory().cat_file(f"{uri}/metrics.csv").decode()) == untimed_rows(
        memory().cat_file(f"{first}/metrics.csv").decode()
    )


def test_an_upload_cut_off_midway_leaves_no_object_at_the_final_key(tmp_path, monkeypatch):
    uri = new_bucket()
    store = ObjectStore(uri)
    local = tmp_path / "a.png"
    local.write_bytes(b"the whole output")

    def cut_off(source, key, **kwargs):
        memory().pipe_file(key, b"the wh")  # part of the bytes reached the store
        raise KeyboardInterrupt

    monkeypatch.setattr(store.fs, "put_file", cut_off)
    with pytest.raises(KeyboardInterrupt):
        store.commit(local, "blend/a.png")
    assert not memory().exists(f"{uri}/blend/a.png")
    assert memory().find(uri) == []  # and its temporary key was removed

    monkeypatch.undo()
    store.commit(local, "blend/a.png")
    assert memory().cat_file(f"{uri}/blend/a.png") == b"the whole output"
    assert store.images("blend") == ["a.png"]


def test_an_unknown_scheme_is_one_sentence(tmp_path, tiny9, tiny_clip, capsys):
    code, _, err = run_cli(bench_args(write_dataset(tmp_path / "d"), "ftp://host/run", tiny9, tiny_clip), capsys)
    assert_one_line_error(code, err, "unknown scheme ftp://")


def test_a_missing_fsspec_backend_is_one_sentence(tmp_path, tiny9, tiny_clip, capsys):
    try:  # s3fs is no dependency of inpaintkit: absent here, as on most installs
        import s3fs  # noqa: F401

        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    code, _, err = run_cli(bench_args(write_dataset(tmp_path / "d"), "s3://bucket/run", tiny9, tiny_clip), capsys)
    assert_one_line_error(code, err, "needs s3fs for s3://, which is not installed: pip install s3fs")


def test_an_object_store_uri_is_refused_by_metrics_in_one_sentence(tmp_path, capsys):
    code, _, err = run_cli(["metrics", "--pred", "s3://bucket/run", "--src", tmp_path], capsys)
    assert_one_line_error(code, err, "--pred must be a local folder")


@pytest.mark.parametrize(
    ("given", "uri"),
    [
        ("s3://bucket/run", "s3://bucket/run"),
        ("s3:/bucket/run", "s3://bucket/run"),  # what the command line's Path makes of s3://bucket/run
        ("gs://bucket/a/b/", "gs://bucket/a/b"),
        ("file:/tmp/results", "file:///tmp/results"),
        ("results/run", None),
        ("/abs/results", None),
    ],
)
def test_dst_uris_are_told_from_folders(given, uri):
    assert object_store_uri(given) == uri


def test_a_uri_without_a_bucket_is_refused():
    with pytest.raises(InputError, match="names no bucket"):
        object_store_uri("s3://")


def test_an_empty_bucket_is_refused_not_taken_for_a_local_folder(tmp_path, monkeypatch):
    """`--dst s3://$BUCKET` with BUCKET unset is `s3://`, which the command line's Path folds to `s3:`."""
    from pathlib import Path

    for dst in ("s3://", Path("s3://"), "gs://"):
        with pytest.raises(InputError, match="names no bucket or folder"):
            object_store_uri(dst)
    assert object_store_uri(Path("results:")) is None  # a folder whose name ends in a colon is still a folder


def test_a_resume_without_an_option_the_first_run_used_is_refused(tmp_path):
    """fp8_weights is recorded only when used; a resume without it must not remake the first run's outputs."""
    from inpaintkit.evaluation.commands import check_same_run

    (tmp_path / "run.json").write_text(json.dumps({"model": "m", "fp8_weights": True, "settings": {"steps": 2}}))
    with pytest.raises(InputError, match=r"other settings \(fp8_weights\)"):
        check_same_run(tmp_path, {"model": "m", "settings": {"steps": 2}}, overwrite=False)
    check_same_run(tmp_path, {"model": "m", "fp8_weights": True, "settings": {"steps": 2}}, overwrite=False)
