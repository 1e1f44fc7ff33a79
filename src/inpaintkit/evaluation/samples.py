"""Evaluation samples from a folder or a listing: image, mask, prompt, and an optional ground truth.

A folder holds `NAME.png|jpg|jpeg|webp` + `NAME.mask.png` + `NAME.txt` (the prompt; absent = empty
prompt) + optionally `NAME.gt.png|jpg` (ground truth). A `prompts.jsonl` or `prompts.csv` listing
(in the folder, or given directly) names `image`, `mask`, `prompt` and optionally `target` and `name`
per sample, with paths relative to the listing. A broken sample does not stop a run: it is loaded
lazily, and its error is reported when it is used.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from ..errors import InputError, first_line
from ..io import ImageLike, load_image_and_mask, open_image, to_rgb_array

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LISTINGS = ("prompts.jsonl", "prompts.csv")
LISTING_FIELDS = ("image", "mask", "prompt")


@dataclass
class Pixels:
    """A sample's loaded pixels: the image (HxWx3 uint8), mask (HxW float, 1 = repaint) and ground truth."""

    image: np.ndarray
    mask: np.ndarray
    target: Optional[np.ndarray] = None

    @property
    def hole(self) -> np.ndarray:
        """The repaint region as the metrics see it: mask >= 0.5, as the engine binarises it."""
        return self.mask >= 0.5


@dataclass
class Sample:
    name: str
    prompt: str
    open: Callable[[], Pixels]  # loads and checks the pixels; raises InputError for a broken sample
    problem: Optional[str] = None  # known broken before loading (e.g. a listing line without a mask)

    def load(self) -> Pixels:
        if self.problem:
            raise InputError(self.problem)
        return self.open()


def load_pixels(image: ImageLike, mask: ImageLike, target: Optional[ImageLike] = None) -> Pixels:
    """Load a sample's files through the same checks as `inpaintkit run`; the ground truth must match in size."""
    pixels, mask_values = load_image_and_mask(image, mask)
    truth = None
    if target is not None:
        truth = to_rgb_array(open_image(target, "ground-truth image"))
        if truth.shape != pixels.shape:
            raise InputError(
                f"The ground truth is {truth.shape[1]}x{truth.shape[0]} pixels but the image is "
                f"{pixels.shape[1]}x{pixels.shape[0]}; they must be the same size."
            )
    return Pixels(pixels, mask_values, truth)


def read_samples(source: Path) -> list[Sample]:
    """The samples of a folder or listing file, in a stable order (sorted names, or the listing's order)."""
    if not source.exists():
        raise InputError(f"--src {source} does not exist.")
    if source.is_file():
        return read_listing(source)
    for listing in LISTINGS:
        if (source / listing).is_file():
            return read_listing(source / listing)
    samples = list(scan_folder(source))
    if not samples:
        raise InputError(
            f"--src {source} has no samples: expected NAME.png (or .jpg/.webp) with NAME.mask.png and NAME.txt, "
            f"or a {' / '.join(LISTINGS)} listing."
        )
    return samples


def scan_folder(folder: Path) -> Iterator[Sample]:
    seen: set[str] = set()
    for image in sorted(folder.iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES or _is_companion(image.name):
            continue
        name = image.stem
        if name in seen:  # a.png and a.jpg: one name, one output file, so the second cannot be told apart
            yield Sample(f"{name}{image.suffix}", "", _never, f"{image.name}: another image is also named {name}")
            continue
        seen.add(name)
        mask = folder / f"{name}.mask.png"
        target = next(
            (folder / f"{name}.gt{suffix}" for suffix in IMAGE_SUFFIXES if (folder / f"{name}.gt{suffix}").is_file()),
            None,
        )
        prompt, problem = _prompt_file(folder / f"{name}.txt")
        problem = problem or (None if mask.is_file() else f"{mask.name} is missing")
        yield Sample(name, prompt, _opener(image, mask, target), problem)


def _prompt_file(path: Path) -> tuple[str, Optional[str]]:
    """NAME.txt's prompt (empty if there is no file), or the reason it cannot be read."""
    if not path.is_file():
        return "", None
    try:
        return path.read_text(encoding="utf-8-sig").strip(), None
    except UnicodeDecodeError:
        return "", f"{path.name} is not UTF-8 text"
    except OSError as error:
        return "", f"{path.name} cannot be read ({error.strerror or error})"


def read_listing(listing: Path) -> list[Sample]:
    if listing.suffix == ".jsonl":
        rows = list(_jsonl_rows(listing))
    elif listing.suffix == ".csv":
        rows = list(_csv_rows(listing))
    else:
        raise InputError(f"--src {listing} must be a folder, a .jsonl or a .csv listing.")
    samples, seen = [], set()
    for line, row in rows:
        samples.append(_listed_sample(listing, line, row, seen))
    if not samples:
        raise InputError(f"{listing} lists no samples.")
    return samples


def _listed_sample(listing: Path, line: int, row: dict | str, seen: set[str]) -> Sample:
    """One listing row as a sample; a bad row becomes a sample that reports its problem."""
    where = f"{listing.name} line {line}"
    if isinstance(row, str):  # a line that could not be parsed
        return Sample(f"line-{line}", "", _never, f"{where}: {row}")
    missing = [field for field in ("image", "mask") if not str(row.get(field) or "").strip()]
    image = listing.parent / str(row.get("image") or "")
    given_name = row.get("name") if isinstance(row.get("name"), str) else ""
    image_stem = image.stem if "image" not in missing else ""  # an empty image path would name the listing's folder
    name = safe_name(given_name.strip() or image_stem or f"line-{line}")
    if name in seen:
        return Sample(f"{name}-line-{line}", "", _never, f"{where}: sample name {name!r} is used twice")
    seen.add(name)
    if missing:
        return Sample(name, "", _never, f"{where}: no {' or '.join(missing)} given")
    target = str(row.get("target") or "").strip()
    return Sample(
        name,
        str(row.get("prompt") or "").strip(),
        _opener(image, listing.parent / str(row["mask"]), listing.parent / target if target else None),
    )


def _jsonl_rows(listing: Path) -> Iterator[tuple[int, dict | str]]:
    for number, text in enumerate(_read_text(listing).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            yield number, f"not valid JSON ({error.msg})"
            continue
        yield number, row if isinstance(row, dict) else "not a JSON object"


def _csv_rows(listing: Path) -> Iterator[tuple[int, dict | str]]:
    reader = csv.DictReader(_read_text(listing).splitlines())
    missing = [field for field in LISTING_FIELDS if field not in (reader.fieldnames or [])]
    if missing:
        raise InputError(
            f"{listing} needs a header with columns {', '.join(LISTING_FIELDS)} (and optional target, name); missing "
            f"{', '.join(missing)}."
        )
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as error:  # e.g. an unclosed quote swallowing the file, or a field over csv's size limit
        raise InputError(f"{listing} is not a readable CSV (line {reader.line_num}: {error}).") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark, as Excel writes CSV, is not part of the header
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"Cannot read {path} ({first_line(error)}).") from None


def _opener(image: Path, mask: Path, target: Optional[Path]) -> Callable[[], Pixels]:
    return lambda: load_pixels(image, mask, target)


def _never() -> Pixels:
    raise AssertionError("a sample with a known problem is never opened")


def _is_companion(filename: str) -> bool:
    """NAME.mask.png and NAME.gt.png belong to NAME.png; they are not samples themselves."""
    return bool(re.search(r"\.(mask|gt)\.[^.]+$", filename))  # case-sensitive, as the lookup of NAME.gt.png is


def safe_name(name: str) -> str:
    """A sample name usable as a file name: path separators and odd characters become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sample"
