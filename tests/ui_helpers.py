"""Helpers for the web UI tests: serving an app on a free port, and an Inpainter that records (and can hold) its
jobs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Iterator

from inpaintkit.errors import Cancelled

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    """A port nothing listens on now (the OS picks it); the app binds it right after."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def served(inpainter, *, max_queue: int = 4, max_file_size_mb: int = 1, **limits) -> Iterator[str]:
    """Build the app around `inpainter`, serve it on a free port the way `inpaintkit ui` does, yield its URL, close
    it. `limits`: start's max_session_uploads and max_session_mb.
    """
    from inpaintkit.ui import build_app, start

    demo = build_app(inpainter, max_queue=max_queue)
    url = start(demo, port=free_port(), max_file_size_mb=max_file_size_mb, **limits)
    try:
        yield url
    finally:
        demo.close()


class InstrumentedInpainter:
    """A real Inpainter that records each job's inputs and how it ended; `hold=True` parks each job at its first step
    (after announcing `started`) until `release` is set, so a test can act while a job runs. `hold="after last step"`
    parks it once its last step is done (the UI's callback has already let it go on), before the VAE decodes."""

    def __init__(self, inner, hold: bool | str = False):
        self.inner = inner
        self.hold = hold
        self.started = threading.Event()
        self.release = threading.Event()
        self.jobs: list[dict] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def run(self, pixels, mask, settings, callback=None, should_stop=None):
        job = {"pixels": pixels, "mask": mask, "settings": settings, "steps": 0, "outcome": "running"}
        self.jobs.append(job)

        def on_step(step, total, latents):
            job["steps"], job["total"] = job["steps"] + 1, total
            if self.hold is True:
                self.started.set()
                self.release.wait(30)
            go_on = callback(step, total, latents)
            if self.hold == "after last step" and step + 1 == total:
                self.started.set()
                self.release.wait(30)
            return go_on

        try:
            images = self.inner.run(pixels, mask, settings, on_step, should_stop)
        except Cancelled:
            job["outcome"] = "cancelled"
            raise
        job["outcome"] = "finished"
        return images


def inpaint_through_the_ui(inpainter, pixels, mask, tmp_path, **settings) -> str:
    """One Run through a served web UI's API (the image as the editor's background, the mask as a file); the path
    of the first result image, downloaded."""
    from gradio_client import Client, handle_file
    from PIL import Image

    Image.fromarray(pixels).save(tmp_path / "p.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    with served(inpainter, max_queue=1) as url:
        results, _ = Client(url, download_files=str(tmp_path / "downloads"), verbose=False).predict(
            image={"background": handle_file(str(tmp_path / "p.png")), "layers": [], "composite": None},
            mask=handle_file(str(tmp_path / "m.png")),
            api_name="/inpaint",
            **settings,
        )
    return results[0]["image"]
