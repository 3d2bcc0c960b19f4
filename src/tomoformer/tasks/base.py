"""The base of every task (mapping, pretraining, fine-tuning, classification, experts): :class:`BaseTask` owns the
model, the fine-tuning policy, the AdamW parameter groups (LLRD, LP-FT), the warm-up + cosine schedule, and LoRA
adapters when Lightning writes or reads a checkpoint. Subclasses add their forward, steps and metrics only.

A ``lora:R`` run's checkpoints hold the adapters merged into a copy of the model under ``state_dict`` (plain model
weights: ``best.ckpt``, written mid-run, loads like any other checkpoint) and the unmerged adapter state under
:data:`LORA_KEY`, from which ``--resume`` continues the run exactly.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning as L
from torch import nn

from tomoformer.errors import ConfigError
from tomoformer.models.adapt import count_parameters, layer_decay_groups, merge_lora, unfreeze_module
from tomoformer.tasks.optim import adamw_warmup_cosine, no_weight_decay_names, weight_decay_groups
from tomoformer.tasks.policy import Policy, apply_policy, parse_policy

LORA_KEY = "lora_state_dict"  # checkpoint key of the unmerged adapter weights (a LoRA run's resume state)


def merged_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with LoRA adapters folded in: the plain architecture."""
    return merge_lora(copy.deepcopy(model))


def save_lora_state(checkpoint: dict[str, Any], model: nn.Module, prefix: str = "model.") -> None:
    """In a Lightning ``checkpoint`` being written: move the adapter weights (``prefix`` keys) to :data:`LORA_KEY`
    and put the merged weights under ``state_dict``."""
    state = checkpoint["state_dict"]
    checkpoint[LORA_KEY] = {k: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    state.update({f"{prefix}{k}": v.detach().clone() for k, v in merged_copy(model).state_dict().items()})


def restore_lora_state(checkpoint: dict[str, Any], prefix: str = "model.") -> None:
    """In a Lightning ``checkpoint`` being resumed from (``on_load_checkpoint``, before Lightning loads its
    ``state_dict``): put the adapter weights back in place of the merged ones."""
    if LORA_KEY not in checkpoint:
        raise ConfigError("cannot resume this LoRA run: its last.ckpt holds no adapter state")
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]
    state.update(checkpoint[LORA_KEY])


class LinearProbeThenFinetune(L.Callback):
    """LP-FT: the task starts with only the head trainable; after ``fraction`` of the steps, unfreeze all."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.switch_step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = max(1, int(trainer.estimated_stepping_batches))
        self.switch_step = max(1, math.floor(self.fraction * total))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        model = pl_module.model
        switch = self.switch_step is not None and trainer.global_step >= self.switch_step
        if switch and not all(p.requires_grad for p in model.parameters()):
            unfreeze_module(model)
            model.train(pl_module.training)
            trainable, total = count_parameters(model)
            print(f"lp-ft: step {trainer.global_step}: full fine-tuning, {trainable:,} of {total:,} trainable")


class BaseTask(L.LightningModule):
    """A LightningModule around ``self.model`` (set by the subclass) trained under a fine-tuning ``policy``.

    What it owns: :meth:`apply_policy` / :meth:`load_pretrained` (freeze or adapt after pretrained weights are in),
    :meth:`parameter_groups` (layer-wise LR decay for ``llrd``; otherwise no weight decay on biases, norms and
    ``no_weight_decay()`` names; frozen parameters join the optimiser only under ``lp-ft``, whose callback thaws
    them), the optimiser and schedule (``hparams.lr``, ``weight_decay``, ``warmup_fraction``), the LP-FT callback,
    LoRA merge-on-save and adapters-on-resume, and the per-epoch reseeding of the training set.
    """

    model: nn.Module

    def __init__(self, policy: str = "full") -> None:
        super().__init__()
        self.policy: Policy = parse_policy(policy)

    def apply_policy(self) -> BaseTask:
        """Freeze / adapt ``self.model`` as the policy says (call it after pretrained weights are loaded)."""
        apply_policy(self.model, self.policy)
        return self

    def load_pretrained(self, state_dict: dict[str, Any]) -> BaseTask:
        """Load plain registry weights into the model, then apply the policy."""
        self.model.load_state_dict(state_dict, strict=True)
        return self.apply_policy()

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside ``self.model`` (a pretraining head, say); they join the optimiser groups."""
        return []

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups of the model under the policy, plus :meth:`extra_parameters` with the same decay rule."""
        hp = self.hparams
        if self.policy.kind == "llrd":
            skip = no_weight_decay_names(self.model)
            groups = layer_decay_groups(self.model, hp.lr, float(self.policy.value or 1.0), hp.weight_decay, skip)
        else:
            # lp-ft: the backbone joins the optimiser from the start; AdamW skips parameters without gradients
            # during the probe phase, so they neither move nor decay until the callback thaws them.
            groups = weight_decay_groups(self.model, hp.weight_decay, include_frozen=self.policy.kind == "lp-ft")
        extra = [p for p in self.extra_parameters() if p.requires_grad]
        if extra:  # into the model's decay / no-decay groups: the optimiser state keeps one layout for every task
            groups[0]["params"] += [p for p in extra if p.ndim > 1]
            if len(groups) < 2:
                groups.append({"params": [], "weight_decay": 0.0})
            groups[1]["params"] += [p for p in extra if p.ndim <= 1]
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_warmup_cosine(self, self.parameter_groups())

    def configure_callbacks(self) -> list[L.Callback]:
        if self.policy.kind == "lp-ft":
            return [LinearProbeThenFinetune(float(self.policy.value or 0.5))]
        return []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.policy.kind == "lora":
            save_lora_state(checkpoint, self.model)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this before it loads ``state_dict`` into a resumed run: give it the adapter weights.
        if self.policy.kind == "lora":
            restore_lora_state(checkpoint)

    def on_train_epoch_start(self) -> None:
        # Datasets that augment draw from (seed, epoch): a resumed run sees the same batches as one that ran through.
        datamodule = getattr(self.trainer, "datamodule", None)
        train_set = getattr(datamodule, "train_set", None)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(self.current_epoch)
