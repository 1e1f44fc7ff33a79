"""A job stops inside its long stages, not only between denoising steps (issue 13, item 2): a deadline or Stop
must not wait minutes for a tiled VAE encode of a huge image, or for bld's decoder optimisation."""

from __future__ import annotations

import pytest
import torch

from inpaintkit import Inpainter
from inpaintkit.errors import Cancelled

from .conftest import box_mask, gradient_image

# 192x160 pixels with tiles of the tiny VAE's 64 px (overlapping by a quarter): a dozen encoder calls and as
# many decoder calls, so stopping after the second is far from stopping at the end.
WIDTH, HEIGHT = 192, 160
PIXELS = gradient_image(WIDTH, HEIGHT, seed=60)
MASK = box_mask(WIDTH, HEIGHT, (40, 40, 150, 120))


@pytest.fixture(scope="module")
def tiled(tiny4):
    return Inpainter.from_pretrained(tiny4, device="cpu", vae_tiling="on")


class Calls:
    """Counts forward calls of a module (a hook registered before the job's own, so it runs first)."""

    def __init__(self, module: torch.nn.Module):
        self.count = 0
        self.handle = module.register_forward_pre_hook(self.seen)

    def seen(self, *_) -> None:
        self.count += 1

    def __enter__(self) -> "Calls":
        return self

    def __exit__(self, *_) -> None:
        self.handle.remove()


def run(inpainter, should_stop=None, **options):
    options = {"steps": 3, "seed": 1, "method": "blend", **options}
    return inpainter(PIXELS, MASK, "x", should_stop=should_stop, **options)


def test_the_tiled_encode_has_many_calls(tiled):
    with Calls(tiled.components.vae.encoder) as encoder, Calls(tiled.components.vae.decoder) as decoder:
        run(tiled)
    assert encoder.count >= 6 and decoder.count >= 6  # what the next two tests stop early


def test_a_stop_during_the_tiled_encode_ends_it_between_tiles(tiled):
    vae, unet = tiled.components.vae, tiled.components.unet
    with Calls(vae.encoder) as encoder, Calls(unet) as denoiser:
        with pytest.raises(Cancelled, match="while encoding the image"):
            run(tiled, should_stop=lambda: encoder.count >= 2)
    assert encoder.count == 2  # the third tile never ran
    assert denoiser.count == 0


def test_a_stop_during_the_tiled_decode_ends_it_between_tiles(tiled):
    with Calls(tiled.components.vae.decoder) as decoder:
        with pytest.raises(Cancelled, match="while decoding"):
            run(tiled, should_stop=lambda: decoder.count >= 2)
    assert decoder.count == 2


def test_a_stop_between_steps(tiled):
    with Calls(tiled.components.unet) as denoiser, Calls(tiled.components.vae.decoder) as decoder:
        with pytest.raises(Cancelled, match="after step 2 of 6"):
            run(tiled, steps=6, scheduler="ddim", should_stop=lambda: denoiser.count >= 2)
    assert (denoiser.count, decoder.count) == (2, 0)


def test_a_stop_during_bld_reconstruction_ends_the_optimisation(inpainter4, monkeypatch):
    # bld's `optimize` fine-tunes a decoder copy for 75 Adam steps per image: minutes on a CPU at 512 px.
    optimizer_steps = []
    adam_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: optimizer_steps.append(1) or adam_step(self))
    with pytest.raises(Cancelled, match="while reconstructing the background"):
        inpainter4(
            PIXELS[:48, :64], MASK[:48, :64], "x", method="bld", steps=4, seed=1,
            should_stop=lambda: len(optimizer_steps) >= 3,
        )  # fmt: skip
    assert len(optimizer_steps) == 3


def test_the_stop_hooks_are_removed_after_a_job(tiled):
    modules = [tiled.components.vae.encoder, tiled.components.vae.decoder, tiled.components.text_encoder]
    before = [len(module._forward_pre_hooks) for module in modules]
    with pytest.raises(Cancelled):
        run(tiled, should_stop=lambda: True)
    run(tiled, should_stop=lambda: False)
    assert [len(module._forward_pre_hooks) for module in modules] == before
    run(tiled)  # and a job without should_stop is not stopped by a previous job's check
