"""What a request may cost before any image is decoded: body size, image format, pixel count."""

from __future__ import annotations

import io
import re
import warnings

from PIL import Image
from starlette.requests import ClientDisconnect, Request

from ..errors import first_line
from .errors import CLIENT_CLOSED, ServiceError

ALLOWED_FORMATS = "PNG, JPEG or WebP"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as the declared length or the bytes actually received pass `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServiceError(400, f"The Content-Length header {declared!r} is not a number of bytes.")
        if int(declared) > limit:
            raise body_too_large(int(declared), limit)
    chunks, received = [], 0
    try:
        async for chunk in request.stream():  # counted too: a chunked body declares no length, and a length can lie
            received += len(chunk)
            if received > limit:
                raise body_too_large(received, limit)
            chunks.append(chunk)
    except ClientDisconnect:  # the client's doing, not a failure of ours: logged as 499, without a traceback
        request.state.log["status"] = CLIENT_CLOSED
        raise ServiceError(
            CLIENT_CLOSED, f"The client disconnected after sending {received:,} bytes of its body."
        ) from None
    return b"".join(chunks)


def body_too_large(size: int, limit: int) -> ServiceError:
    return ServiceError(
        413,
        f"The request body is {'at least ' if size > limit else ''}{size:,} bytes, more than this service's limit of "
        f"{limit:,}.",
    )


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name from the file's magic bytes, for the allowed formats only."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def without_object_reprs(text: str) -> str:
    """Pillow's messages name the file object (`<_io.BytesIO object at 0x7f...>`): noise to a client, and an address."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", text)


def decode_image(data: bytes, what: str, max_pixels: int) -> Image.Image:
    """Decode an allowed format, after checking the pixel count its header declares (decompression bombs)."""
    if not data:
        raise ServiceError(422, f"The {what} file is empty.")
    image_format = sniff_format(data)
    if image_format is None:
        raise ServiceError(415, f"The {what} is not a {ALLOWED_FORMATS} file (judged by its first bytes).")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", message="Corrupt EXIF")  # judged by io.open_image, in one sentence
        try:
            image = Image.open(io.BytesIO(data), formats=[image_format])  # lazy: reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise ServiceError(
                    413,
                    f"The {what} is {width}x{height} = {width * height:,} pixels, more than this service's limit of "
                    f"{max_pixels:,}.",
                )
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ServiceError(
                413, f"The {what} declares more pixels than Pillow's limit against decompression bombs."
            ) from None
        except (OSError, SyntaxError, ValueError) as error:
            reason = without_object_reprs(first_line(error))
            raise ServiceError(
                422,
                f"The {what} could not be decoded as {image_format} ({reason}); it may be truncated or corrupt.",
            ) from None
    return image
