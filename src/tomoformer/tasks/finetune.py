"""``finetune``: continue training a pretrained checkpoint under a fine-tuning policy.

The run reuses :func:`tomoformer.tasks.train.fit_task` (same Lightning loop and run folder as ``train``) with a
:class:`~tomoformer.tasks.mapping.MappingTask` whose policy is not ``full``; the base task
(:mod:`tomoformer.tasks.base`) merges LoRA adapters into every checkpoint Lightning writes, so ``best.ckpt`` and
``last.ckpt`` hold plain registry weights, and keeps the unmerged adapter state for ``finetune --resume``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tomoformer.checkpoint import load_checkpoint
from tomoformer.errors import ConfigError
from tomoformer.models.adapt import count_parameters
from tomoformer.models.protocol import requires_fit
from tomoformer.pretrained import resolve as resolve_pretrained
from tomoformer.tasks.config import FinetuneConfig
from tomoformer.tasks.mapping import MappingTask
from tomoformer.tasks.policy import parse_policy
from tomoformer.tasks.train import (
    TrainConfig,
    TrainResult,
    datamodule_for,
    finish_run,
    run_job,
    task_options,
)

# Fine-tuning is mapping under a policy other than "full": the base task owns the policy (kept as a name for
# callers and for the experts pipeline, which fine-tunes each expert from a pretrained checkpoint).
FinetuneTask = MappingTask


@dataclasses.dataclass
class FinetuneResult:
    """What a fine-tuning run produced, and the trainable/total parameter counts under the policy."""

    train: TrainResult
    policy: str
    trainable: int
    total: int


def run_finetune(
    checkpoint: str | Path | None = None, policy: str | None = None, config: TrainConfig | None = None
) -> FinetuneResult:
    """Fine-tune the model in ``checkpoint`` on ``config.data`` under ``policy``; write the run folder ``config.out``.

    ``config`` is a :class:`FinetuneConfig` (``checkpoint`` and ``policy`` then default to its ``init`` and
    ``policy``) or a plain :class:`TrainConfig`. ``config.model`` and ``config.model_kwargs`` are taken from the
    checkpoint. The run folder's ``config.yaml`` is the resolved :class:`FinetuneConfig`.
    """
    config = config if config is not None else FinetuneConfig()
    checkpoint = checkpoint if checkpoint is not None else getattr(config, "init", None)
    if not checkpoint:
        raise ConfigError("give the checkpoint to fine-tune (--from CKPT, or init: in the config)")
    parsed = parse_policy(policy if policy is not None else getattr(config, "policy", "full"))
    checkpoint = resolve_pretrained(str(checkpoint))  # a shipped model's name works as --from
    loaded = load_checkpoint(checkpoint)
    if requires_fit(loaded.model):
        raise ConfigError(f"{checkpoint}: model {loaded.name!r} is fitted, not trained; nothing to fine-tune")
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
    values.update(model=loaded.name, model_kwargs=dict(loaded.model_kwargs))
    config = FinetuneConfig(**values, init=str(checkpoint), policy=str(parsed))
    record = {**config.to_dict(), "finetune": {"from": str(checkpoint), "policy": str(parsed)}}
    tasks: list[FinetuneTask] = []  # the task trained (one)
    before: list[int] = []  # its trainable parameters when training started

    def make_task(datamodule: Any) -> FinetuneTask:
        task = FinetuneTask(policy=str(parsed), **task_options(config, datamodule.attrs))
        task.load_pretrained(loaded.model.state_dict())
        trainable, total = count_parameters(task.model)
        print(f"policy {parsed}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.1f}%)")
        tasks.append(task)
        before.append(trainable)
        return task

    def finish(run: Any, result: TrainResult) -> FinetuneResult:
        finish_run(run, result)
        return _result(result, tasks[0], before=before[0])

    def _result(result: TrainResult, task: FinetuneTask, before: int) -> FinetuneResult:
        # lp-ft ends with everything trainable: report what the policy trained at its widest, not the probe phase.
        trainable, total = count_parameters(task.model)
        return FinetuneResult(train=result, policy=str(parsed), trainable=max(before, trainable), total=total)

    def finished(run: Any, done: TrainResult) -> FinetuneResult:
        # The counts under the policy, from the task a fresh run would train (no data needed for them).
        task = FinetuneTask(policy=str(parsed), **task_options(config, {}))
        return _result(done, task, before=0)

    return run_job(
        config,
        lambda: datamodule_for(config),
        make_task,
        record=record,
        command="finetune",
        inputs=(str(checkpoint),),
        finish=finish,
        finished=finished,
    )
