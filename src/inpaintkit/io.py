"""Images and masks in and out. Every rejection is an InputError with one clear sentence."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Union

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import InputError, first_line

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

log = logging.getLogger("inpaintkit")

# Pillow's own decompression-bomb limit: an image above it is refused before it is decoded.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def open_image(source: ImageLike, what: str = "image") -> Image.Image:
    """Open a path, PIL image or array as a fully decoded, upright PIL image (mode unchanged)."""
    if isinstance(source, Image.Image):
        return _upright(source, what)
    if isinstance(source, np.ndarray):
        return _from_array(source, what)
    path = Path(source)
    if not path.exists():
        raise InputError(f"The {what} file {path} does not exist.")
    if path.is_dir():
        raise InputError(f"The {what} path {path} is a folder, not an image file.")
    if path.stat().st_size == 0:
        raise InputError(f"The {what} file {path} is empty.")
    with warnings.catch_warnings():
        # Pillow warns between 1x and 2x its limit and raises above; we refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", message="Corrupt EXIF")  # a JPEG reads its EXIF on open; _upright judges it
        try:
            with Image.open(path) as image:
                image.load()
                return _upright(image, what)
        except InputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(
                f"The {what} file {path} declares more than {MAX_IMAGE_PIXELS:,} pixels, Pillow's limit "
                "against decompression bombs."
            ) from None
        except UnidentifiedImageError:
            raise InputError(f"The {what} file {path} is not an image format Pillow can read.") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise InputError(
                f"The {what} file {path} could not be decoded ({first_line(error)}); it may be truncated or corrupt."
            ) from None


def _upright(image: Image.Image, what: str) -> Image.Image:
    """Apply the EXIF orientation tag, so the pixels are what a photo viewer shows.

    A malformed EXIF block (PNG eXIf, WebP or JPEG EXIF that is not readable TIFF data) whose orientation cannot be
    read is refused, in every format alike: the pixels might be turned against the mask the user drew on the
    upright picture. A block damaged elsewhere (a camera's maker notes) whose orientation reads is used.
    An image turned by its orientation remembers its stored size (STORED_SIZE), for the mask-size message.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data" warnings: the error below says it once
        try:
            orientation = image.getexif().get(EXIF_ORIENTATION)
            if orientation is None and _exif_is_corrupt(image):
                raise ValueError("its orientation cannot be read")
            upright = ImageOps.exif_transpose(image) or image
        except Exception as error:  # Pillow raises SyntaxError, struct.error, KeyError... for bad EXIF
            raise InputError(
                f"The {what}'s EXIF metadata is malformed ({first_line(error)}); re-save the {what} without it."
            ) from None
    if upright.size != image.size:
        upright.info[STORED_SIZE] = image.size
    return upright


EXIF_ORIENTATION = 0x0112
STORED_SIZE = "inpaintkit_stored_size"  # (width, height) before the EXIF orientation turned the picture


def _exif_is_corrupt(image: Image.Image) -> bool:
    """Whether the image's raw EXIF block fails to parse, or parses only with Pillow's "Corrupt EXIF" warning."""
    raw = image.info.get("exif")
    if not raw:
        return False
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            Image.Exif().load(raw)
        except Exception:
            return True
    return any("Corrupt EXIF" in str(warning.message) for warning in seen)


def _from_array(array: np.ndarray, what: str) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise InputError(f"The {what} array has shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255  # True = white
    elif np.issubdtype(array.dtype, np.floating):
        array = np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0 + 0.5  # floats are in [0, 1]
    elif array.dtype == np.uint16:
        array = array / 257.0 + 0.5
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255)  # other integers are taken as 8-bit values
    return Image.fromarray(array.astype(np.uint8))


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB pixels from any Pillow mode (RGBA, P, L, LA, 16-bit, CMYK, ...)."""
    if image.mode in HIGH_DEPTH_MODES:
        return np.repeat(_high_depth_gray_to_uint8(image)[:, :, None], 3, axis=2)
    if image.mode == "RGB":
        return np.array(image, dtype=np.uint8)  # one copy; convert() would make another
    return np.asarray(_without_palette(image).convert("RGB"), dtype=np.uint8).copy()


def _without_palette(image: Image.Image) -> Image.Image:
    """Palette images become RGBA, keeping a transparent palette entry as alpha."""
    return image.convert("RGBA") if image.mode == "P" else image


def _high_depth_gray_to_uint8(image: Image.Image) -> np.ndarray:
    """8-bit values from 16-bit, 32-bit integer or float grayscale."""
    values = np.asarray(image, dtype=np.float64)
    peak = values.max(initial=0.0)
    if image.mode == "F":
        values = values * 255.0 if peak <= 1.0 else values
    elif image.mode.startswith("I;16") or peak > 255:
        values = values / 257.0  # 0..65535 -> 0..255
    return np.clip(values, 0, 255).round().astype(np.uint8)


def alpha_channel(image: Image.Image) -> np.ndarray | None:
    """The image's alpha as HxW uint8, or None when it has no transparency."""
    image = _without_palette(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return np.asarray(image.getchannel("A"), dtype=np.uint8).copy()
    return None


def mask_to_array(image: Image.Image) -> np.ndarray:
    """A mask image as HxW float32 in [0, 1] (white = 1 = repaint): its luminance, times its alpha if it has one.

    A mask painted on a transparent layer marks only its opaque strokes, whatever colour hides under the rest.
    """
    if image.mode in HIGH_DEPTH_MODES:
        return _high_depth_gray_to_uint8(image).astype(np.float32) / 255.0
    luminance = np.asarray(_without_palette(image).convert("L"), dtype=np.float32) / 255.0
    alpha = alpha_channel(image)
    return luminance if alpha is None else luminance * (alpha.astype(np.float32) / 255.0)


def load_image_and_mask(image: ImageLike, mask: ImageLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Load and check an image and its mask: (HxWx3 uint8 RGB, HxW float32 in [0, 1], 1 = repaint).

    Without a mask, the image's alpha channel is the mask: transparent pixels are repainted.
    """
    # uint8 arrays, the Python API's usual input, skip the trip through Pillow (four copies, 0.15 s for
    # a 12-megapixel photo); they give the same values as the general path.
    picture = None if _is_array(image, channels=3) else open_image(image, "image")
    pixels = np.array(image, dtype=np.uint8, order="C") if picture is None else to_rgb_array(picture)
    if mask is None:
        alpha = None if picture is None else alpha_channel(picture)
        if alpha is None:
            raise InputError("No mask was given and the image has no alpha channel to use as one; pass a mask.")
        mask_values = 1.0 - alpha.astype(np.float32) / 255.0
    elif _is_array(mask, channels=None):
        mask_values = mask.astype(np.float32) / 255.0
    else:
        mask_picture = open_image(mask, "mask")
        if looks_swapped(pixels, mask_picture):
            log.warning(
                "The mask is a colour picture and the image has only two colours: were the image and the mask "
                "swapped? (The mask is white where the image is repainted.)"
            )
        mask_values = mask_to_array(mask_picture)
    if mask_values.shape != pixels.shape[:2]:
        mask_h, mask_w = mask_values.shape
        image_h, image_w = pixels.shape[:2]
        stored = None if picture is None else picture.info.get(STORED_SIZE)
        turned = (
            f" (stored {stored[0]}x{stored[1]}, turned upright by its EXIF orientation: draw the mask on the upright "
            "picture, or remove the orientation tag)"
            if stored == (mask_w, mask_h)
            else ""
        )
        raise InputError(
            f"The mask is {mask_w}x{mask_h} pixels but the image is {image_w}x{image_h}{turned}; they must be the "
            "same size."
        )
    return pixels, mask_values


SAMPLED_PIXELS = 256 * 256  # enough to tell a photo from a two-valued mask, cheap at any size


def looks_swapped(pixels: np.ndarray, mask: Image.Image) -> bool:
    """A colour photo given as the mask, and a black-and-white picture (a mask, its edges maybe anti-aliased) given
    as the image. Judged on a sample of pixels."""
    if mask.mode in ("1", "L", "LA", "I", "F") or mask.mode in HIGH_DEPTH_MODES:
        return False
    stride = max(1, int(np.sqrt(pixels.shape[0] * pixels.shape[1] / SAMPLED_PIXELS)))
    sample = pixels[::stride, ::stride]
    grey = (sample[:, :, 0] == sample[:, :, 1]) & (sample[:, :, 1] == sample[:, :, 2])
    black_or_white = (sample[:, :, 0] <= 8) | (sample[:, :, 0] >= 247)
    if not grey.all() or np.mean(black_or_white) < 0.95:
        return False
    colours = to_rgb_array(mask)[::stride, ::stride].astype(np.int16)
    spread = colours.max(axis=2) - colours.min(axis=2)  # 0 for greys, large for saturated colours
    # A photo has many coloured pixels; a mask painted in one colour (red strokes) has them too, but then the
    # image is a photo and the test above has already answered.
    return float(np.mean(spread > 24)) > 0.1


def _is_array(source: ImageLike, channels: int | None) -> bool:
    """A uint8 array of shape HxWxchannels (HxW when channels is None)."""
    if not isinstance(source, np.ndarray) or source.dtype != np.uint8:
        return False
    return source.ndim == 2 if channels is None else source.ndim == 3 and source.shape[2] == channels


def png_metadata(parameters: dict) -> PngImagePlugin.PngInfo:
    """PNG text chunks: 'inpaintkit' holds the settings as JSON, 'parameters' a human-readable line."""
    info = PngImagePlugin.PngInfo()
    info.add_text("inpaintkit", json.dumps(parameters, sort_keys=True))
    readable = ", ".join(
        f"{key}: {value}" for key, value in parameters.items() if key not in ("prompt", "negative_prompt")
    )
    info.add_text(
        "parameters",
        f"{parameters.get('prompt', '')}\nNegative prompt: {parameters.get('negative_prompt', '')}\n{readable}",
    )
    return info


def read_png_parameters(path: str | os.PathLike) -> dict:
    """The settings inpaintkit stored in a PNG it wrote; {} for an image without them (another tool's)."""
    with Image.open(path) as image:
        stored = getattr(image, "text", {}).get("inpaintkit")
    try:
        return json.loads(stored) if stored else {}
    except ValueError:
        return {}


def save_png(image: Image.Image, path: str | os.PathLike, parameters: dict, overwrite: bool = False) -> Path:
    """Write a PNG atomically (temporary file + rename), with the settings in its metadata."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass --overwrite to replace it.")
    with atomic_file(path) as handle:
        image.save(handle, format="PNG", pnginfo=png_metadata(parameters))
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace a text file (UTF-8) atomically: readers see the old file or the new one, never half of it."""
    with atomic_file(Path(path)) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside `path`, renamed onto it only if the block succeeds."""
    try:
        # The name is cut so a target name near the file system's limit still gets a temporary file beside it.
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise InputError(f"Cannot write to {path.parent} ({error.strerror or error}).") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise InputError(f"Could not write {path} ({first_line(error)}); nothing was left half-written.") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_writable(folder: Path, names: Iterable[str] = ()) -> None:
    """Fail now, not after the work, if files cannot be created in `folder` (root ignores permission bits), or if
    one of `names` is longer than the folder's file system allows."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
        longest = max(names, key=lambda name: len(os.fsencode(name)), default=None)
        limit = os.pathconf(folder, "PC_NAME_MAX") if longest is not None else 0
    except OSError as error:
        raise InputError(f"Cannot write to {folder} ({error.strerror or error}).") from None
    if longest is not None and len(os.fsencode(longest)) > limit:
        raise InputError(
            f"The output name {longest[:40]}... is {len(os.fsencode(longest))} bytes long; the file system of "
            f"{folder} allows at most {limit}."
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
