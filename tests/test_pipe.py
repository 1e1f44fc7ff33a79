"""The PIPE loader on local parquet files with PIPE's schema (the real dataset is never downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from inpaintkit.errors import InputError
from inpaintkit.evaluation.pipe import read_pipe

from .conftest import box_mask, gradient_image
from .helpers import assert_one_line_error, run_cli

SIZE = 64


def write_pipe(folder, *, drop_image_column: str | None = None):
    """PIPE-shaped parquet files: 3 image rows (one without a mask) and masks listed in another order."""
    import datasets

    def png(array):
        return Image.fromarray(array)

    keys = [("coco", 1, 10), ("coco", 2, 20), ("lvis", 3, 30)]
    images = {
        "target_img_dataset": [key[0] for key in keys],
        "img_id": [key[1] for key in keys],
        "ann_id": [key[2] for key in keys],
        "source_img": [png(gradient_image(SIZE, SIZE, seed=index)) for index in range(3)],
        "target_img": [png(gradient_image(SIZE, SIZE, seed=10 + index)) for index in range(3)],
        "Instruction_VLM-LLM": ["add a red ball on the grass", "", "add a lamp"],
        "Instruction_Class": ["add a ball", "add a dog", "add a lamp"],
        "Instruction_Ref_Dataset": ["", "", ""],
        "object_location": ["center", "left", "right"],
    }
    features = datasets.Features(
        {
            **{
                name: datasets.Value("string")
                for name in (
                    "target_img_dataset",
                    "Instruction_VLM-LLM",
                    "Instruction_Class",
                    "Instruction_Ref_Dataset",
                    "object_location",
                )
            },
            "img_id": datasets.Value("int64"),
            "ann_id": datasets.Value("int64"),
            "source_img": datasets.Image(),
            "target_img": datasets.Image(),
        }
    )
    if drop_image_column:
        images.pop(drop_image_column)
        features.pop(drop_image_column)
    masked = [2, 0]  # the third image row has no mask; the masks are in another order than the images
    masks = {
        "target_img_dataset": [keys[i][0] for i in masked],
        "img_id": [keys[i][1] for i in masked],
        "ann_id": [keys[i][2] for i in masked],
        "mask": [png(box_mask(SIZE, SIZE, (10 + i, 12, 40, 44))) for i in masked],
    }
    mask_features = datasets.Features(
        {
            "target_img_dataset": datasets.Value("string"),
            "img_id": datasets.Value("int64"),
            "ann_id": datasets.Value("int64"),
            "mask": datasets.Image(),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(images, features=features).to_parquet(str(folder / "images.parquet"))
    datasets.Dataset.from_dict(masks, features=mask_features).to_parquet(str(folder / "masks.parquet"))
    return folder / "images.parquet", folder / "masks.parquet"


def test_pipe_rows_are_joined_with_their_masks_on_dataset_image_and_annotation(tmp_path):
    images, masks = write_pipe(tmp_path)
    samples = read_pipe("test", images=str(images), masks=str(masks))
    assert [sample.name for sample in samples] == ["coco-1-10", "lvis-3-30"]  # coco-2-20 has no mask
    assert [sample.prompt for sample in samples] == ["add a red ball on the grass", "add a lamp"]
    pixels = samples[1].load()
    assert np.array_equal(pixels.image, gradient_image(SIZE, SIZE, seed=2))
    assert np.array_equal(pixels.target, gradient_image(SIZE, SIZE, seed=12))
    assert np.array_equal(pixels.hole, box_mask(SIZE, SIZE, (12, 12, 40, 44)) > 0)  # lvis' mask, not the first one


def test_the_class_instruction_is_the_prompt_when_the_vlm_one_is_empty(tmp_path):
    images, masks = write_pipe(tmp_path)
    import datasets

    table = datasets.load_dataset("parquet", data_files={"test": str(masks)}, split="test")
    extra = datasets.Dataset.from_dict(
        {"target_img_dataset": ["coco"], "img_id": [2], "ann_id": [20], "mask": [table[0]["mask"]]},
        features=table.features,
    )
    datasets.concatenate_datasets([table, extra]).to_parquet(str(masks))
    samples = read_pipe("test", images=str(images), masks=str(masks))
    assert {sample.name: sample.prompt for sample in samples}["coco-2-20"] == "add a dog"


def test_limit_takes_the_first_joined_rows(tmp_path):
    images, masks = write_pipe(tmp_path)
    assert [sample.name for sample in read_pipe("test", 1, str(images), str(masks))] == ["coco-1-10"]


def test_a_table_without_pipe_columns_is_refused_in_one_sentence(tmp_path):
    images, masks = write_pipe(tmp_path, drop_image_column="source_img")
    with pytest.raises(InputError, match=r"has no column\(s\) source_img; a PIPE table needs"):
        read_pipe("test", images=str(images), masks=str(masks))


def test_the_hub_dataset_offline_is_one_sentence(tmp_path, capsys, tiny9):
    code, _, err = run_cli(
        [
            "bench",
            "--pipeline",
            "blend",
            "--src",
            "pipe:test",
            "--limit",
            "2",
            "--dst",
            tmp_path / "out",
            "--model",
            tiny9,
            "--pipe-images",
            "nobody-has/this-dataset-xyz",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "Cannot load nobody-has/this-dataset-xyz split 'test'")


def test_bench_on_pipe_uses_the_target_as_ground_truth(tmp_path, capsys, tiny9, tiny_clip):
    images, masks = write_pipe(tmp_path / "pipe")
    dst = tmp_path / "out"
    code, _, err = run_cli(
        [
            "bench",
            "--pipeline",
            "blend",
            "--src",
            "pipe:test",
            "--limit",
            "2",
            "--dst",
            dst,
            "--model",
            tiny9,
            "--steps",
            "1",
            "--pipe-images",
            images,
            "--pipe-masks",
            masks,
            "--metric",
            "--clip-model",
            tiny_clip,
            "--kid-features",
            "clip",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((dst / "summary.json").read_text())
    assert summary["samples_evaluated"] == 2 and summary["source"] == "pipe:test"
    assert summary["metrics"]["blend"]["masked_mse"]["n"] == 2  # every PIPE sample has a ground truth
    assert summary["kid_reference"] == "ground truth" and summary["kid"]["blend"]["samples"] == 2
    assert json.loads(Image.open(dst / "grids" / "coco-1-10.png").text["columns"]) == [
        "input",
        "mask",
        "ground truth",
        "blend",
    ]


def test_a_pipe_row_whose_image_cannot_be_decoded_is_skipped_not_fatal(tmp_path):
    import datasets

    images, masks = write_pipe(tmp_path)
    table = datasets.load_dataset("parquet", data_files={"test": str(images)}, split="test").cast_column(
        "source_img", datasets.Image(decode=False)
    )
    rows = table.to_dict()
    rows["source_img"][0] = {"bytes": b"not an image at all", "path": None}
    datasets.Dataset.from_dict(rows, features=table.features).to_parquet(str(images))
    samples = read_pipe("test", images=str(images), masks=str(masks))
    with pytest.raises(InputError, match="cannot be read|not an image format"):
        samples[0].load()
    assert samples[1].load().image.shape == (SIZE, SIZE, 3)


def test_a_blank_vlm_instruction_falls_back_to_the_class_one(tmp_path):
    import datasets

    images, masks = write_pipe(tmp_path)
    table = datasets.load_dataset("parquet", data_files={"test": str(images)}, split="test")
    table = table.map(lambda row: {"Instruction_VLM-LLM": "   " if row["img_id"] == 1 else row["Instruction_VLM-LLM"]})
    table.to_parquet(str(images))
    assert read_pipe("test", images=str(images), masks=str(masks))[0].prompt == "add a ball"


def test_a_missing_local_pipe_file_is_named_as_missing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_pipe("test", images=str(tmp_path / "images.parquet"), masks=str(tmp_path / "masks.parquet"))
