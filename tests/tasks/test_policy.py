"""Fine-tuning policies: parsing, frozen parameters stay bit-identical, frozen BatchNorm, LP-FT phases."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch

from tests.models.adapt_cases import MODELS, TINY, BatchNormNet, batch, snapshot, train_steps
from tomoformer.errors import ConfigError
from tomoformer.models.adapt import count_parameters, layer_groups
from tomoformer.models.registry import create_model
from tomoformer.tasks.finetune import FinetuneTask
from tomoformer.tasks.policy import Policy, apply_policy, parse_policy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("full", Policy("full")),
        ("head", Policy("head")),
        ("freeze:2", Policy("freeze", 2)),
        ("llrd:0.75", Policy("llrd", 0.75)),
        ("lora:8", Policy("lora", 8)),
        ("lp-ft", Policy("lp-ft", 0.5)),
        ("lp-ft:0.25", Policy("lp-ft", 0.25)),
    ],
)
def test_policies_parse(text: str, expected: Policy) -> None:
    assert parse_policy(text) == expected
    assert parse_policy(str(expected)) == expected


@pytest.mark.parametrize(
    "text", ["", "fool", "head:1", "freeze", "freeze:x", "freeze:-1", "lora:0", "llrd:1.5", "lp-ft:1"]
)
def test_bad_policy_is_one_line_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy(text)
    assert "\n" not in str(err.value) and "policy" in str(err.value)


def test_freeze_more_blocks_than_the_model_has_is_refused() -> None:
    with pytest.raises(ConfigError, match="only 2 blocks"):
        apply_policy(create_model("tomoformer_tiny", **TINY), "freeze:3")


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("policy", ["head", "freeze:1"])
def test_frozen_parameters_stay_bit_identical(name: str, policy: str) -> None:
    torch.manual_seed(0)
    model = apply_policy(create_model(name, **MODELS[name]), policy)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and trainable
    if policy == "freeze:1":
        assert set(layer_groups(model)[0]) | set(layer_groups(model)[1]) == frozen
    else:
        assert trainable == {f"head.{n}" for n, _ in model.get_classifier().named_parameters()}
    before = snapshot(model)
    train_steps(model)
    after = snapshot(model)
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in trainable)
    assert count_parameters(model) == (
        sum(before[n].numel() for n in trainable),
        sum(before[n].numel() for n in frozen | trainable),  # parameters only: buffers are not counted
    )


def test_frozen_batchnorm_statistics_do_not_move_after_train() -> None:
    torch.manual_seed(0)
    model = apply_policy(BatchNormNet(), "freeze:1")
    model.train()
    assert not model.stem[1].training and not model.blocks[0][1].training and model.blocks[1][1].training
    before = snapshot(model)
    train_steps(model)
    after = snapshot(model)
    for key in ("stem.1.running_mean", "stem.1.running_var", "blocks.0.1.running_mean", "blocks.0.0.weight"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["blocks.1.1.running_mean"], after["blocks.1.1.running_mean"])
    assert not torch.equal(before["head.weight"], after["head.weight"])


class Recorder(L.Callback):
    """Which parameters (head / backbone) changed in each optimisation step."""

    def __init__(self) -> None:
        self.steps: list[tuple[bool, bool]] = []
        self.before: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.before = snapshot(pl_module.model)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        after = snapshot(pl_module.model)
        changed = {k for k in after if not torch.equal(self.before[k], after[k])}
        self.steps.append(
            (any(k.startswith("head.") for k in changed), any(not k.startswith("head.") for k in changed))
        )


def test_lp_ft_trains_the_head_first_then_everything() -> None:
    torch.manual_seed(0)
    task = FinetuneTask(policy="lp-ft:0.5", model="tomoformer_tiny", model_kwargs=TINY, lr=1e-2, warmup_fraction=0.0)
    assert task.hparams.policy == "lp-ft:0.5"
    task.load_pretrained(create_model("tomoformer_tiny", **TINY).state_dict())
    assert count_parameters(task.model)[0] == sum(p.numel() for p in task.model.head.parameters())
    signals, tx_pos, target = batch()
    data = [
        {"signals": signals[i : i + 1], "tx_pos": tx_pos[i : i + 1], "buildings": target[i : i + 1]} for i in range(4)
    ]
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    recorder = Recorder()
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(task, train_dataloaders=loader)
    assert recorder.steps == [(True, False), (True, False), (True, True), (True, True)]
    assert all(p.requires_grad for p in task.model.parameters())
