"""The denoising loop never reads a tensor's value on the host: on a GPU each such read waits for the GPU (issue 8).

CI has no GPU, so this catches the reads themselves: every Python-level way of turning a tensor into a
host value is wrapped while steps 2..N run, and each call is attributed to the line that made it.
"""

from __future__ import annotations

import collections
import traceback

import pytest
import torch

from .conftest import box_mask, gradient_image

HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")

# Euler and LMS are left out on purpose: diffusers keeps their sigmas on the CPU ("to avoid too much
# CPU/GPU communication"), so their `if s_tmin <= sigma` reads host memory, which costs no GPU sync.
JOBS = [
    ("inpainter9", "native", "default", {}),  # PNDM, the SD 1.5 checkpoints' own scheduler
    ("inpainter9", "native", "ddim", {}),
    ("inpainter9", "native", "dpm++2m", {}),
    ("inpainter9", "native", "unipc", {}),
    ("inpainter4", "blend", "default", {}),
    ("inpainter4", "bld", "ddim", {"reconstruct": "none"}),
    ("inpainter4", "repaint", "ddim", {"jump_length": 2, "jump_n_sample": 2}),
    ("inpainter4", "soft", "default", {}),
    ("inpainter4", "tdpaint", "default", {}),
]


class HostReads:
    """Wraps torch.Tensor's host reads; counts those made while `watching`, by the line that made them."""

    def __init__(self, monkeypatch):
        self.watching = False
        self.lines: collections.Counter = collections.Counter()
        for name in HOST_READS:
            monkeypatch.setattr(torch.Tensor, name, self._wrapped(name, getattr(torch.Tensor, name)))

    def _wrapped(self, name, original):
        def read(tensor, *args, **kwargs):
            if self.watching:
                caller = next(
                    frame for frame in reversed(traceback.extract_stack()[:-1]) if "/torch/" not in frame.filename
                )
                self.lines[f"{name} at {caller.filename.rsplit('/', 1)[-1]}:{caller.lineno}: {caller.line}"] += 1
            return original(tensor, *args, **kwargs)

        return read


@pytest.mark.parametrize("inpainter_name, method, scheduler, options", JOBS, ids=[f"{job[1]}-{job[2]}" for job in JOBS])
def test_no_host_reads_between_steps(request, monkeypatch, inpainter_name, method, scheduler, options):
    inpainter = request.getfixturevalue(inpainter_name)
    reads = HostReads(monkeypatch)

    def watch_until_the_last_step(step: int, total: int, latents: torch.Tensor) -> None:
        reads.watching = step < total - 1

    pixels, mask = gradient_image(48, 48), box_mask(48, 48, (12, 12, 36, 36))
    inpainter(
        pixels,
        mask,
        "a red ball",
        method=method,
        scheduler=scheduler,
        steps=6,
        seed=0,
        callback=watch_until_the_last_step,
        **options,
    )
    assert not reads.lines, dict(reads.lines)


def test_the_watch_sees_a_host_read(monkeypatch, inpainter9):
    """The wrapping works: a read made from the callback itself is caught (so an empty count means something)."""
    reads = HostReads(monkeypatch)

    def read_the_latents(step: int, total: int, latents: torch.Tensor) -> None:
        reads.watching = True
        float(latents.mean())

    pixels, mask = gradient_image(48, 48), box_mask(48, 48, (12, 12, 36, 36))
    inpainter9(pixels, mask, "x", steps=2, seed=0, callback=read_the_latents)
    assert any(line.startswith("__float__ at test_host_reads.py") for line in reads.lines), dict(reads.lines)
