"""One training run: data, model, Lightning trainer, and a run folder with config, metrics, checkpoints, figures."""

from __future__ import annotations

import csv
import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from tomoformer.checkpoint import save_checkpoint
from tomoformer.data.datamodule import AugmentOptions, SignalDataModule
from tomoformer.errors import ConfigError
from tomoformer.io import atomic_path, write_text_atomic
from tomoformer.models.registry import create_model
from tomoformer.tasks.mapping import MappingTask


@dataclass
class TrainConfig:
    """Everything a training run needs; every field has a default that works on a laptop CPU."""

    data: str = "data/train.zarr"
    val_data: str | None = None
    out: str = "runs/train"
    model: str = "tomoformer_tiny"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 50
    max_steps: int = -1
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    dice_weight: float = 1.0
    val_fraction: float = 0.1
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None
    num_workers: int = 0
    data_on_device: bool = False
    resume: bool = False
    progress: bool = True
    fit_batches: int = 64

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (a YAML file), refusing unknown keys with one clear line."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        values = dict(values)
        if isinstance(values.get("augment"), dict):
            aug_names = {f.name for f in dataclasses.fields(AugmentOptions)}
            bad = sorted(set(values["augment"]) - aug_names)
            if bad:
                raise ConfigError(f"unknown augment option(s): {', '.join(bad)}")
            values["augment"] = AugmentOptions(**values["augment"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    best_checkpoint: Path
    metrics: dict[str, float]
    seconds: float


def start_run(config: TrainConfig, record: dict[str, Any] | None = None) -> Path:
    """Create the run folder, write its resolved config (``record`` or the config itself) and seed everything."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", yaml.safe_dump(record or config.to_dict(), sort_keys=False))
    L.seed_everything(config.seed, workers=True, verbose=False)
    return out


def datamodule_for(config: TrainConfig, require_labels: bool = True) -> SignalDataModule:
    """The (set-up) datamodule over ``config.data`` / ``config.val_data`` (``require_labels=False``: signals only)."""
    from tomoformer.data.device import DeviceDataModule

    # data_on_device: the stores live in the training device's memory and batches are made there (data/device.py).
    datamodule = (DeviceDataModule if config.data_on_device else SignalDataModule)(
        train=config.data,
        val=config.val_data,
        val_fraction=config.val_fraction,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        augment=config.augment,
        seed=config.seed,
        require_labels=require_labels,
    )
    datamodule.setup()
    return datamodule


def task_options(config: TrainConfig, data_attrs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`MappingTask` (and its subclasses) taken from ``config``."""
    return {
        "model": config.model,
        "model_kwargs": config.model_kwargs,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "warmup_fraction": config.warmup_fraction,
        "dice_weight": config.dice_weight,
        "data_attrs": _plain_attrs(data_attrs),
    }


def run_training(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` on ``config.data``; write the run folder; return the best checkpoint and metrics."""
    start = time.perf_counter()
    out = start_run(config)
    probe = create_model(config.model, **config.model_kwargs)
    # Fitted models (threshold, rti) read host datasets; only gradient training uses the device-resident mode.
    fitted = getattr(probe, "requires_fit", False)
    datamodule = datamodule_for(dataclasses.replace(config, data_on_device=False) if fitted else config)
    if fitted:
        return _fit_classical(config, probe, datamodule, out, start)
    task = MappingTask(**task_options(config, datamodule.attrs))
    return fit_task(task, datamodule, config, out, start)


def fit_task(
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    config: TrainConfig,
    out: Path,
    start: float | None = None,
    monitor: tuple[str, str] = ("val_iou", "max"),
) -> TrainResult:
    """Run the Lightning loop for ``task`` and collect the run folder's outputs; the best checkpoint is chosen by
    ``monitor`` (metric name, "max" | "min")."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from tomoformer.tasks.checkpoint_io import AtomicCheckpointIO

    start = time.perf_counter() if start is None else start
    n_params = sum(p.numel() for p in task.parameters())
    n_train = sum(p.numel() for p in task.parameters() if p.requires_grad)
    print(f"model {config.model}: {n_train:,} trainable of {n_params:,} parameters")
    checkpoints = out / "checkpoints"
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor=monitor[0],
        mode=monitor[1],
        enable_version_counter=False,
    )
    # Not ``save_last=True``: Lightning 2.6 then rewrites last.ckpt only in epochs that also improve best.ckpt,
    # and a resumed run would repeat every epoch since the last improvement.
    latest = ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, enable_version_counter=False)
    callbacks: list[Any] = [best, latest]
    # A live bar only on a terminal: in log files (CI, SLURM) it would print one line per refresh.
    progress = config.progress and sys.stderr.isatty()
    if progress:
        callbacks.append(RichProgressBar(leave=True))
    cuda = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    precision = config.precision or ("bf16-mixed" if cuda else "32-true")
    last = checkpoints / "last.ckpt"
    resume_from = last if config.resume and last.exists() else None
    if config.resume and resume_from is None:
        print(f"no {last} to resume from: starting fresh")
    # Each (re)start logs into its own folder; _merge_metrics stitches them into one metrics.csv.
    log_version = f"logs-{len(list(out.glob('logs*')))}" if resume_from else "logs"
    if not resume_from:
        for old in out.glob("logs*"):
            shutil.rmtree(old, ignore_errors=True)
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=config.max_epochs,
        max_steps=config.max_steps,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=precision,
        logger=[
            CSVLogger(save_dir=out, name="", version=log_version),
            TensorBoardLogger(save_dir=out, name="", version="tensorboard"),
        ],
        callbacks=callbacks,
        deterministic=not cuda,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
        # Our data modules shard by rank themselves, each sample exactly once per epoch; Lightning's
        # DistributedSampler would pad with duplicates (data/datamodule.py, ShardedBatchSampler).
        use_distributed_sampler=not getattr(datamodule, "shards_itself", False),
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=resume_from)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    if best.best_model_score is not None:
        metrics[f"best_{monitor[0]}"] = float(best.best_model_score)
    best_path = Path(best.best_model_path) if best.best_model_path else last
    if trainer.is_global_zero:
        _finish_run_folder(out, task)
    return TrainResult(out=out, best_checkpoint=best_path, metrics=metrics, seconds=time.perf_counter() - start)


def _fit_classical(
    config: TrainConfig, model: torch.nn.Module, datamodule: SignalDataModule, out: Path, start: float
) -> TrainResult:
    """Models such as ``threshold`` and ``rti`` are fitted from data, not trained by gradients."""
    from tomoformer.evaluation.metrics import evaluate_predictions
    from tomoformer.tasks.inference import predict_probabilities

    loader = datamodule.train_dataloader()
    batches = [batch for _, batch in zip(range(config.fit_batches), loader, strict=False)]
    model.fit(batches)
    assert datamodule.val_set is not None
    probabilities = predict_probabilities(model, datamodule.val_set, batch_size=config.batch_size)
    truth = datamodule.val_set.cache["buildings"] if datamodule.val_set.cache else None
    if truth is None:
        truth = datamodule.val_set.source.read("buildings", datamodule.val_set.indices)
    scores = evaluate_predictions(probabilities, truth)
    metrics = {f"val_{k}": float(v) for k, v in scores.items() if isinstance(v, int | float)}
    hparams = {
        "model": config.model,
        "model_kwargs": config.model_kwargs,
        "data_attrs": _plain_attrs(datamodule.attrs),
    }
    best = save_checkpoint(out / "checkpoints" / "best.ckpt", model, hparams)
    shutil.copyfile(best, out / "checkpoints" / "last.ckpt")
    write_text_atomic(out / "metrics.csv", "metric,value\n" + "".join(f"{k},{v}\n" for k, v in metrics.items()))
    return TrainResult(out=out, best_checkpoint=best, metrics=metrics, seconds=time.perf_counter() - start)


def _finish_run_folder(out: Path, task: L.LightningModule) -> None:
    """Copy the metrics CSV to the top of the run folder and draw the training curves."""
    from tomoformer.evaluation.figures import curves_figure, save_figure

    if _merge_metrics(out):
        save_figure(curves_figure(out / "metrics.csv"), out / "figures" / "curves.png")


def _merge_metrics(out: Path) -> bool:
    """One metrics.csv from the logs of the first run and every resumed run; later runs win per epoch."""
    parts = sorted(out.glob("logs*/metrics.csv"), key=lambda p: (p.parent.name != "logs", p.parent.name))
    if not parts:
        return False
    rows_by_part = []
    columns: list[str] = []
    for part in parts:
        with open(part, newline="") as f:
            reader = csv.DictReader(f)
            columns += [c for c in reader.fieldnames or [] if c not in columns]
            rows_by_part.append(list(reader))
    merged: list[dict[str, str]] = []
    for i, rows in enumerate(rows_by_part):
        later = {r.get("epoch") for later_rows in rows_by_part[i + 1 :] for r in later_rows}
        merged += [r for r in rows if r.get("epoch") not in later]
    with atomic_path(out / "metrics.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(merged)
    return True


def _plain_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Dataset attributes as plain JSON-like values (they travel inside checkpoints)."""
    keep = ("cell_size_m", "frequency_hz", "signal_unit", "rx_height_m", "source")
    return {k: attrs[k] for k in keep if k in attrs}
