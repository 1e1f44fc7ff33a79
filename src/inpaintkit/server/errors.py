"""The one error type the service answers with: an HTTP status, one sentence, and optional headers."""

from __future__ import annotations

from typing import Optional


class ServiceError(Exception):
    """Answered as `{"error": message}` with `status` (4xx: the client's mistake; 5xx: ours or overload)."""

    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# Not a real HTTP status: nginx's convention for "the client closed the connection", used in the logs only.
CLIENT_CLOSED = 499
