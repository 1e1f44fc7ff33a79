"""PIPE on a Ray cluster: the rows to inpaint read with `ray.data.read_parquet`, on the files `datasets` would read.

The image table and the mask table are read by the cluster's workers, cut down to the samples that have outputs to
make, and joined on PIPE's keys (a union grouped by the keys: Ray Data's own `join` needs polars). Each joined row
carries its three image cells as PNG/JPEG bytes, so an actor decodes them itself and the driver ships no pixels.
The driver still opens PIPE through `datasets` (pipe.py) for the samples' names and prompts and for the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError, first_line
from .pipe import JOIN_KEYS, PROMPT_COLUMNS, prompts_of, row_sample, sample_name
from .samples import Sample

CELLS = ("source", "target", "mask")  # the joined row's image bytes: source_img, target_img, mask


def parquet_files(source: str, split: str) -> tuple[list[str], Any]:
    """The parquet files of `split` that `datasets` would read for `source`, and the pyarrow file system they are on
    (None: the local disk). A parquet file is itself; a dataset folder or a hub id, the data files its builder finds.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return [str(path)], None
    try:
        import datasets

        builder = datasets.load_dataset_builder(str(path) if path.is_dir() else source)
        files = [str(file) for file in (builder.config.data_files or {}).get(split, [])]
    except Exception as error:  # offline, an unknown id or split: as datasets words it
        raise InputError(f"Cannot find the parquet files of {source} split {split!r}: {first_line(error)}.") from None
    if not files:
        raise InputError(f"{source} has no split {split!r}.")
    if not all(file.endswith(".parquet") for file in files):
        raise InputError(f"{source} split {split!r} is not stored as parquet files, which --ray reads PIPE from.")
    if not files[0].startswith("hf://"):
        return files, None
    # A hub dataset: every worker reads the hub's files itself (no shared disk needed).
    from huggingface_hub import HfFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return [file.removeprefix("hf://") for file in files], PyFileSystem(FSSpecHandler(HfFileSystem()))


def pipe_rows(split: str, images: str, masks: str, wanted: dict[str, str], max_blocks: int):
    """A Ray Dataset of the joined PIPE rows named in `wanted` (sample name -> its methods, comma-separated)."""
    import ray

    image_files, image_fs = parquet_files(images, split)
    mask_files, mask_fs = parquet_files(masks, split)
    prompts = [column for column in PROMPT_COLUMNS if column in _columns(image_files[0], image_fs)]
    image_rows = (
        ray.data.read_parquet(image_files, filesystem=image_fs)
        .select_columns([*JOIN_KEYS, "source_img", "target_img", *prompts])
        .map_batches(_image_cells, fn_kwargs={"wanted": wanted}, batch_format="pyarrow")
    )
    mask_rows = (
        ray.data.read_parquet(mask_files, filesystem=mask_fs)
        .select_columns([*JOIN_KEYS, "mask"])
        .map_batches(_mask_cells, fn_kwargs={"wanted": wanted}, batch_format="pyarrow")
    )
    joined = image_rows.union(mask_rows).groupby(list(JOIN_KEYS)).map_groups(_joined, batch_format="pyarrow")
    # One row per block (what a dead actor's retry redoes), as for the in-memory rows. Made before the actors start:
    # they would hold every CPU of a CPU cluster, and the join's tasks would wait for one for ever. Nothing streams
    # past a shuffle anyway: its output blocks all exist together at its end.
    return joined.repartition(min(len(wanted), max_blocks), shuffle=False).materialize()


def pipe_sample(row: dict[str, Any]) -> Sample:
    """A joined row (one of pipe_rows') as a sample."""
    cells = (row["source"], row["mask"], row["target"])
    return row_sample(str(row["name"]), str(row["prompt"]), lambda: cells)


def _columns(file: str, filesystem) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_schema(file, filesystem=filesystem).names


def _image_cells(table, wanted: dict[str, str]):
    """Image rows as joinable rows, only those with outputs to make: name, prompt, methods and the image bytes."""
    columns, names = _wanted_rows(table, wanted)
    return _joinable(
        table,
        columns,
        name=names,
        prompt=prompts_of(columns, len(names)),
        methods=[wanted[name] for name in names],
        source=[_bytes(cell) for cell in columns["source_img"]],
        target=[_bytes(cell) for cell in columns["target_img"]],
    )


def _mask_cells(table, wanted: dict[str, str]):
    """Mask rows as joinable rows: the same columns as _image_cells', with the mask's bytes."""
    columns, names = _wanted_rows(table, wanted)
    return _joinable(table, columns, name=names, mask=[_bytes(cell) for cell in columns["mask"]])


def _wanted_rows(table, wanted: dict[str, str]) -> tuple[dict[str, list], list[str]]:
    keys = table.select(list(JOIN_KEYS)).to_pydict()
    names = [sample_name(key) for key in zip(*(keys[key] for key in JOIN_KEYS))]
    keep = [index for index, name in enumerate(names) if name in wanted]
    return table.take(keep).to_pydict(), [names[index] for index in keep]


def _joinable(table, columns: dict[str, list], **values: list):
    """One schema for both tables' rows (a column a table lacks is null), so that the two can be unioned."""
    import pyarrow as pa

    text = ("name", "prompt", "methods")
    schema = pa.schema(
        [table.schema.field(key) for key in JOIN_KEYS]
        + [pa.field(name, pa.string()) for name in text]
        + [pa.field(name, pa.binary()) for name in CELLS]
    )
    rows = len(values["name"])
    arrays = {key: columns[key] for key in JOIN_KEYS}
    arrays.update({name: values.get(name, [None] * rows) for name in (*text, *CELLS)})
    return pa.table(arrays, schema=schema)


def _joined(group):
    """One key's rows (an image row and its mask row) as one row; a key without both is dropped."""
    rows = group.to_pylist()
    image = next((row for row in rows if row["source"] is not None), None)
    mask = next((row for row in rows if row["mask"] is not None), None)
    if image is None or mask is None:
        rows = []
    else:
        rows = [{**image, "mask": mask["mask"]}]
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=group.schema)


def _bytes(cell: Any) -> Any:
    """A datasets Image cell as read from parquet ({'bytes': ..., 'path': ...}) -> its bytes."""
    return cell.get("bytes") if isinstance(cell, dict) else cell
