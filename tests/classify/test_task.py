"""The LightningModule: optimiser groups per policy and logits at the data's size."""

from __future__ import annotations

import torch

from tests.classify.conftest import TINY_VIT
from tomoformer.classify.models import resolve_model_kwargs
from tomoformer.classify.task import ClassifyTask

VIT = "vit_tiny_patch16_224"


def _task(policy: str) -> ClassifyTask:
    kwargs = resolve_model_kwargs(VIT, 4, 1, (8, 8), None, TINY_VIT)
    return ClassifyTask(VIT, kwargs, list("abcd"), policy=policy, lr=1.0).apply_policy()


def test_forward_normalises_and_returns_logits() -> None:
    task = _task("full")
    images = torch.rand(3, 1, 8, 8)
    assert task(images).shape == (3, 4)
    assert torch.allclose(task(images), task.model((images - 0.5) / 0.5))


def test_llrd_scales_learning_rates_by_depth() -> None:
    task = _task("llrd:0.5")
    groups = task.parameter_groups()
    assert {g["layer"]: g["lr"] for g in groups} == {0: 0.125, 1: 0.25, 2: 0.5, 3: 1.0}  # stem, 2 blocks, head
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in task.parameters())
    assert all(g["weight_decay"] == 0 for g in groups if any(p.ndim <= 1 for p in g["params"]))


def test_groups_hold_only_trainable_parameters_except_under_lp_ft() -> None:
    head = _task("head")
    in_groups = {id(p) for g in head.parameter_groups() for p in g["params"]}
    assert in_groups == {id(p) for p in head.model.head.parameters()}
    lp_ft = _task("lp-ft")  # the backbone joins the optimiser now, frozen until the callback thaws it
    assert sum(p.numel() for g in lp_ft.parameter_groups() for p in g["params"]) == sum(
        p.numel() for p in lp_ft.model.parameters()
    )
    assert any(not p.requires_grad for p in lp_ft.model.parameters())
    assert [type(c).__name__ for c in lp_ft.configure_callbacks()] == ["LinearProbeThenFinetune"]
