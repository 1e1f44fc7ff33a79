"""The device, dtype and thread count inpaintkit picks when the user does not say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from inpaintkit import Inpainter, InputError, devices
from inpaintkit.devices import cpu_quota, limit_cpu_threads, resolve_dtype
from inpaintkit.io import read_png_parameters

from .conftest import box_mask, gradient_image
from .helpers import run_cli_subprocess

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
# Taken at collection, before conftest's session fixture pins `auto` to fp32 for the rest of the suite.
real_cpu_has_fast_bf16 = devices.cpu_has_fast_bf16


@pytest.mark.parametrize("fast_bf16, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_a_cpu_is_bf16_only_where_the_cpu_has_bf16_instructions(monkeypatch, fast_bf16, expected):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert resolve_dtype("auto", CPU) == expected


def test_auto_dtype_is_fp16_on_cuda_and_explicit_dtypes_are_kept(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    assert resolve_dtype("auto", CUDA) == torch.float16
    assert resolve_dtype("fp32", CPU) == torch.float32
    assert resolve_dtype("bf16", CPU) == torch.bfloat16
    assert resolve_dtype(torch.float16, CPU) == torch.float16
    with pytest.raises(InputError, match="Unknown dtype 'fp8'; use auto, fp32, fp16 or bf16."):
        resolve_dtype("fp8", CPU)


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected",
    [(True, False, True), (False, True, True), (False, False, False)],
)
def test_fast_bf16_means_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert real_cpu_has_fast_bf16() is expected


def test_a_torch_without_the_private_checks_means_no_fast_bf16(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert real_cpu_has_fast_bf16() is False


def test_the_bf16_default_paints_what_fp32_paints_within_bf16_rounding(tiny9, monkeypatch, caplog):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    with caplog.at_level("INFO", logger="inpaintkit"):
        default = Inpainter.from_pretrained(tiny9, device="cpu")
    assert "--dtype fp32 for full precision" in caplog.text  # the user is told, and how to opt out
    full = Inpainter.from_pretrained(tiny9, device="cpu", dtype="fp32")
    assert default.components.unet.dtype == torch.bfloat16
    pixels, mask = gradient_image(64, 64), box_mask(64, 64, (16, 16, 48, 48))
    for method in ("native", "blend"):
        ours = default(pixels, mask, "a red ball", steps=5, seed=0, method=method)[0]
        reference = np.asarray(full(pixels, mask, "a red ball", steps=5, seed=0, method=method)[0])
        assert ours.info["inpaintkit"]["dtype"] == "bfloat16"  # recorded, so the change is never silent
        ours = np.asarray(ours)
        assert np.array_equal(ours[mask == 0], pixels[mask == 0])
        # bf16 keeps 8 mantissa bits (~0.4% per operation); through the untrained tiny UNet's 5 steps the
        # hole differs from fp32 by 1 to 3.3 levels on average (measured over 4 seeds and both methods),
        # while its content varies by ~70 levels (std): a wrong cast or scale would be tens of levels off.
        difference = np.abs(ours.astype(int) - reference.astype(int))[mask > 0]
        assert difference.mean() <= 4.5, difference.mean()


def test_the_cli_default_on_this_machine_records_the_dtype_it_chose(tmp_path, tiny9):
    """Not patched: a subprocess runs the real `auto`, whichever CPU this is."""
    pixels, mask = gradient_image(48, 40), box_mask(48, 40, (10, 8, 30, 28))
    Image.fromarray(pixels).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")  # box_mask is already 0/255
    args = [
        "run",
        "--image",
        tmp_path / "in.png",
        "--mask",
        tmp_path / "mask.png",
        "--model",
        tiny9,
        "--steps",
        "2",
        "--device",
        "cpu",
        "--output",
        tmp_path / "out.png",
    ]
    result = run_cli_subprocess(args, tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    expected = "bfloat16" if real_cpu_has_fast_bf16() else "float32"
    assert read_png_parameters(tmp_path / "out.png")["dtype"] == expected
    output = np.asarray(Image.open(tmp_path / "out.png"))
    assert np.array_equal(output[mask == 0], pixels[mask == 0])
    assert not np.array_equal(output[mask > 0], pixels[mask > 0])  # the hole was painted: the run really ran


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"cpu.max": "max 100000\n"}, None),  # cgroup v2 without a quota
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up, a thread per started CPU
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1 without a quota
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),  # no cgroup files at all (macOS, Windows)
    ],
)
def test_cpu_quota_reads_cgroup_v2_then_v1(tmp_path, files, expected):
    for name, text in files.items():
        write(tmp_path / name, text)
    assert cpu_quota(tmp_path) == expected


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_are_lowered_to_the_container_quota(tmp_path, monkeypatch, threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    write(tmp_path / "cpu.max", "100000 100000\n")
    torch.set_num_threads(2)
    limit_cpu_threads(tmp_path)
    assert torch.get_num_threads() == 1


def test_an_explicit_thread_count_or_a_lower_one_is_kept(tmp_path, monkeypatch, threads):
    write(tmp_path / "cpu.max", "100000 100000\n")
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    limit_cpu_threads(tmp_path)
    assert torch.get_num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    write(tmp_path / "cpu.max", "800000 100000\n")  # a quota of 8 CPUs never raises the count
    limit_cpu_threads(tmp_path)
    assert torch.get_num_threads() == 2
