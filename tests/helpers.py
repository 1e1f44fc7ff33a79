"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from inpaintkit.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `inpaintkit ARGS` in-process: (exit code, stdout, stderr)."""
    try:
        code = main([str(arg) for arg in args])
    except SystemExit as exit_:  # argparse exits itself on usage errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli_subprocess(args: list, hf_home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed CLI in a fresh process with its own (empty unless filled) Hugging Face cache, offline."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "inpaintkit.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def assert_one_line_error(code: int, err: str, phrase: str) -> None:
    """Exit code 2, exactly one line on stderr containing `phrase`, and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert "Traceback" not in err
    assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height RGB pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def distance_to_nearest(mask: np.ndarray) -> np.ndarray:
    """Brute-force Euclidean distance from each pixel to the nearest pixel where mask is true."""
    ys, xs = np.nonzero(mask)
    grid_y, grid_x = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    squared = (grid_y[..., None] - ys) ** 2 + (grid_x[..., None] - xs) ** 2
    return np.sqrt(squared.min(axis=-1))


@contextlib.contextmanager
def socket_listening() -> Iterator[int]:
    """A port something else is listening on, for the duration of a with block."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def bench_every_method(model, methods: str, pixels: np.ndarray, mask: np.ndarray, tmp_path: Path, capsys) -> dict:
    """`inpaintkit bench` of `methods` (comma-separated) on one sample, checked to make every output; its run.json."""
    import json

    from PIL import Image

    source = tmp_path / "samples"
    source.mkdir()
    Image.fromarray(pixels).save(source / "photo.png")
    Image.fromarray(mask).save(source / "photo.mask.png")
    (source / "photo.txt").write_text("a teapot")
    code, _, err = run_cli(
        ["bench", "--pipeline", methods, "--src", source, "--dst", tmp_path / "results", "--model", model,
         "--steps", "3", "--reconstruct", "pixel", "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    for method in methods.split(","):
        assert (tmp_path / "results" / method / "photo.png").is_file()
    return json.loads((tmp_path / "results" / "run.json").read_text())
