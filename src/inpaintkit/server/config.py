"""The service's limits, validated once (the CLI's flags and create_app's callers share them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..errors import InputError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServiceConfig:
    max_queue: int = 16  # jobs that may wait for the worker; one more is answered 429
    max_pixels: int = 4096 * 4096  # per image or mask, read from the header before decoding
    max_body: int = 50 * MIB  # request body, in bytes
    timeout: float = 300.0  # seconds from a request's arrival to its answer; then the job is cancelled (504)
    max_images: int = 4  # num_images one request may ask for
    # Denoiser (UNet) evaluations one request may cost, over all its images: bounds a job's work before it queues.
    # 2000 fits the default repaint job (410 calls per image) times the default max_images (4).
    max_steps: int = 2000
    api_key: Optional[str] = None  # when set, /v1/* needs it (X-API-Key or Authorization: Bearer)
    # HTTP Basic credentials the A1111 routes (/sdapi/v1/*) accept, beside the key (A1111's --api-auth)
    api_auth: tuple[tuple[str, str], ...] = ()
    cors_allow_origins: tuple[str, ...] = ()  # browser origins allowed to call the service (CORS)

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_pixels", "max_body", "max_images", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(
                    f"The service's {name.replace('_', '-')} must be a whole number of at least 1, got {value!r}."
                )
        from ..io import MAX_IMAGE_PIXELS  # numpy and Pillow: not while building the CLI parser

        if self.max_pixels > MAX_IMAGE_PIXELS:
            raise InputError(
                f"The service's max-pixels can be at most Pillow's decompression-bomb limit {MAX_IMAGE_PIXELS:,}, got "
                f"{self.max_pixels:,}."
            )
        if not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0):
            raise InputError(f"The service's timeout must be a positive number of seconds, got {self.timeout!r}.")
        if self.api_key is not None and not self.api_key.strip():
            raise InputError("The API key is empty; give a non-empty key or none.")


def parse_api_auth(text: Optional[str]) -> tuple[tuple[str, str], ...]:
    """A1111's --api-auth: "user:password[,user:password...]"; one sentence for a malformed one."""
    if not text:
        return ()
    pairs = []
    for part in text.split(","):
        user, colon, password = part.strip().partition(":")
        if not colon or not user or not password:
            raise InputError(f"--api-auth takes USER:PASSWORD pairs separated by commas; {part.strip()!r} is not one.")
        if not part.strip().isascii():  # HTTP Basic credentials arrive as ASCII: these could never log in
            raise InputError(f"--api-auth {user!r}: user names and passwords must be ASCII (HTTP Basic's).")
        pairs.append((user, password))
    return tuple(pairs)
