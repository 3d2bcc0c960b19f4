"""Model-level adaptation primitives: layer groups from stem to head, LLRD groups, LoRA inject and merge."""

from __future__ import annotations

import pytest
import torch

from tests.models.adapt_cases import MODELS, batch, snapshot, train_steps
from tomoformer.models.adapt import inject_lora, layer_decay_groups, layer_groups, merge_lora
from tomoformer.models.registry import create_model


@pytest.mark.parametrize("name", list(MODELS))
def test_every_learned_model_has_layer_groups_from_stem_to_head(name: str) -> None:
    model = create_model(name, **MODELS[name])
    groups = layer_groups(model)
    assert len(groups) == 4  # stem, 2 blocks/stages/layers, rest
    head = {f"head.{n}" for n, _ in model.get_classifier().named_parameters()}
    assert head <= set(groups[-1])
    assert sorted(n for g in groups for n in g) == sorted(n for n, _ in model.named_parameters())


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
    model = inject_lora(create_model(name, **MODELS[name]), 4)
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
