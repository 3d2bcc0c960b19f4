"""Every registry model's own ``group_matcher`` / ``lora_targets`` give exactly the layer groups and LoRA targets
that the policy code chose by class name and regex before the move (the reference below is that old code)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from timm.models._manipulate import group_parameters
from torch import nn

from tomoformer.errors import ConfigError
from tomoformer.models.adapt import layer_groups, lora_target_modules
from tomoformer.models.registry import create_model, list_models

# The pre-move policy code (finetune/policies.py at commit 630215e), kept verbatim as the reference.
_OLD_MATCHERS: dict[str, dict[str, Any]] = {
    "UNet": {"stem": r"^stem", "blocks": r"^down\.(\d+)"},
    "SeedNet": {"stem": r"^cnn", "blocks": r"^encoder\.layers\.(\d+)"},
}
_OLD_LORA = re.compile(r"(^|\.)blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])$|^agg\.(q|kv|proj|merge|mlp\.fc[12])$")


def old_layer_groups(model: nn.Module) -> list[list[str]] | None:
    if type(model).__name__ in ("TomoFormer",):
        matcher = model.group_matcher(coarse=True)
    elif type(model).__name__ in _OLD_MATCHERS:
        matcher = _OLD_MATCHERS[type(model).__name__]
    elif hasattr(model, "group_matcher"):
        matcher = model.group_matcher(coarse=True)
    else:
        return None
    groups = group_parameters(model, matcher)
    return [groups[k] for k in sorted(groups)]


def old_lora_targets(model: nn.Module) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _OLD_LORA.search(n)]
    if names:
        return names
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    skip = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    return [
        n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d) and m is not head and id(m) not in skip
    ]


SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "decoder_embed_dim": 32, "decoder_heads": 2}
KWARGS: dict[str, dict[str, Any]] = {
    "tomoformer_small": SMALL,
    "tomoformer_base": SMALL,
    "seednet": {"img_size": 16, "d_model": 16, "num_heads": 2, "num_layers": 2, "dim_feedforward": 32},
    "seednet_small": {"img_size": 16},
    "unet": {"base_channels": 4, "depth": 2, "physics_features": True},
}
CASES = [(name, KWARGS.get(name, {})) for name in list_models()]
CASES += [
    ("tomoformer_tiny", {**SMALL, "decoder": "transformer"}),
    ("seednet", {"tokens": "patch", "d_model": 16, "num_heads": 2, "num_layers": 2, "dim_feedforward": 32}),
    ("experts", {"experts": [{"model": "tomoformer_tiny", "model_kwargs": SMALL}] * 2}),
]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_model_hooks_give_the_pre_move_groups_and_lora_targets(name: str, kwargs: dict[str, Any]) -> None:
    model = create_model(name, **kwargs)
    old = old_layer_groups(model)
    if old is None:
        with pytest.raises(ConfigError, match="no layer groups"):
            layer_groups(model)
    else:
        assert layer_groups(model) == old
    assert lora_target_modules(model) == old_lora_targets(model)
