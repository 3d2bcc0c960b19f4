"""Model-level adaptation primitives: parameter counts, layer groups, freezing, LoRA adapters, layer-wise LR decay.

These work on any registry model (and any timm-style ``nn.Module``); the fine-tuning policy grammar that combines
them (``--policy full|head|freeze:K|llrd:G|lora:R|lp-ft``) lives in :mod:`tomoformer.tasks.policy`.

Layer groups come from the model's timm-style ``group_matcher(coarse=True)`` and LoRA targets from its
``lora_targets()``: the model knows its own layout, this module knows none. A model without ``group_matcher`` has
no layer groups (``freeze:K`` and ``llrd:G`` refuse it); a model without ``lora_targets`` gets the generic choice
of :func:`default_lora_targets`.

Frozen means frozen: ``requires_grad=False`` (so optimisers never see the parameters) and every BatchNorm inside
a frozen part stays in eval mode even after ``.train()``, so its running statistics never move.
"""

from __future__ import annotations

import re
import types
from typing import Any

from timm.models._manipulate import group_parameters
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tomoformer.errors import ConfigError

__all__ = [
    "count_parameters",
    "default_lora_targets",
    "freeze_all_but_head",
    "freeze_module",
    "freeze_parameters",
    "inject_lora",
    "layer_decay_groups",
    "layer_groups",
    "linear_and_conv_targets",
    "lora_config",
    "lora_target_modules",
    "merge_lora",
    "pin_transformer_slow_path",
    "unfreeze_module",
]

# Linear projections of timm Blocks (attention and MLP): the generic LoRA choice for timm models.
_TIMM_BLOCK_LINEARS = re.compile(r"(^|\.)blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])$")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, from ``requires_grad``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names in layer groups ordered from stem (index 0) to head (last): stem, blocks..., rest."""
    if not hasattr(model, "group_matcher"):
        raise ConfigError(f"model {type(model).__name__} has no layer groups (no group_matcher) for this policy")
    groups = group_parameters(model, model.group_matcher(coarse=True))
    return [groups[k] for k in sorted(groups)]


def _pinned_eval_train(self: nn.Module, mode: bool = True) -> nn.Module:
    # Instance-level replacement of nn.Module.train for frozen BatchNorm: parents call child.train(mode).
    return nn.Module.train(self, False)


def freeze_module(module: nn.Module) -> None:
    """Stop ``module`` from learning: requires_grad=False and BatchNorm layers pinned to eval mode."""
    for param in module.parameters():
        param.requires_grad_(False)
    for sub in module.modules():
        if isinstance(sub, _BatchNorm):
            sub.train = types.MethodType(_pinned_eval_train, sub)
            sub.eval()


def unfreeze_module(module: nn.Module) -> None:
    """Undo :func:`freeze_module` (BatchNorm follows its parent's mode again from the next ``.train()``)."""
    for param in module.parameters():
        param.requires_grad_(True)
    for sub in module.modules():
        if isinstance(sub, _BatchNorm) and "train" in sub.__dict__:
            del sub.train


def freeze_parameters(model: nn.Module, names: set[str]) -> None:
    """Freeze the parameters called ``names``, and every BatchNorm whose parameters are all among them."""
    for name, param in model.named_parameters():
        if name in names:
            param.requires_grad_(False)
    for module_name, sub in model.named_modules():
        if isinstance(sub, _BatchNorm):
            own = {f"{module_name}.{n}" if module_name else n for n, _ in sub.named_parameters()}
            if own and own <= names:
                freeze_module(sub)


def freeze_all_but_head(model: nn.Module) -> None:
    """Linear probe: freeze everything except ``model.get_classifier()``."""
    if not hasattr(model, "get_classifier"):
        raise ConfigError(f"model {type(model).__name__} has no get_classifier(): no head to probe")
    freeze_module(model)
    unfreeze_module(model.get_classifier())


def lora_target_modules(model: nn.Module) -> list[str]:
    """Names of the modules LoRA adapts: the model's own ``lora_targets()``, else :func:`default_lora_targets`."""
    if hasattr(model, "lora_targets"):
        return list(model.lora_targets())
    return default_lora_targets(model)


def default_lora_targets(model: nn.Module) -> list[str]:
    """The generic LoRA choice: the attention and MLP projections of timm Blocks if the model has them, else
    :func:`linear_and_conv_targets`."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _TIMM_BLOCK_LINEARS.search(n)]
    return names or linear_and_conv_targets(model)


def linear_and_conv_targets(model: nn.Module) -> list[str]:
    """Every plain ``nn.Linear`` and ``nn.Conv2d`` that the forward calls, except the head (``get_classifier()``)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    # nn.MultiheadAttention reads out_proj.weight directly, so an adapter there would never run.
    skip = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    return [
        n for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d) and m is not head and id(m) not in skip
    ]


def lora_config(targets: list[str], rank: int, alpha: float | None = None, dropout: float = 0.0) -> Any:
    """The peft ``LoraConfig`` every LoRA adapter here uses: ``rank``, alpha = rank unless given, no bias."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha or rank, lora_dropout=dropout, target_modules=targets, bias="none")


def pin_transformer_slow_path(model: nn.Module) -> None:
    """Make every ``nn.TransformerEncoderLayer`` take its plain forward path, which runs LoRA adapters.

    The eval fast path reads linear1/linear2 weights directly and would skip the adapters; with a false
    activation flag forward() takes the plain path (the activation itself is ``layer.activation``).
    :func:`merge_lora` undoes it.
    """
    for layer in model.modules():
        if isinstance(layer, nn.TransformerEncoderLayer) and "_fastpath_kind" not in layer.__dict__:
            layer._fastpath_kind = layer.activation_relu_or_gelu
            layer.activation_relu_or_gelu = 0


def inject_lora(model: nn.Module, rank: int, alpha: float | None = None, dropout: float = 0.0) -> nn.Module:
    """Add LoRA adapters of ``rank`` in place; freeze everything else except the head. Returns ``model``."""
    from peft import inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    if any(isinstance(m, LoraLayer) for m in model.modules()):
        # Adapters on adapters would be merged into each other's base layers: refuse rather than corrupt.
        raise ConfigError(f"model {type(model).__name__} already carries LoRA adapters; fine-tune it with full or head")
    targets = lora_target_modules(model)
    if not targets:
        raise ConfigError(f"model {type(model).__name__} has no layers LoRA can adapt")
    freeze_module(model)
    inject_adapter_in_model(lora_config(targets, rank, alpha, dropout), model)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    pin_transformer_slow_path(model)
    if hasattr(model, "get_classifier"):
        unfreeze_module(model.get_classifier())
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and remove the adapter modules, in place.

    The result has exactly the parameter names of the plain registry model, so its ``state_dict`` loads into
    ``create_model(name, **kwargs)``. A model without adapters is returned unchanged.
    """
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    for layer in model.modules():
        if isinstance(layer, nn.TransformerEncoderLayer) and "_fastpath_kind" in layer.__dict__:
            layer.activation_relu_or_gelu = layer.__dict__.pop("_fastpath_kind")
    return model


def layer_decay_groups(
    model: nn.Module, lr: float, decay: float, weight_decay: float, no_weight_decay: set[str] | None = None
) -> list[dict[str, Any]]:
    """AdamW groups with layer-wise LR decay: group i of n gets ``lr * decay**(n-1-i)`` (head = lr).

    Like ``timm.optim.param_groups_layer_decay`` but over :func:`layer_groups`, so it works for every registry
    model; biases, norms and ``no_weight_decay()`` names get no weight decay. Frozen parameters are left out.
    """
    skip = set(no_weight_decay or ())
    params = dict(model.named_parameters())
    groups = layer_groups(model)
    n = len(groups)
    out: list[dict[str, Any]] = []
    for i, names in enumerate(groups):
        scale = decay ** (n - 1 - i)
        decayed = [params[k] for k in names if params[k].requires_grad and params[k].ndim > 1 and k not in skip]
        plain = [params[k] for k in names if params[k].requires_grad and (params[k].ndim <= 1 or k in skip)]
        for chunk, wd in ((decayed, weight_decay), (plain, 0.0)):
            if chunk:
                out.append({"params": chunk, "weight_decay": wd, "lr": lr * scale, "lr_scale": scale, "layer": i})
    return out
