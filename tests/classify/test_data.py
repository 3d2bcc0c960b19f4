"""Reading image folders and .npz arrays, and refusing bad ones with one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tomoformer.classify.data import ImageSet, load_images, match_classes, split
from tomoformer.errors import DataError


def _folder(root: Path, sizes: dict[str, list[tuple[int, int]]], mode: str = "L") -> Path:
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            value = 40 * (i + 1)
            Image.new(mode, (w, h), value if mode == "L" else (value, 0, 255)).save(root / name / f"{i}.png")
    return root


def test_npz_uint8_and_grey_layout(tmp_path: Path) -> None:
    images = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)  # [N, H, W]: grey, no channel axis
    np.savez(tmp_path / "a.npz", images=images, labels=np.array([0, 2, 1]))
    data = load_images(tmp_path / "a.npz")
    assert data.images.shape == (3, 1, 8, 8) and data.images.dtype == torch.float32
    assert torch.allclose(data.images[0, 0], torch.from_numpy(images[0] / 255.0).float())
    assert data.class_names == ["0", "1", "2"] and data.labels.tolist() == [0, 2, 1]


def test_folder_reads_classes_sorted_and_rgb(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"cat": [(6, 5)] * 2, "ant": [(6, 5)]}, mode="RGB")
    data = load_images(root)
    assert data.class_names == ["ant", "cat"] and data.labels.tolist() == [0, 1, 1]
    assert data.images.shape == (3, 3, 6, 5)
    assert data.images[:, 2].eq(1.0).all() and data.images[:, 1].eq(0).all()  # blue 255, green 0


def test_folder_of_mixed_sizes_needs_image_size(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": [(8, 8), (9, 8)], "b": [(8, 8)]})
    with pytest.raises(DataError, match="resize them all with --image-size"):
        load_images(root)
    assert load_images(root, image_size=4).images.shape == (3, 1, 4, 4)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((4, 1, 8, 8), np.uint8)}, "no 'labels' array"),
        ({"images": np.zeros((4, 1, 8, 8), np.uint8), "labels": np.zeros(3, int)}, "'labels' must be"),
        ({"images": np.zeros((4, 8), np.uint8), "labels": np.zeros(4, int)}, "'images' must be"),
        ({"images": np.zeros((2, 1, 4, 4), np.int32), "labels": np.zeros(2, int)}, "uint8"),
        ({"images": np.full((2, 1, 4, 4), np.nan), "labels": np.zeros(2, int)}, "NaN"),
        ({"images": np.zeros((2, 1, 4, 4)), "labels": np.array([0.5, 1.0])}, "integer"),
        ({"images": np.zeros((0, 1, 4, 4)), "labels": np.zeros(0, int)}, "no images"),
    ],
)
def test_bad_npz_is_a_data_error(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_images(tmp_path / "bad.npz")


def test_empty_or_missing_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="class"):
        load_images(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()  # a class folder without images
    with pytest.raises(DataError, match="no valid file"):
        load_images(tmp_path / "empty")
    with pytest.raises(DataError, match="no such"):
        load_images(tmp_path / "nothing.npz")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match="expected an image folder"):
        load_images(tmp_path / "x.txt")


def test_split_is_seeded_and_disjoint(strokes_npz: Path) -> None:
    data = load_images(strokes_npz)
    train, val = split(data, 0.25, seed=3)
    again, _ = split(data, 0.25, seed=3)
    other, _ = split(data, 0.25, seed=4)
    assert len(train.labels) + len(val.labels) == len(data.labels) and len(val.labels) == 40
    assert torch.equal(train.images, again.images) and not torch.equal(train.labels, other.labels)
    rows = {tuple(x.flatten().tolist()) for x in train.images}
    assert not any(tuple(x.flatten().tolist()) in rows for x in val.images)


def test_channels_and_class_checks() -> None:
    grey = ImageSet(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"])
    rgb = grey.with_channels(3)
    assert rgb.images.shape == (2, 3, 4, 4) and torch.allclose(rgb.with_channels(1).images, grey.images)
    with pytest.raises(DataError, match="channels"):
        rgb.with_channels(2)
    shuffled = match_classes(grey, ["c", "b", "a"], "x")  # matched by name: a → 2, b → 1
    assert shuffled.labels.tolist() == [2, 1] and shuffled.class_names == ["c", "b", "a"]
    with pytest.raises(DataError, match="not among"):
        match_classes(grey, ["a", "z"], "x")
    unnamed = ImageSet(grey.images, torch.tensor([0, 2]), ["0", "1", "2"])
    assert match_classes(unnamed, ["u", "v", "w"], "x").labels.tolist() == [0, 2]
    with pytest.raises(DataError, match="only 2 classes"):
        match_classes(unnamed, ["u", "v"], "x")
