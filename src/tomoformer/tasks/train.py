"""One training run: data, model, Lightning trainer, and a run folder with config, metrics, checkpoints, figures."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from tomoformer.checkpoint import save_checkpoint
from tomoformer.data.datamodule import SignalDataModule
from tomoformer.io import atomic_path, recorded_entries, write_text_atomic
from tomoformer.models.protocol import requires_fit
from tomoformer.models.registry import create_model
from tomoformer.outputs import RunFolder, claim_names, run_folder
from tomoformer.tasks.config import TrainConfig
from tomoformer.tasks.mapping import MappingTask
from tomoformer.tasks.options import RunOptions


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    best_checkpoint: Path
    metrics: dict[str, float]
    seconds: float


# Options that may differ when a run is resumed: they extend or watch the run, they do not change its numbers.
# Everything else (model, data, seed, lr, batch size, augmentation, precision, devices ...) must stay the same.
RESUME_MAY_CHANGE = frozenset({"out", "resume", "overwrite", "max_epochs", "max_steps", "progress", "num_workers"})


def run_record(config: TrainConfig, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The resolved config stored as the run folder's ``config.yaml`` (``overwrite`` is a per-call choice)."""
    values = dict(record or config.to_dict())
    values.pop("overwrite", None)
    return values


@contextlib.contextmanager
def open_run(
    config: TrainConfig,
    record: dict[str, Any] | None = None,
    command: str = "train",
    inputs: tuple[str | None, ...] = (),
) -> Iterator[RunFolder]:
    """Claim the run folder ``config.out`` under the output policy (:func:`tomoformer.outputs.run_folder`) and
    seed everything. ``record``: the resolved config to store (default: ``config``); ``inputs``: files besides
    ``config.data``/``val_data`` that the run reads (the run folder may not be or hold them).

    Call ``run.begin()`` once the data and model are ready (it writes ``config.yaml``), ``run.finish(...)`` at the
    end; a failure in between leaves no fresh run folder behind.
    """
    from tomoformer.data.identity import IDENTITY_KEY, IDENTITY_MAY_CHANGE, data_identity

    # The data's fingerprint, not its path as typed, decides what --resume continues (and bad data fails here,
    # before the run folder is touched).
    stored = run_record(config, record)
    stored[IDENTITY_KEY] = data_identity(stored.get("data"), stored.get("val_data"))
    with run_folder(
        config.out,
        record=stored,
        command=command,
        resume=config.resume,
        overwrite=config.overwrite,
        inputs=(config.data, config.val_data, *inputs),
        may_change=RESUME_MAY_CHANGE | IDENTITY_MAY_CHANGE,
    ) as run:
        L.seed_everything(config.seed, workers=True, verbose=False)
        yield run


def finished_result(run: RunFolder, config: TrainConfig) -> TrainResult | None:
    """For ``--resume`` of a run that already ended (and is not given more epochs or steps): its result, after
    saying so; else None (train)."""
    if not (run.resumed and run.finished and run.stored is not None):
        return None
    more_epochs = config.max_epochs > int(run.stored.get("max_epochs") or 0)
    stored_steps = int(run.stored.get("max_steps") or -1)
    more_steps = config.max_steps > stored_steps and stored_steps != -1
    if more_epochs or more_steps:
        return None
    print(
        f"{run.path}: this run has already finished (max_epochs {run.stored.get('max_epochs')}, "
        f"max_steps {stored_steps}); nothing to do (give a larger --max-epochs to train on)"
    )
    best = run.path / str(run.marker.get("best_checkpoint") or "checkpoints/best.ckpt")
    metrics = {k: float(v) for k, v in (run.marker.get("metrics") or {}).items() if isinstance(v, int | float)}
    return TrainResult(out=run.path, best_checkpoint=best, metrics=metrics, seconds=0.0)


def finish_run(run: RunFolder, result: TrainResult) -> TrainResult:
    """Mark the run finished with its metrics and best checkpoint (read back by :func:`finished_result`)."""
    try:
        best = str(Path(result.best_checkpoint).resolve().relative_to(run.path.resolve()))
    except ValueError:
        best = str(result.best_checkpoint)
    run.finish(metrics=result.metrics, best_checkpoint=best)
    return result


def datamodule_for(config: TrainConfig, require_labels: bool = True) -> SignalDataModule:
    """The (set-up) datamodule over ``config.data`` / ``config.val_data`` (``require_labels=False``: signals only);
    ``config``: a :class:`TrainConfig` or any run config with the same data fields (``ExpertsConfig``)."""
    from tomoformer.data.device import DeviceDataModule

    # data_on_device: the stores live in the training device's memory and batches are made there (data/device.py).
    on_device = getattr(config, "data_on_device", False)
    datamodule = (DeviceDataModule if on_device else SignalDataModule)(
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
        "data_attrs": plain_attrs(data_attrs),
    }


def run_job(
    config: Any,
    make_data: Callable[[], L.LightningDataModule],
    make_task: Callable[[L.LightningDataModule], L.LightningModule],
    *,
    record: dict[str, Any] | None = None,
    command: str = "train",
    inputs: tuple[str | None, ...] = (),
    monitor: tuple[str, str] = ("val_iou", "max"),
    fit: Callable[[L.LightningModule, L.LightningDataModule, Path, float], TrainResult] | None = None,
    finish: Callable[[RunFolder, TrainResult], Any] | None = None,
    finished: Callable[[RunFolder, TrainResult], Any] | None = None,
) -> Any:
    """The one run skeleton of every run command: claim the run folder ``config.out`` (:func:`open_run`, seeds
    everything), report a run that already finished (``--resume``, :func:`finished_result`), build the data, then
    the task on it, write ``config.yaml`` (``run.begin()``), fit (:func:`fit_task`, best checkpoint by
    ``monitor``) and mark the run finished (:func:`finish_run`).

    ``config``: any run config (:class:`~tomoformer.tasks.options.RunOptions` plus ``out``, ``data``,
    ``val_data``, ``max_epochs``, ``batch_size``); ``record``, ``command``, ``inputs``: see :func:`open_run`.
    ``fit`` replaces the Lightning fit (models fitted from data); ``finish(run, result)`` replaces
    :func:`finish_run` and ``finished(run, result)`` shapes a finished run's result (their return value is
    returned). A failure before ``run.begin()`` leaves no fresh run folder behind.
    """
    start = time.perf_counter()
    with open_run(config, record, command=command, inputs=inputs) as run:
        done = finished_result(run, config)
        if done is not None:
            return finished(run, done) if finished is not None else done
        datamodule = make_data()
        task = make_task(datamodule)
        out = run.begin()
        if fit is not None:
            result = fit(task, datamodule, out, start)
        else:
            result = fit_task(task, datamodule, config, out, start, monitor=monitor)
        return finish(run, result) if finish is not None else finish_run(run, result)


def run_training(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` on ``config.data``; write the run folder; return the best checkpoint and metrics."""
    built: dict[str, Any] = {}

    def make_data() -> SignalDataModule:
        # Built after open_run seeded everything, before the task: the same random draws as every earlier run.
        built["probe"] = probe = create_model(config.model, **config.model_kwargs)
        # Fitted models (threshold, rti) read host datasets; only gradient training uses the device-resident mode.
        built["fitted"] = fitted = requires_fit(probe)
        return datamodule_for(dataclasses.replace(config, data_on_device=False) if fitted else config)

    def make_task(datamodule: SignalDataModule) -> Any:
        return built["probe"] if built["fitted"] else MappingTask(**task_options(config, datamodule.attrs))

    def fit(task: Any, datamodule: SignalDataModule, out: Path, start: float) -> TrainResult:
        if built["fitted"]:
            return _fit_classical(config, task, datamodule, out, start)
        return fit_task(task, datamodule, config, out, start)

    return run_job(config, make_data, make_task, fit=fit)


def fit_task(
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    config: RunOptions,
    out: Path,
    start: float | None = None,
    monitor: tuple[str, str] = ("val_iou", "max"),
) -> TrainResult:
    """Run the Lightning loop for ``task`` and collect the run folder's outputs; the best checkpoint is chosen by
    ``monitor`` (metric name, "max" | "min"). ``config``: any run config (its :class:`RunOptions`, ``max_epochs``
    (default -1: no limit), ``batch_size`` and ``model`` are read)."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from tomoformer.tasks.checkpoint_io import AtomicCheckpointIO

    start = time.perf_counter() if start is None else start
    n_params = sum(p.numel() for p in task.parameters())
    n_train = sum(p.numel() for p in task.parameters() if p.requires_grad)
    print(f"model {getattr(config, 'model', type(task).__name__)}: {n_train:,} trainable of {n_params:,} parameters")
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
    from tomoformer.tasks.guards import FiniteGuard
    from tomoformer.validation import check_accelerator_available

    check_accelerator_available(config.accelerator, config.devices)
    # FiniteGuard stops a diverged run with one line before a NaN state reaches a checkpoint.
    callbacks: list[Any] = [FiniteGuard(), best, latest]
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
    # Each (re)start logs into its own folder; _merge_metrics stitches them into one metrics.csv. Only our own
    # names (logs, logs-N) are counted or removed: a user's logs_mine/ beside them is none of our business.
    logs = _log_folders(out)
    log_version = f"logs-{1 + max((int(p.name[5:]) for p in logs if p.name != 'logs'), default=0)}"
    if not resume_from:
        log_version = "logs"
        ours = recorded_entries(out)
        for old in logs:
            if old.name in ours:
                shutil.rmtree(old, ignore_errors=True)
    claim_names(out, [log_version, "tensorboard", "checkpoints"])
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=getattr(config, "max_epochs", -1),
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
        **_validation_schedule(config),
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
        # Temperature scaling on the validation split, stored in best.ckpt (tasks/calibrate.py).
        from tomoformer.tasks.calibrate import calibrate_after_training

        calibrate_after_training(best_path, getattr(datamodule, "val_set", None), getattr(config, "batch_size", 8))
    return TrainResult(out=out, best_checkpoint=best_path, metrics=metrics, seconds=time.perf_counter() - start)


def _fit_classical(
    config: TrainConfig, model: torch.nn.Module, datamodule: SignalDataModule, out: Path, start: float
) -> TrainResult:
    """Models such as ``threshold`` and ``rti`` are fitted from data, not trained by gradients."""
    from tomoformer.data.datamodule import SignalMapDataset, make_loader
    from tomoformer.evaluation.metrics import evaluate_predictions
    from tomoformer.tasks.inference import predict_probabilities

    # The training split as stored, without augmentation: a threshold fitted on randomly floored or thinned
    # maps would be tuned for data it will never see.
    train_set = datamodule.train_set
    assert isinstance(train_set, SignalMapDataset)
    plain = SignalMapDataset(train_set.source, train_set.indices, augment=None, seed=config.seed)
    loader = make_loader(plain, batch_size=config.batch_size)
    batches = [batch for _, batch in zip(range(config.fit_batches), loader, strict=False)]
    model.fit(batches)
    if hasattr(model, "describe"):
        print(f"fitted {model.describe()}")
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
        "data_attrs": plain_attrs(datamodule.attrs),
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
    parts = sorted(
        (p / "metrics.csv" for p in _log_folders(out) if (p / "metrics.csv").is_file()),
        key=lambda p: (p.parent.name != "logs", int(p.parent.name[5:] or 0)),
    )
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


def _log_folders(out: Path) -> list[Path]:
    """The CSV log folders of our runs in ``out``: ``logs`` and ``logs-<N>``."""
    return [p for p in out.glob("logs*") if p.is_dir() and re.fullmatch(r"logs(-\d+)?", p.name)]


def plain_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Dataset attributes as plain JSON-like values (they travel inside checkpoints)."""
    keep = ("cell_size_m", "frequency_hz", "signal_unit", "rx_height_m", "source")
    return {k: attrs[k] for k in keep if k in attrs}


def _validation_schedule(config: Any) -> dict[str, Any]:
    """Lightning's validation schedule: after every epoch, or every ``val_every_steps`` steps across epochs."""
    every = getattr(config, "val_every_steps", None)
    return {} if not every else {"val_check_interval": int(every), "check_val_every_n_epoch": None}
