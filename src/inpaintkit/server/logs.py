"""One JSON line per request: id, method, path, status, queue wait, run time, total time (and the error, if any)."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from datetime import datetime, timezone

access_log = logging.getLogger("inpaintkit.server.access")


class AccessLog:
    """ASGI middleware: gives each request an id (X-Request-Id), then logs it when it ends.

    Handlers add fields to the line through `request.state.log` (a dict), e.g. the job's queue wait and run time.
    """

    def __init__(self, app, on_request=None):
        self.app = app
        self.on_request = on_request  # called with each finished request's fields (the service's metrics)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex[:16]
        fields = {"id": request_id, "method": scope["method"], "path": scope["path"], "status": None}
        scope.setdefault("state", {})["log"] = fields
        started = time.monotonic()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                fields["status"] = fields.get("status") or message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            fields["status"] = fields["status"] or 500  # an exception escaped before any response started
            fields["total_s"] = round(time.monotonic() - started, 4)
            access_log.info(
                json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **fields})
            )
            if self.on_request is not None:
                self.on_request(fields)


class JsonLineFormatter(logging.Formatter):
    """The access log's records are JSON already; other records become {"time", "level", "message"} lines."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == access_log.name:
            return record.getMessage()
        line = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record arrives (a test or an embedding app may have replaced it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass
