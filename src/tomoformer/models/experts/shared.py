"""LoRA experts that share one backbone: expert k = the frozen pretrained model + LoRA adapter k + head k.

K fully fine-tuned experts cost K copies of the backbone; K LoRA experts built with
:class:`SharedLoRABackbone` cost one backbone plus K small adapters and heads, in memory, on disk and when the
experts are loaded. The adapters are peft LoRA adapters (one named ``expert{k}`` per expert, injected into the
same layers that ``--policy lora:R`` adapts), so they are exactly the adapters a ``lora:R`` fine-tuning run
trains: ``tomoformer experts fit`` trains each expert as such a run and copies its adapter and head in with
:meth:`SharedLoRABackbone.load_expert`.

Each expert's head is a full copy (``lora:R`` trains the head fully). The backbone's own head slot is a
:class:`_HeadSlot` that runs the calling expert's head; the experts are :class:`ExpertView` modules that own
their head and point at the shared backbone, so ``ExpertsModel`` treats them like separate experts (hooks on
``get_classifier()``, ``experts[k](signals, tx_pos)``) while the state dict holds the backbone once.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from tomoformer.errors import ConfigError
from tomoformer.models.adapt import freeze_module, lora_config, lora_target_modules, pin_transformer_slow_path
from tomoformer.models.registry import create_model

__all__ = ["ExpertView", "SharedLoRABackbone", "adapter_name"]


def adapter_name(k: int) -> str:
    """The peft adapter name of expert k."""
    return f"expert{k}"


class _HeadSlot(nn.Module):
    """Stands in for the backbone's head: runs the active expert's head. Attribute reads the model makes of its
    head (``self.head.weight.dtype``) go to the active head, or to the first expert's between calls."""

    def __init__(self, template: nn.Module) -> None:
        super().__init__()
        self.__dict__["_template"] = template
        self.__dict__["_current"] = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        current = self.__dict__["_current"]
        if current is None:
            raise RuntimeError("the shared backbone's head runs only through an ExpertView")
        return current(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_current"] or self.__dict__["_template"], name)


class SharedLoRABackbone(nn.Module):
    """One registry model with ``num_experts`` LoRA adapters of ``rank``; see the module docstring.

    The base weights are frozen (BatchNorm pinned to eval); adapters and heads train. Call :meth:`views` once to
    get the experts.
    """

    def __init__(self, spec: dict[str, Any], num_experts: int, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if num_experts < 1 or rank < 1:
            raise ConfigError("a shared LoRA backbone needs at least one expert and rank >= 1")
        model = create_model(spec["model"], **dict(spec.get("model_kwargs") or {}))
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if not isinstance(head, nn.Module):
            raise ConfigError(f"shared LoRA experts need a model with a head (get_classifier), not {spec['model']}")
        self.head_path = next(name for name, module in model.named_modules() if module is head)
        targets = lora_target_modules(model)
        if not targets:
            raise ConfigError(f"model {spec['model']} has no layers LoRA can adapt")
        freeze_module(model)
        for k in range(num_experts):
            _inject(model, lora_config(targets, rank, alpha), adapter_name(k))
        pin_transformer_slow_path(model)
        heads = [copy.deepcopy(head) for _ in range(num_experts)]
        for h in heads:
            h.requires_grad_(True)
        parent_path, _, attr = self.head_path.rpartition(".")
        self.slot = _HeadSlot(heads[0])
        setattr(model.get_submodule(parent_path) if parent_path else model, attr, self.slot)
        self.model = model
        self.__dict__["_heads"] = heads  # handed to the views, which register them

    def views(self) -> list[ExpertView]:
        """The K experts (each registers its own head; the backbone stays registered here only)."""
        return [ExpertView(self, k, head) for k, head in enumerate(self.__dict__["_heads"])]

    def lora_layers(self) -> Iterator[nn.Module]:
        from peft.tuners.lora import LoraLayer

        return (m for m in self.model.modules() if isinstance(m, LoraLayer))

    @contextlib.contextmanager
    def active(self, k: int, head: nn.Module) -> Iterator[None]:
        """Run the backbone as expert k inside the block."""
        # peft's set_adapter also sets requires_grad (active adapter on, the rest off); the experts' trainability
        # is ours to decide (global policy), so it is put back: the adapters already used in this forward keep
        # their place in the autograd graph either way.
        flags = [(p, p.requires_grad) for p in self.adapter_parameters()]
        for layer in self.lora_layers():
            layer.set_adapter(adapter_name(k))
        for param, flag in flags:
            param.requires_grad_(flag)
        self.slot.__dict__["_current"] = head
        try:
            yield
        finally:
            self.slot.__dict__["_current"] = None

    def adapter_parameters(self, k: int | None = None) -> list[nn.Parameter]:
        """The LoRA parameters of expert k (all experts for None)."""
        tag = None if k is None else f".{adapter_name(k)}."
        return [p for n, p in self.model.named_parameters() if "lora_" in n and (tag is None or tag in f"{n}.")]

    def load_base(self, state_dict: dict[str, Tensor]) -> None:
        """Load plain registry weights (the pretrained model) into the frozen base layers and every head."""
        own = {_plain_name(n): n for n in self.model.state_dict() if "lora_" not in n}
        head_keys = {k for k in state_dict if k.startswith(self.head_path + ".")}
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own) - head_keys)
        if missing or unexpected:
            raise ConfigError(f"backbone weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        with torch.no_grad():
            params = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
            for plain, name in own.items():
                params[name].copy_(state_dict[plain])
        head_state = self._head_state(state_dict)
        for head in self.__dict__["_heads"]:  # every expert starts from the pretrained head, as lora:R does
            head.load_state_dict(head_state, strict=True)

    def load_expert(self, k: int, head: nn.Module, lora_state: dict[str, Tensor]) -> None:
        """Copy a ``lora:R`` run's unmerged state (peft adapter ``default``; plain names otherwise) into expert k:
        its adapter weights and its head."""
        wanted = {n for n in self.model.state_dict() if f".{adapter_name(k)}." in n}
        adapters = {n.replace(".default.", f".{adapter_name(k)}."): v for n, v in lora_state.items() if "lora_" in n}
        if set(adapters) != wanted:
            raise ConfigError(f"expert {k}: the run's LoRA adapters do not match the shared backbone's")
        head_state = self._head_state(lora_state)
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, value in adapters.items():
                params[name].copy_(value)
        head.load_state_dict(head_state, strict=True)

    def _head_state(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """The head's entries of a whole-model state dict, named as the head's own."""
        prefix = self.head_path + "."
        return {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}


class ExpertView(nn.Module):
    """Expert k of a :class:`SharedLoRABackbone`: ``(signals, tx_pos) -> logits`` like a registry model; owns its
    head, not the backbone."""

    def __init__(self, backbone: SharedLoRABackbone, index: int, head: nn.Module) -> None:
        super().__init__()
        self.__dict__["_backbone"] = backbone  # not a submodule: the backbone is registered once, by its owner
        self.index = index
        self.head = head

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        backbone = self.__dict__["_backbone"]
        with backbone.active(self.index, self.head):
            return backbone.model(signals, tx_pos)


def _inject(model: nn.Module, config: Any, name: str) -> None:
    import warnings

    from peft import inject_adapter_in_model

    with warnings.catch_warnings():
        # peft warns that a second adapter makes a multi-adapter model: here that is the point.
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, model, adapter_name=name)


def _plain_name(name: str) -> str:
    # peft wraps an adapted layer: its own weights move to "<layer>.base_layer.<param>".
    return name.replace(".base_layer.", ".")
