"""`tomoformer classify`: pretrain, fine-tune with LoRA on an image folder, evaluate, the demo, and bad input."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.classify.conftest import write_npz
from tomoformer.classify.evaluate import load_classifier
from tomoformer.cli import main

TINY = ["--model-opt", "embed_dim=32", "--model-opt", "depth=2", "--model-opt", "num_heads=2"]
FAST = ["--max-epochs", "1", "--batch-size", "16", "--accelerator", "cpu", "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only contend on a shared CPU
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cls")
    data = write_npz(root / "strokes.npz", 120)
    assert main(["classify", "pretrain", "--data", str(data), "--out", str(root / "pre"), *TINY, *FAST]) == 0
    return root / "pre" / "checkpoints" / "best.ckpt"


def _folder(root: Path, n_per_class: int = 6, classes: int = 3, size: int = 8) -> Path:
    images, labels = write_npz_arrays(n_per_class * classes, classes)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / f"class_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).resize((size, size)).save(root / f"class_{label}" / f"{i}.png")
    return root


def write_npz_arrays(n: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    from tomoformer.classify.synthetic import stroke_images

    images, labels = stroke_images(n * 10 // classes + 10, seed=5)
    keep = np.flatnonzero(labels < classes)[:n]
    return np.round(images[keep] * 255).astype(np.uint8), labels[keep]


def test_finetune_lora_on_a_folder_then_evaluate(
    pretrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path / "imgs")
    out = tmp_path / "ft"
    capsys.readouterr()
    args = ["classify", "finetune", "--from", str(pretrained), "--policy", "lora:2", "--data", str(folder)]
    assert main([*args, "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "policy lora:2:" in printed and "trainable of" in printed
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["init"] == str(pretrained) and recorded["class_names"] == ["class_0", "class_1", "class_2"]
    for name in ("metrics.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "figures/curves.png"):
        assert (out / name).is_file(), name
    merged = load_classifier(out / "checkpoints" / "last.ckpt")
    assert not any("lora" in k for k in merged.state_dict)  # adapters folded into plain timm weights

    ev = tmp_path / "eval"
    assert (
        main(
            [
                "classify",
                "evaluate",
                "--checkpoint",
                str(out / "checkpoints/best.ckpt"),
                "--data",
                str(folder),
                "--out",
                str(ev),
            ]
        )
        == 0
    )
    metrics = json.loads((ev / "metrics.json").read_text())
    assert set(metrics["per_class_accuracy"]) <= {"class_0", "class_1", "class_2"} and "top5" not in metrics
    assert 0 <= metrics["top1"] <= 1 and metrics["n_images"] == 18
    assert (ev / "figures" / "confusion_matrix.png").is_file() and (ev / "config.yaml").is_file()


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("tomoformer: error:") and match in err, err


def test_bad_input_is_one_line_error(pretrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "o"), *FAST]
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((4, 1, 8, 8), np.uint8))
    _one_line_error(capsys, ["classify", "pretrain", "--data", str(tmp_path / "nolabels.npz"), *out], "no 'labels'")
    mixed = _folder(tmp_path / "mixed", n_per_class=2, classes=2)
    Image.new("L", (9, 8)).save(mixed / "class_0" / "odd.png")
    _one_line_error(capsys, ["classify", "pretrain", "--data", str(mixed), *out], "--image-size")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["classify", "pretrain", "--data", str(tmp_path / "empty"), *out], "class")
    data = str(write_npz(tmp_path / "d.npz", 20))
    _one_line_error(capsys, ["classify", "pretrain", "--data", data, "--model", "vit_nope", *out], "unknown timm model")
    _one_line_error(capsys, ["classify", "finetune", "--data", data, *out], "nothing to fine-tune")
    ft = ["classify", "finetune", "--from", str(pretrained), "--data", data]
    _one_line_error(capsys, [*ft, "--policy", "freeze:9", *out], "only 2 blocks")
    _one_line_error(capsys, [*ft, "--policy", "lora:x", *out], "bad fine-tuning policy")

    from tomoformer.checkpoint import save_checkpoint
    from tomoformer.models.registry import create_model

    mapping = save_checkpoint(tmp_path / "map.ckpt", create_model("threshold"), {"model": "threshold"})
    _one_line_error(capsys, ["classify", "finetune", "--from", str(mapping), "--data", data, *out], "not an image")
    ev = ["classify", "evaluate", "--checkpoint", str(mapping), "--data", data, "--out", str(tmp_path / "e")]
    _one_line_error(capsys, ev, "building-mapping model")
    big = tmp_path / "big.npz"
    np.savez(big, images=np.zeros((3, 1, 16, 16), np.uint8), labels=np.array([0, 1, 2]))
    ev = ["classify", "evaluate", "--checkpoint", str(pretrained), "--data", str(big), "--out", str(tmp_path / "e")]
    _one_line_error(capsys, ev, "the model takes 8x8")


def test_demo_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["classify", "demo", "--out", str(out), "--pretrain-size", "100", "--pretrain-epochs", "1"]
    assert main([*args, "--finetune-epochs", "1", "--train-size", "20", "--policies", "head,lora:2"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["policy"] for r in rows] == ["head", "lora:2", "scratch"]
    assert all(0 <= float(r["test_top1"]) <= 1 for r in rows)
    assert int(rows[0]["trainable_params"]) == 64 * 10 + 10 < int(rows[1]["trainable_params"])
    summary = (out / "summary.md").read_text()
    assert "| lora:2 |" in summary and "| scratch |" in summary and "| head |" in capsys.readouterr().out
    for name in ("strokes", "digits_train", "digits_val", "digits_test"):
        assert (out / "data" / f"{name}.npz").is_file()
    assert len(np.load(out / "data" / "digits_train.npz")["labels"]) == 20
    assert (out / "runs" / "lora-2" / "test" / "metrics.json").is_file()


def test_finetune_from_a_timm_safetensors_file(
    pretrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in load_classifier(pretrained).state_dict.items()}, str(weights))
    data = write_npz(tmp_path / "three.npz", 30, seed=3, classes=3)
    out = tmp_path / "ft"
    args = ["classify", "finetune", "--weights", str(weights), "--data", str(data), "--policy", "head", *TINY]
    assert main([*args, "--out", str(out), *FAST]) == 0
    assert "new classifier head for 3 classes" in capsys.readouterr().out
    tuned = load_classifier(out / "checkpoints" / "last.ckpt").state_dict
    source = load_classifier(pretrained).state_dict
    assert all(torch.equal(tuned[k], source[k]) for k in source if not k.startswith("head."))
