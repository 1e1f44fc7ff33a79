"""Per-browser-session upload limits for the web UI, as ASGI middleware in front of Gradio's upload route.

Gradio's upload route knows nothing of sessions (the browser posts files before the event that uses them, with no
session id), so the middleware gives each browser a session cookie and counts that session's uploads, files and bytes,
over a sliding window as long as the cache keeps a file: the limits bound what one session has on disk at a time.
A client that drops its cookie starts a new session; the limits bound a browser session, not a determined client.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from typing import Awaitable, Callable, Optional

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse

SESSION_COOKIE = "inpaintkit_session"
UPLOAD_ROUTE = "/gradio_api/upload"
MAX_COOKIE_LENGTH = 64  # ours are 43 characters; a longer one is not ours
MB = 1024 * 1024  # as Gradio counts --max-file-size

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class SessionUploadLimits:
    """Refuse a session's upload beyond `max_uploads` files or `max_mb` megabytes within `window_s` seconds (429, one
    sentence); an upload without the session cookie is refused too (403), so every upload is counted somewhere.
    """

    def __init__(self, app, *, max_uploads: int, max_mb: int, window_s: float):
        self.app = app
        self.max_uploads = max_uploads
        self.max_mb = max_mb
        self.window_s = window_s
        # session -> (time, bytes) of each upload in the window; one event loop serves every request, so no lock.
        self.uploads: dict[str, deque[tuple[float, int]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        session = connection.cookies.get(SESSION_COOKIE)
        if session is not None and not (0 < len(session) <= MAX_COOKIE_LENGTH):
            session = None
        if scope["method"] == "POST" and scope["path"].endswith(UPLOAD_ROUTE):
            await self.upload(scope, receive, send, session, connection.headers.get("content-length"))
        elif session is None:
            await self.app(scope, receive, with_cookie(send, secrets.token_urlsafe(32)))
        else:
            await self.app(scope, receive, send)

    async def upload(self, scope: Scope, receive: Receive, send: Send, session: Optional[str], length: Optional[str]):
        if session is None:
            message = "Open the app's page first: uploads are counted per browser session."
            await refuse(scope, receive, send, 403, message)
            return
        if length is None or not length.isdigit():
            await refuse(scope, receive, send, 411, "An upload must say its size (Content-Length).")
            return
        problem = self.over_limit(session, int(length))
        if problem:
            await refuse(scope, receive, send, 429, problem)
            return
        record = (time.monotonic(), int(length))
        self.uploads.setdefault(session, deque()).append(record)  # reserved now, so parallel uploads see it

        async def forget_if_refused(message: dict) -> None:
            records = self.uploads.get(session, ())
            if message["type"] == "http.response.start" and message["status"] != 200 and record in records:
                records.remove(record)  # too big, or malformed: nothing was stored
            await send(message)

        await self.app(scope, receive, forget_if_refused)

    def over_limit(self, session: str, size: int) -> Optional[str]:
        """Why this upload would take the session past a limit, in one sentence; None if it fits."""
        self.forget_old()
        past = self.uploads.get(session, ())
        window = f"{self.window_s / 3600:g} hours" if self.window_s >= 3600 else f"{self.window_s:g} seconds"
        if len(past) + 1 > self.max_uploads:
            return (
                f"This browser session has uploaded {len(past)} files in the last {window}, the most allowed; "
                "try again later."
            )
        if sum(size for _, size in past) + size > self.max_mb * MB:
            return (
                f"This browser session's uploads in the last {window} would pass {self.max_mb} MB, "
                "the most allowed; try again later."
            )
        return None

    def forget_old(self) -> None:
        """Drop uploads older than the window, and sessions with none left (so the table stays small)."""
        oldest = time.monotonic() - self.window_s
        for session in list(self.uploads):
            records = self.uploads[session]
            while records and records[0][0] < oldest:
                records.popleft()
            if not records:
                del self.uploads[session]


def with_cookie(send: Send, session: str) -> Send:
    """`send` adding the session cookie to the response: HttpOnly, SameSite=Lax, gone when the browser closes."""
    cookie = f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax".encode("latin-1")

    async def sending(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return sending


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, sentence: str) -> None:
    await PlainTextResponse(sentence, status_code=status)(scope, receive, send)
