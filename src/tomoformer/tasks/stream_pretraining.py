"""Supervised pretraining on samples simulated on the fly (``tomoformer pretrain --stream``): new training samples
every epoch from :class:`~tomoformer.data.stream.SimulatorDataModule`, validated on a fixed simulated set."""

from __future__ import annotations

from tomoformer.data.stream import SimulatorDataModule
from tomoformer.errors import ConfigError
from tomoformer.models.protocol import requires_fit
from tomoformer.models.registry import create_model
from tomoformer.sim import SimConfig
from tomoformer.tasks.mapping import MappingTask
from tomoformer.tasks.train import (
    TrainConfig,
    TrainResult,
    run_job,
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
    stream = {"sim_config": sim.to_dict(), "samples_per_epoch": samples_per_epoch, "val_samples": val_samples}
    record = {**config.to_dict(), "data": None, "val_data": None, "stream": stream}

    def make_data() -> SimulatorDataModule:
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
        return datamodule

    def make_task(datamodule: SimulatorDataModule) -> MappingTask:
        return MappingTask(**task_options(config, datamodule.attrs))

    return run_job(config, make_data, make_task, record=record, command="pretrain")
