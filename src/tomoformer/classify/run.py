"""``classify pretrain`` / ``classify finetune``: one classification run and its run folder.

The Lightning loop and the run folder (``config.yaml``, ``metrics.csv``, ``checkpoints/best.ckpt`` chosen by
``val_acc``, ``figures/curves.png``) come from :func:`tomoformer.tasks.train.fit_task`, as for
the mapping models, plus ``checkpoints/last.ckpt`` with the final weights (no optimiser state: classification
runs do not resume); the run then scores ``best.ckpt`` on the validation images (``val_metrics.json``,
``figures/confusion_matrix.png``). The model starts from, in this order of precedence: a classifier
checkpoint (``source``), a weights file (``weights``), timm's download (``pretrained``), or random
initialisation. The model is always rebuilt for the data: its image size, channels and classes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only

from tomoformer.classify.config import ClassifyConfig
from tomoformer.classify.data import ImageDataModule, ImageSet, load_images, match_classes, split
from tomoformer.classify.evaluate import evaluate_checkpoint, load_classifier
from tomoformer.classify.models import (
    create_classifier,
    load_weights,
    read_weights_file,
    resolve_model_kwargs,
)
from tomoformer.classify.task import ClassifyTask
from tomoformer.errors import ConfigError
from tomoformer.models.adapt import count_parameters
from tomoformer.outputs import RunFolder
from tomoformer.tasks.policy import parse_policy
from tomoformer.tasks.train import TrainResult, run_job

# Keyword arguments resolved from the data: never copied from a checkpoint into a model for other data.
_DATA_KWARGS = ("num_classes", "in_chans", "img_size")


@dataclass
class ClassifyResult:
    """What a run produced: best checkpoint, validation metrics and parameter counts under the policy."""

    out: Path
    best_checkpoint: Path
    val_top1: float
    metrics: dict[str, float]
    trainable: int
    total: int
    seconds: float


def read_data(config: ClassifyConfig) -> tuple[ImageSet, ImageSet]:
    """(train, validation) images: ``val_data`` or a seeded ``val_fraction`` of ``data``."""
    images = load_images(config.data, config.image_size)
    if config.val_data:
        val = load_images(config.val_data, config.image_size)
        if val.image_size != images.image_size or val.channels != images.channels:
            raise ConfigError(f"{config.val_data}: images differ in size or channels from {config.data}")
        return images, match_classes(val, images.class_names, str(config.val_data))
    return split(images, config.val_fraction, config.seed)


def run_classify(config: ClassifyConfig, source: str | Path | None = None) -> ClassifyResult:
    """Train a classifier on ``config.data`` (from ``source`` checkpoint, weights or scratch) under
    ``config.policy``; write the run folder ``config.out``."""
    start = time.perf_counter()
    policy = parse_policy(config.policy)
    if source and (config.weights or config.pretrained):
        raise ConfigError("give --from CKPT, or --weights / --pretrained with --model, not both")
    train, val = read_data(config)
    loaded = load_classifier(source) if source else None
    name, extra, patch = config.model, dict(config.model_kwargs), config.patch_size
    if loaded is not None:
        name = loaded.name
        extra = {k: v for k, v in loaded.model_kwargs.items() if k not in (*_DATA_KWARGS, "patch_size")}
        patch = patch or loaded.model_kwargs.get("patch_size")
    kwargs = resolve_model_kwargs(name, len(train.class_names), train.channels, train.image_size, patch, extra)
    origin = str(source) if source else config.weights or ("timm" if config.pretrained else "scratch")
    record = {
        **config.to_dict(),
        "model": name,
        "model_kwargs": kwargs,
        "init": origin,
        "class_names": train.class_names,
    }
    inputs = (str(source) if source else None, config.weights)
    counts: dict[str, int] = {}

    def make_task(datamodule: Any) -> ClassifyTask:
        # Built after open_run seeded everything.
        task = ClassifyTask(
            name,
            kwargs,
            train.class_names,
            policy=str(policy),
            lr=config.lr,
            weight_decay=config.weight_decay,
            warmup_fraction=config.warmup_fraction,
            label_smoothing=config.label_smoothing,
        )
        if loaded is not None:
            fresh = load_weights(task.model, loaded.state_dict, str(source))
        elif config.weights:
            fresh = load_weights(task.model, read_weights_file(config.weights), config.weights)
        elif config.pretrained:
            task.model.load_state_dict(create_classifier(name, kwargs, pretrained=True).state_dict())
            fresh = []
        else:
            fresh = []
        if fresh:
            print(f"new classifier head for {len(train.class_names)} classes ({', '.join(fresh)} freshly initialised)")
        task.apply_policy()
        counts["trainable"], counts["total"] = trainable, total = count_parameters(task.model)
        print(f"policy {policy}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.1f}%)")
        return task

    def finish(run: RunFolder, result: TrainResult) -> ClassifyResult:
        top1 = math.nan
        # last.ckpt is Lightning's own, written every epoch (fit_task): merged weights and task name for loading,
        # optimiser and adapter state for --resume.
        if rank_zero_only.rank == 0:  # one writer under DDP
            scores = evaluate_checkpoint(
                result.best_checkpoint, val, run.path, "validation images", name="val_metrics.json"
            )
            top1 = float(scores["top1"])
        run.finish(metrics=result.metrics, val_top1=top1)
        return ClassifyResult(
            out=run.path,
            best_checkpoint=result.best_checkpoint,
            val_top1=top1,
            metrics=result.metrics,
            trainable=counts["trainable"],
            total=counts["total"],
            seconds=time.perf_counter() - start,
        )

    # The run options are the classification config's own (fit_task reads RunOptions); only the model is resolved.
    run_config = dataclasses.replace(config, model=name, model_kwargs=kwargs)
    return run_job(
        run_config,
        lambda: ImageDataModule(train, val, config.batch_size, config.seed),
        make_task,
        record=record,
        command="classify",
        inputs=inputs,
        monitor=("val_acc", "max"),
        finish=finish,
        finished=_finished,
    )


def _finished(run: RunFolder, done: TrainResult) -> ClassifyResult:
    """The result of a run that had already finished (``--resume`` with no more epochs or steps)."""
    top1 = run.marker.get("val_top1")
    return ClassifyResult(
        out=run.path,
        best_checkpoint=done.best_checkpoint,
        val_top1=float(top1) if isinstance(top1, int | float) else math.nan,
        metrics=done.metrics,
        trainable=0,
        total=0,
        seconds=0.0,
    )
