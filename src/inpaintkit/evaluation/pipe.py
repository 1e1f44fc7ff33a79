"""The PIPE dataset (Wasserman et al., *Paint by Inpaint*, arXiv 2404.18212) as evaluation samples.

`paint-by-inpaint/PIPE` holds, per object, the image with the object removed (`source_img`), the
original (`target_img`) and add-the-object instructions; `paint-by-inpaint/PIPE_Masks` holds the
object's mask. The two are joined on (target_img_dataset, img_id, ann_id). Inpainting the mask of
`source_img` with the instruction as prompt should give back something like `target_img`.
Both sources can be a hub id (through the `datasets` cache), a local dataset folder or a parquet file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import InputError, first_line
from ..names import PIPE_IMAGES, PIPE_MASKS
from .samples import Pixels, Sample, load_pixels, safe_name

JOIN_KEYS = ("target_img_dataset", "img_id", "ann_id")
IMAGE_COLUMNS = (*JOIN_KEYS, "source_img", "target_img")
MASK_COLUMNS = (*JOIN_KEYS, "mask")
# The richer instruction first; the class-name one ("add a cup") where the VLM-LLM one is empty.
PROMPT_COLUMNS = ("Instruction_VLM-LLM", "Instruction_Class")


def parse_pipe_source(source: str) -> Optional[str]:
    """'pipe:test' -> 'test' (the split); None for anything that is not a PIPE source."""
    if not source.startswith("pipe:"):
        return None
    split = source.removeprefix("pipe:") or "test"
    return split


def read_pipe(
    split: str, limit: Optional[int] = None, images: str = PIPE_IMAGES, masks: str = PIPE_MASKS
) -> list[Sample]:
    """The first `limit` PIPE rows of `split` that have a mask, as samples (images decoded lazily)."""
    image_table = open_table(images, split, IMAGE_COLUMNS)
    mask_table = open_table(masks, split, MASK_COLUMNS)
    mask_rows = {key: row for row, key in enumerate(_keys(mask_table))}
    prompts = _prompts(image_table)
    samples = []
    for row, key in enumerate(_keys(image_table)):
        if key not in mask_rows:
            continue
        samples.append(_sample(image_table, row, mask_table, mask_rows[key], key, prompts[row]))
        if limit is not None and len(samples) >= limit:
            break
    if not samples:
        raise InputError(f"No PIPE {split!r} row of {images} has a mask in {masks} (joined on {', '.join(JOIN_KEYS)}).")
    return samples


def open_table(source: str, split: str, required: tuple[str, ...]):
    """A `datasets.Dataset` from a parquet file, a local dataset folder or a hub id, with its columns checked."""
    try:
        import datasets
    except ImportError:
        raise InputError("Reading PIPE needs the `datasets` package: pip install 'inpaintkit[eval]'.") from None
    datasets.disable_progress_bars()
    path = Path(source).expanduser()
    if not path.exists() and (source.startswith(("/", ".", "~")) or path.suffix == ".parquet"):
        raise InputError(
            f"{source} does not exist (a PIPE source is a hub id, a local dataset folder or a parquet file)."
        )
    try:
        if path.is_file():
            table = datasets.load_dataset("parquet", data_files={split: str(path)}, split=split)
        else:
            table = datasets.load_dataset(str(path) if path.is_dir() else source, split=split)
    except Exception as error:  # datasets raises many types: offline, unknown split, unreadable file
        hint = " (the hub cannot be reached and it is not in the datasets cache)" if _offline(error) else ""
        raise InputError(f"Cannot load {source} split {split!r}{hint}: {first_line(error)}.") from None
    missing = [column for column in required if column not in table.column_names]
    if missing:
        raise InputError(f"{source} has no column(s) {', '.join(missing)}; a PIPE table needs {', '.join(required)}.")
    return table


def _keys(table) -> list[tuple]:
    """The join keys of every row, read column by column without decoding any image (row by row is quadratic)."""
    columns = table.select_columns(list(JOIN_KEYS)).to_dict()
    return list(zip(*(columns[key] for key in JOIN_KEYS)))


def _prompts(table) -> list[str]:
    """Every row's prompt: the first non-empty of PROMPT_COLUMNS (those the table has), else ""."""
    columns = table.select_columns([column for column in PROMPT_COLUMNS if column in table.column_names]).to_dict()
    return prompts_of(columns, len(table))


def prompts_of(columns: dict[str, list], rows: int) -> list[str]:
    """Per row, the first non-empty of the PROMPT_COLUMNS given (in PROMPT_COLUMNS' order), else ""."""
    texts = [[str(value or "").strip() for value in columns[name]] for name in PROMPT_COLUMNS if name in columns]
    return [next((text for text in row if text), "") for row in zip(*texts)] if texts else [""] * rows


def sample_name(key: tuple) -> str:
    """A PIPE sample's name: its join key, e.g. coco-1-10."""
    return safe_name("-".join(str(part) for part in key))


def row_sample(name: str, prompt: str, cells: Callable[[], tuple[Any, Any, Any]]) -> Sample:
    """A sample from one joined PIPE row's (source_img, mask, target_img) cells: datasets' decoded images, or raw
    {'bytes': ...} or bytes cells. `cells` is called when the sample is opened.
    """

    def open_pixels() -> Pixels:
        try:
            source, mask, target = cells()
            return load_pixels(_image(source), _image(mask), _image(target))
        except InputError:
            raise
        except Exception as error:  # a cell datasets or Pillow cannot decode: this sample only
            raise InputError(f"the PIPE row's images cannot be read ({first_line(error)})") from None

    return Sample(name, prompt, open_pixels)


def _sample(image_table, image_row: int, mask_table, mask_row: int, key: tuple, prompt: str) -> Sample:
    def cells() -> tuple[Any, Any, Any]:  # reading a row decodes its images: once per row
        images = image_table[image_row]
        return images["source_img"], mask_table[mask_row]["mask"], images["target_img"]

    return row_sample(sample_name(key), prompt, cells)


def _image(value: Any):
    """A PIL image from a `datasets` Image cell (decoded) or a raw {'bytes': ...} cell."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        value = value["bytes"]
    if isinstance(value, bytes):
        import io

        from PIL import Image

        return Image.open(io.BytesIO(value))
    if value is None:
        raise InputError("the PIPE row has an empty image cell")
    return value


def _offline(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("offline", "connection", "couldn't reach", "resolve", "network"))
