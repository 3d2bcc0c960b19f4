"""Classification runs: a tiny ViT learns, repeats its numbers, and every policy keeps frozen weights frozen."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from tests.classify.conftest import TINY_VIT, write_npz
from tomoformer.classify.evaluate import load_classifier
from tomoformer.classify.run import ClassifyConfig, run_classify

FAST = {"batch_size": 16, "accelerator": "cpu", "progress": False, "lr": 5e-3}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pre")
    data = write_npz(root / "strokes.npz", 160)
    config = ClassifyConfig(data=str(data), out=str(root / "run"), model_kwargs=TINY_VIT, max_epochs=2, **FAST)
    return run_classify(config).best_checkpoint


def test_tiny_vit_learns(tmp_path: Path) -> None:
    data = write_npz(tmp_path / "two.npz", 240, classes=2)  # horizontal vs vertical strokes
    config = ClassifyConfig(data=str(data), out=str(tmp_path / "run"), model_kwargs=TINY_VIT, max_epochs=8, **FAST)
    result = run_classify(config)
    assert result.val_top1 >= 0.85  # chance: 0.5
    for name in (
        "config.yaml",
        "metrics.csv",
        "val_metrics.json",
        "figures/curves.png",
        "figures/confusion_matrix.png",
    ):
        assert (result.out / name).is_file(), name
    assert (result.out / "checkpoints" / "last.ckpt").is_file()
    recorded = yaml.safe_load((result.out / "config.yaml").read_text())
    assert recorded["model_kwargs"]["patch_size"] == 2 and recorded["init"] == "scratch"


def test_same_seed_same_weights(strokes_npz: Path, tmp_path: Path) -> None:
    states = []
    for name in ("a", "b"):
        config = ClassifyConfig(data=str(strokes_npz), out=str(tmp_path / name), model_kwargs=TINY_VIT, max_epochs=1)
        states.append(load_classifier(run_classify(dataclasses.replace(config, **FAST)).best_checkpoint).state_dict)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("policy", ["head", "freeze:1", "lora:2", "lp-ft"])
def test_policies_keep_frozen_weights_bit_identical(
    policy: str, pretrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = load_classifier(pretrained).state_dict
    data = write_npz(tmp_path / "five.npz", 80, seed=7, classes=5)  # other images, other classes: a new head
    config = ClassifyConfig(data=str(data), out=str(tmp_path / "ft"), policy=policy, max_epochs=2, **FAST)
    capsys.readouterr()
    result = run_classify(config, source=pretrained)
    printed = capsys.readouterr().out
    assert f"{result.trainable:,} trainable of {result.total:,} parameters" in printed
    assert "new classifier head for 5 classes" in printed
    loaded = load_classifier(result.best_checkpoint.parent / "last.ckpt")  # best.ckpt may predate lp-ft's switch
    state = loaded.state_dict
    assert state.keys() == base.keys() and loaded.class_names == loaded.class_names[:5]
    changed = {k for k in base if k.startswith("head.") or not torch.equal(base[k], state[k])}
    body = set(base) - {"head.weight", "head.bias"}
    if policy == "head":
        assert changed == {"head.weight", "head.bias"} and result.trainable == 32 * 5 + 5
    elif policy == "freeze:1":
        frozen = {k for k in body if k.startswith(("cls_token", "pos_embed", "patch_embed.", "blocks.0."))}
        assert not frozen & changed and {k for k in body if k.startswith("blocks.1.")} <= changed
    elif policy == "lora:2":  # adapters merged into the projections; norms and embeddings untouched
        assert "blocks.0.attn.qkv.weight" in changed and "blocks.1.mlp.fc2.weight" in changed
        assert not {k for k in changed if "norm" in k or k.startswith(("pos_embed", "patch_embed"))}
    else:  # lp-ft: the probe phase, then everything trains
        assert "full fine-tuning" in printed and body <= changed
