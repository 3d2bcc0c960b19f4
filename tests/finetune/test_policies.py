"""Fine-tuning policies: parsing, frozen parameters stay bit-identical, LLRD groups, LoRA merge, LP-FT phases."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

from tests.conftest import toy_arrays
from tomoformer.errors import ConfigError
from tomoformer.finetune.policies import (
    Policy,
    apply_policy,
    count_parameters,
    layer_decay_groups,
    layer_groups,
    merge_lora,
    parse_policy,
)
from tomoformer.finetune.run import FinetuneTask
from tomoformer.models.registry import create_model

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 4}
MODELS = {
    "tomoformer_tiny": TINY,
    "unet": {"base_channels": 8, "depth": 2},
    "seednet": {"d_model": 16, "num_heads": 2, "num_layers": 2, "dim_feedforward": 32},
}


class BatchNormNet(nn.Module):
    """A tiny timm-style model with BatchNorm, to check that frozen normalisation statistics never move."""

    def __init__(self, t: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(t, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(
            *(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)) for _ in range(2))
        )
        self.head = nn.Conv2d(8, 1, 1)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^stem", "blocks": r"^blocks\.(\d+)"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, signals: torch.Tensor, tx_pos: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.blocks(self.stem((signals + 80) / 20)))[:, 0]


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    arrays = toy_arrays(n=4, t=4, size=16, seed=seed)
    return (
        torch.from_numpy(arrays["signals"]),
        torch.from_numpy(arrays["tx_pos"]),
        torch.from_numpy(arrays["buildings"]).float(),
    )


def train_steps(model: nn.Module, steps: int = 3, lr: float = 1e-2) -> None:
    """A few AdamW steps in train mode on the toy data; only requires_grad parameters go to the optimiser."""
    signals, tx_pos, target = batch()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    model.train()
    for _ in range(steps):
        loss = nn.functional.binary_cross_entropy_with_logits(model(signals, tx_pos), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


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
def test_every_learned_model_has_layer_groups_from_stem_to_head(name: str) -> None:
    model = create_model(name, **MODELS[name])
    groups = layer_groups(model)
    assert len(groups) == 4  # stem, 2 blocks/stages/layers, rest
    head = {f"head.{n}" for n, _ in model.get_classifier().named_parameters()}
    assert head <= set(groups[-1])
    assert sorted(n for g in groups for n in g) == sorted(n for n, _ in model.named_parameters())


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
        sum(v.numel() for v in before.values()),
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


@pytest.mark.parametrize("name", list(MODELS))
def test_llrd_lr_scales_decrease_geometrically_from_head_to_stem(name: str) -> None:
    model = create_model(name, **MODELS[name])
    groups = layer_decay_groups(model, lr=1e-3, decay=0.5, weight_decay=0.05)
    by_layer = {g["layer"]: g["lr"] for g in groups}
    assert sorted(by_layer) == [0, 1, 2, 3]
    assert by_layer == pytest.approx({i: 1e-3 * 0.5 ** (3 - i) for i in range(4)})
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(list(model.parameters())) == len({id(p) for p in grouped})
    assert all(p.ndim <= 1 for g in groups if g["weight_decay"] == 0 for p in g["params"])


@pytest.mark.parametrize("name", list(MODELS))
def test_lora_trains_only_adapters_and_head_and_merges_into_plain_model(name: str) -> None:
    torch.manual_seed(0)
    model = apply_policy(create_model(name, **MODELS[name]), "lora:4")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any(n.startswith("head.") for n in trainable)
    before = snapshot(model)
    train_steps(model, steps=2)
    after = snapshot(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k or k.startswith("head.") for k in changed)
    signals, tx_pos, _ = batch(seed=1)
    model.eval()
    with torch.no_grad():
        adapted = model(signals, tx_pos)
        merged = merge_lora(model)
        assert not any("lora" in k for k in merged.state_dict())
        torch.testing.assert_close(merged(signals, tx_pos), adapted, atol=1e-5, rtol=0)
    plain = create_model(name, **MODELS[name])
    plain.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(signals, tx_pos), adapted, atol=1e-5, rtol=0)


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
