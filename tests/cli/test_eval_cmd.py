"""`tomoformer evaluate` model naming: checkpoints of one model are told apart by run folder and file."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from torch import nn

import tomoformer.checkpoint
from tomoformer.tasks.evaluate import load_models


def test_checkpoints_of_one_model_are_named_by_run_and_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_load(path: str) -> SimpleNamespace:
        return SimpleNamespace(name="unet" if "unet" in path else "tomoformer_tiny", model=nn.Identity())

    monkeypatch.setattr(tomoformer.checkpoint, "load_checkpoint", fake_load)
    paths = ["runs/a/checkpoints/best.ckpt", "runs/b/checkpoints/best.ckpt", "runs/b/last.ckpt", "x/unet.ckpt"]
    names = list(load_models(paths, [], None))
    assert names == ["tomoformer_tiny (a/best)", "tomoformer_tiny (b/best)", "tomoformer_tiny (b/last)", "unet"]
    assert list(load_models(["r/best.ckpt", "r/best.ckpt"], [], None)) == [
        "tomoformer_tiny (r/best)",
        "tomoformer_tiny (r/best)'",
    ]
