"""``finetune``: continue training a pretrained checkpoint under a fine-tuning policy.

The run reuses :func:`tomoformer.tasks.train.fit_task` (same Lightning loop and run folder as ``train``). LoRA
adapters are merged into a copy of the model every time Lightning writes a checkpoint, so ``best.ckpt`` and
``last.ckpt`` hold plain registry weights and load with :func:`tomoformer.checkpoint.load_checkpoint` (merging at
save time rather than once after training keeps ``best.ckpt``, which is written mid-run, loadable too). The
unmerged adapter state travels along under ``"lora_state_dict"``, so ``finetune --resume`` continues a LoRA run
from ``last.ckpt`` exactly like any other run.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from tomoformer.checkpoint import load_checkpoint
from tomoformer.errors import ConfigError
from tomoformer.finetune.policies import (
    Policy,
    apply_policy,
    count_parameters,
    layer_decay_groups,
    merge_lora,
    parse_policy,
    unfreeze_module,
)
from tomoformer.tasks.mapping import MappingTask, weight_decay_groups
from tomoformer.tasks.train import (
    TrainConfig,
    TrainResult,
    datamodule_for,
    finish_run,
    finished_result,
    fit_task,
    open_run,
    task_options,
)


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


class FinetuneTask(MappingTask):
    """A :class:`MappingTask` whose model follows a fine-tuning ``policy`` (see ``finetune.policies``).

    Build it, load pretrained weights with :meth:`load_pretrained` (which applies the policy), then train.
    """

    def __init__(self, policy: str = "full", **kwargs: Any) -> None:
        super().__init__(**kwargs)  # save_hyperparameters() there records ``policy`` too
        self.policy: Policy = parse_policy(policy)

    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> FinetuneTask:
        """Load plain registry weights into the model, then freeze / adapt it as the policy says."""
        self.model.load_state_dict(state_dict, strict=True)
        apply_policy(self.model, self.policy)
        return self

    def parameter_groups(self) -> list[dict[str, Any]]:
        if self.policy.kind == "llrd":
            skip = set(getattr(self.model, "no_weight_decay", lambda: set())())
            return layer_decay_groups(
                self.model, self.hparams.lr, float(self.policy.value or 1.0), self.hparams.weight_decay, skip
            )
        if self.policy.kind == "lp-ft":
            # Every parameter is in the optimiser from the start; AdamW skips those without gradients during
            # the probe phase (requires_grad=False), so they neither move nor decay until the callback thaws them.
            return weight_decay_groups(self.model, self.hparams.weight_decay, include_frozen=True)
        return super().parameter_groups()

    def configure_callbacks(self) -> list[L.Callback]:
        if self.policy.kind == "lp-ft":
            return [LinearProbeThenFinetune(float(self.policy.value or 0.5))]
        return []

    def merged_model(self) -> torch.nn.Module:
        """A copy of the model with LoRA adapters folded in: the plain registry architecture."""
        return merge_lora(copy.deepcopy(self.model))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.policy.kind != "lora":
            return
        state = checkpoint["state_dict"]
        checkpoint[_LORA_KEY] = {k: state.pop(k) for k in [k for k in state if k.startswith("model.")]}
        state.update({f"model.{k}": v.detach().clone() for k, v in self.merged_model().state_dict().items()})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this before it loads ``state_dict`` into a resumed run: give it the adapter weights.
        if self.policy.kind == "lora":
            if _LORA_KEY not in checkpoint:
                raise ConfigError("cannot resume this LoRA run: its last.ckpt holds no adapter state")
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith("model.")]:
                del state[key]
            state.update(checkpoint[_LORA_KEY])


_LORA_KEY = "lora_state_dict"


@dataclasses.dataclass
class FinetuneResult:
    """What a fine-tuning run produced, and the trainable/total parameter counts under the policy."""

    train: TrainResult
    policy: str
    trainable: int
    total: int


def run_finetune(checkpoint: str | Path, policy: str, config: TrainConfig) -> FinetuneResult:
    """Fine-tune the model in ``checkpoint`` on ``config.data`` under ``policy``; write the run folder ``config.out``.

    ``config.model`` and ``config.model_kwargs`` are taken from the checkpoint.
    """
    start = time.perf_counter()
    parsed = parse_policy(policy)
    loaded = load_checkpoint(checkpoint)
    if getattr(loaded.model, "requires_fit", False):
        raise ConfigError(f"{checkpoint}: model {loaded.name!r} is fitted, not trained; nothing to fine-tune")
    config = dataclasses.replace(config, model=loaded.name, model_kwargs=dict(loaded.model_kwargs))
    record = {**config.to_dict(), "finetune": {"from": str(checkpoint), "policy": str(parsed)}}
    with open_run(config, record, command="finetune", inputs=(str(checkpoint),)) as run:
        datamodule = datamodule_for(config)
        task = FinetuneTask(policy=str(parsed), **task_options(config, datamodule.attrs))
        task.load_pretrained(loaded.model.state_dict())
        trainable, total = count_parameters(task.model)
        done = finished_result(run, config)
        if done is not None:
            return FinetuneResult(train=done, policy=str(parsed), trainable=trainable, total=total)
        print(f"policy {parsed}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.1f}%)")
        result = finish_run(run, fit_task(task, datamodule, config, run.begin(), start))
    # lp-ft ends with everything trainable: report what the policy trained at its widest, not the probe phase.
    trainable = max(trainable, count_parameters(task.model)[0])
    return FinetuneResult(train=result, policy=str(parsed), trainable=trainable, total=total)
