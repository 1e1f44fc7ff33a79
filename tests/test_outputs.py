"""Output files, the progress bar, the tiny model's labelling, dtypes, and warnings a user should see."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
import torch
from PIL import Image

from inpaintkit import Inpainter
from inpaintkit.io import read_png_parameters

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli


@pytest.fixture()
def files(tmp_path):
    Image.fromarray(gradient_image(40, 32, seed=9)).save(tmp_path / "in.png")
    Image.fromarray(box_mask(40, 32, (8, 8, 30, 24))).save(tmp_path / "mask.png")
    return tmp_path


def run_args(files, model, output, *extra):
    return [
        "run",
        "--image",
        files / "in.png",
        "--mask",
        files / "mask.png",
        "--model",
        model,
        "--steps",
        "2",
        "--output",
        output,
        *extra,
    ]


def test_overwrite_replaces_an_existing_file(files, tiny9, capsys):
    output = files / "out.png"
    output.write_bytes(b"old")
    code, _, err = run_cli(run_args(files, tiny9, output, "--overwrite", "--seed", "3"), capsys)
    assert code == 0, err
    assert read_png_parameters(output)["seed"] == 3


def test_a_failed_overwrite_keeps_the_old_file(files, tiny9, capsys, monkeypatch):
    """Writes go to a temporary file renamed into place: a failure mid-write leaves the old file as it was."""
    output = files / "out.png"
    output.write_bytes(b"earlier result")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    code, _, err = run_cli(run_args(files, tiny9, output, "--overwrite"), capsys)
    # the failure comes after the run, so the run's own lines precede it: one error line, last, no traceback
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and "Traceback" not in err
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1] and "Could not write" in errors[0]
    assert output.read_bytes() == b"earlier result"
    assert sorted(path.name for path in files.iterdir()) == ["in.png", "mask.png", "out.png"]  # no temporary left


def test_an_unwritable_output_folder_fails_before_any_work(files, tiny9, capsys, monkeypatch):
    from inpaintkit import inpainter

    monkeypatch.setattr(
        inpainter, "denoise", lambda *args, **kwargs: pytest.fail("the model ran")
    )  # the name Inpainter calls
    code, _, err = run_cli(run_args(files, tiny9, "/proc/out.png"), capsys)  # /proc refuses new files, even for root
    assert_one_line_error(code, err, "Cannot write to /proc")


def test_outputs_get_the_usual_file_mode(files, tiny9, capsys):
    umask = os.umask(0o022)
    try:
        code, _, err = run_cli(run_args(files, tiny9, files / "out.png"), capsys)
    finally:
        os.umask(umask)
    assert code == 0, err
    assert (files / "out.png").stat().st_mode & 0o777 == 0o644


def test_empty_output_path(files, tiny9, capsys):
    code, _, err = run_cli(run_args(files, tiny9, ""), capsys)
    assert_one_line_error(code, err, "The output path is empty")


def test_two_runs_without_a_seed_get_different_seeds(files, tiny9, capsys):
    for name in ("a.png", "b.png"):
        code, _, err = run_cli(run_args(files, tiny9, files / name), capsys)
        assert code == 0, err
    assert (
        read_png_parameters(files / "a.png")["seed"] != read_png_parameters(files / "b.png")["seed"]
    )  # 1 in 2^32 to collide


def test_several_images_into_a_new_folder(files, tiny9, capsys):
    code, out, err = run_cli(
        run_args(files, tiny9, f"{files / 'results'}/", "--num-images", "2", "--seed", "7"), capsys
    )
    assert code == 0, err
    assert sorted(path.name for path in (files / "results").iterdir()) == ["in-7.png", "in-8.png"]
    assert [line.split("\t")[1] for line in out.splitlines()] == ["seed 7", "seed 8"]


def test_progress_bar_on_a_terminal_and_not_when_quiet(files, tiny9):
    """tqdm draws on stderr only when it is a terminal; --quiet silences it."""

    def stderr_on_a_tty(*extra):
        leader, follower = pty.openpty()
        # a terminal of 100x30 characters (a fresh pty is 0x0, where tqdm has no room to draw)
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inpaintkit.cli",
                *map(str, run_args(files, tiny9, files / f"o{len(extra)}.png", *extra)),
            ],
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=300) == 0
        os.close(leader)
        return b"".join(chunks).decode(errors="replace")

    assert "denoising" in stderr_on_a_tty()
    assert stderr_on_a_tty("--quiet") == ""


def test_make_tiny_model_is_labelled_untrained(tmp_path, capsys):
    code, out, _ = run_cli(["make-tiny-model", tmp_path / "tiny", "--channels", "4"], capsys)
    assert code == 0
    assert "UNTRAINED" in out
    assert "UNTRAINED" in (tmp_path / "tiny" / "README.md").read_text()
    assert "UNTRAINED" in json.loads((tmp_path / "tiny" / "model_index.json").read_text())["_inpaintkit_untrained"]
    code, out, _ = run_cli(["info", "--model", tmp_path / "tiny"], capsys)
    assert json.loads(out)["untrained"] is True and json.loads(out)["unet_in_channels"] == 4


def test_run_warns_that_the_tiny_model_is_untrained(files, tiny9, capsys):
    code, _, err = run_cli(run_args(files, tiny9, files / "out.png"), capsys)
    assert code == 0
    assert "UNTRAINED" in err
    assert read_png_parameters(files / "out.png")["model_untrained"] is True


def test_bf16_on_cpu_runs_and_keeps_the_background(tiny9):
    inpainter = Inpainter.from_pretrained(tiny9, device="cpu", dtype="bf16")
    assert inpainter.components.unet.dtype == torch.bfloat16
    pixels, mask = gradient_image(40, 32, seed=9), box_mask(40, 32, (8, 8, 30, 24))
    output = np.asarray(inpainter(pixels, mask, "x", steps=2, seed=1)[0])
    assert np.array_equal(output[mask == 0], pixels[mask == 0])


def test_long_prompt_warns_about_truncation(inpainter9, caplog):
    pixels, mask = gradient_image(16, 16), box_mask(16, 16, (4, 4, 12, 12))
    with caplog.at_level("WARNING", logger="inpaintkit"):
        inpainter9(pixels, mask, "word " * 100, steps=1, seed=1)
    assert "CLIP reads only the first 77" in caplog.text


def test_unknown_api_setting_is_named(inpainter9):
    from inpaintkit import InputError

    with pytest.raises(InputError, match="Unknown setting\\(s\\) guidence"):
        inpainter9(gradient_image(16, 16), box_mask(16, 16, (4, 4, 12, 12)), "x", guidence=3)


def test_outpaint_from_the_cli(files, tiny9, capsys):
    args = [
        "outpaint",
        "--image",
        files / "in.png",
        "--model",
        tiny9,
        "--steps",
        "2",
        "--expand",
        "8",
        "--right",
        "16",
        "--prompt",
        "more sky",
        "--seed",
        "4",
        "--output",
        files / "wide.png",
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    wide = np.asarray(Image.open(files / "wide.png"))
    original = np.asarray(Image.open(files / "in.png"))
    assert wide.shape == (32 + 16, 40 + 16 + 16, 3)
    assert np.array_equal(wide[8:40, 8:48], original)


@pytest.mark.parametrize("method", ["bld", "soft", "repaint", "tdpaint"])
def test_every_method_runs_from_the_cli(method, files, tiny4, capsys):
    extra = {
        "bld": ["--reconstruct", "pixel"],
        "repaint": ["--jump-length", "1", "--jump-n-sample", "2"],
        "soft": [],
        "tdpaint": [],
    }[method]
    code, _, err = run_cli(
        run_args(files, tiny4, files / f"{method}.png", "--method", method, "--mask-blur", "3", *extra), capsys
    )
    assert code == 0, err
    parameters = read_png_parameters(files / f"{method}.png")
    assert parameters["method"] == method


def test_an_interruption_keeps_the_batches_already_saved(files, tiny9, capsys, monkeypatch):
    from inpaintkit.inpainter import Inpainter

    calls = []
    real_run = Inpainter.run

    def interrupted_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Inpainter, "run", interrupted_second_batch)
    code, out, err = run_cli(
        run_args(files, tiny9, files / "many.png", "--num-images", "3", "--batch-size", "2", "--seed", "10"), capsys
    )
    assert code == 130 and "interrupted" in err
    assert sorted(path.name for path in files.iterdir() if path.name.startswith("many")) == ["many-1.png", "many-2.png"]
    assert [read_png_parameters(files / name)["seed"] for name in ("many-1.png", "many-2.png")] == [10, 11]


def test_batches_give_the_images_of_one_batch(files, tiny9, capsys):
    for output, batch_size in (("one.png", "3"), ("chunked.png", "1")):
        code, _, err = run_cli(
            run_args(files, tiny9, files / output, "--num-images", "3", "--batch-size", batch_size, "--seed", "5"),
            capsys,
        )
        assert code == 0, err
    for k in (1, 2, 3):
        one = np.asarray(Image.open(files / f"one-{k}.png")).astype(int)
        chunked = np.asarray(Image.open(files / f"chunked-{k}.png")).astype(int)
        assert np.abs(one - chunked).max() <= 2  # batch shape changes float rounding only, as for seed + k alone


def test_batch_size_must_be_positive(files, tiny9, capsys):
    code, _, err = run_cli(run_args(files, tiny9, files / "o.png", "--batch-size", "0"), capsys)
    assert_one_line_error(code, err, "argument --batch-size: must be at least 1, got 0")
