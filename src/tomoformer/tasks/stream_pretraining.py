"""Supervised pretraining on samples simulated on the fly (``tomoformer pretrain --stream``): new training samples
every epoch from :class:`~tomoformer.data.stream.SimulatorDataModule`, validated on a fixed simulated set."""

from __future__ import annotations

import time

from tomoformer.data.stream import SimulatorDataModule
from tomoformer.errors import ConfigError
from tomoformer.models.protocol import requires_fit
from tomoformer.models.registry import create_model
from tomoformer.sim import SimConfig
from tomoformer.tasks.mapping import MappingTask
from tomoformer.tasks.train import (
    TrainConfig,
    TrainResult,
    finish_run,
    finished_result,
    fit_task,
    open_run,
    task_options,
)


def run_stream_pretraining(
    config: TrainConfig, sim: SimConfig, samples_per_epoch: int, val_samples: int
) -> TrainResult:
    """Train ``config.model`` on ``samples_per_epoch`` freshly simulated samples (``sim``) per epoch, validated on
    ``val_samples`` fixed ones; the run folder is the same as ``train``'s, and its ``config.yaml`` also records the
    simulator config (``stream``). ``config.data``/``val_data`` are ignored."""
    if samples_per_epoch < 1 or val_samples < 1:
        raise ConfigError("--samples-per-epoch and --val-samples must be at least 1")
    if requires_fit(create_model(config.model, **config.model_kwargs)):
        raise ConfigError(f"model {config.model!r} is fitted, not trained: use `tomoformer train --data`")
    start = time.perf_counter()
    stream = {"sim_config": sim.to_dict(), "samples_per_epoch": samples_per_epoch, "val_samples": val_samples}
    record = {**config.to_dict(), "data": None, "val_data": None, "stream": stream}
    with open_run(config, record, command="pretrain") as run:
        done = finished_result(run, config)
        if done is not None:
            return done
        datamodule = SimulatorDataModule(
            sim,
            samples_per_epoch=samples_per_epoch,
            val_samples=val_samples,
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            augment=config.augment,
            seed=config.seed,
        )
        datamodule.setup()
        task = MappingTask(**task_options(config, datamodule.attrs))
        return finish_run(run, fit_task(task, datamodule, config, run.begin(), start))
