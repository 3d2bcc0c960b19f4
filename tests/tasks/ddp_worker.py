"""A tiny DDP training run that records which samples every rank sees (run by tests/tasks/test_ddp.py).

Lightning's DDP launcher starts rank 1 by running this script again, so everything the ranks need is defined
here at module level. Usage: python ddp_worker.py DATA OUT MAX_EPOCHS RESUME(0|1) [DATA_ON_DEVICE(0|1)]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from tomoformer.tasks.mapping import MappingTask
from tomoformer.tasks.train import TrainConfig, datamodule_for, fit_task, open_run, task_options


class RecordingTask(MappingTask):
    """MappingTask that appends (stage, epoch, sample indices) of every batch to OUT/seen-rank{R}.jsonl."""

    def _record(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        path = Path(self.trainer.default_root_dir) / f"seen-rank{self.global_rank}.jsonl"
        with open(path, "a") as f:
            f.write(json.dumps({"stage": stage, "epoch": self.current_epoch, "index": batch["index"].tolist()}) + "\n")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self._record("train", batch)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._record("val", batch)
        super().validation_step(batch, batch_idx)


def main(data: str, out: str, max_epochs: str, resume: str, on_device: str = "0") -> None:
    config = TrainConfig(
        data=data,
        out=out,
        model="unet",
        model_kwargs={"base_channels": 4, "depth": 1},
        max_epochs=int(max_epochs),
        batch_size=3,
        val_fraction=0.3,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        progress=False,
        resume=resume == "1",
        data_on_device=on_device == "1",
    )
    # Rank 0 claims the run folder (and its lock); the relaunched rank 1 only trains (tomoformer.outputs).
    with open_run(config) as run:
        datamodule = datamodule_for(config)
        task = RecordingTask(**task_options(config, datamodule.attrs))
        fit_task(task, datamodule, config, run.begin())


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:])
