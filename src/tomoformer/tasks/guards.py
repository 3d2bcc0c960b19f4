"""A Lightning callback that stops training on a non-finite loss before a NaN state can reach a checkpoint.

On the CPU with one process every loss is checked before its backward pass, so the weights never take a NaN step.
On an accelerator a per-step check would make every step wait for the device, so there the step only ORs a flag on
the device, read at the end of each training and validation epoch; the weights themselves are checked before every
checkpoint save, so a diverged state is never written either way. Raising inside ``trainer.fit`` ends the run: the
CLI prints the one line and exits 2, and the last good checkpoints stay as they were.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from tomoformer.errors import NumericsError

_ADVICE = (
    "no checkpoint was written from this state (try a lower --lr, or check the data with `tomoformer data validate`)"
)


class FiniteGuard(Callback):
    """Raise :class:`NumericsError` on a non-finite training loss, validation loss or weights.

    Lightning runs checkpoint callbacks after all others, so every check here happens before ``ModelCheckpoint``
    saves in the same hook.
    """

    def __init__(self) -> None:
        self._bad: torch.Tensor | None = None
        self._immediate = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._immediate = trainer.strategy.root_device.type == "cpu" and trainer.world_size == 1
        self._bad = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        loss = loss.detach()
        if self._immediate:
            value = float(loss)
            if not math.isfinite(value):
                raise NumericsError(
                    f"training stopped: the loss is {value} at epoch {trainer.current_epoch}, "
                    f"step {trainer.global_step}; {_ADVICE}"
                )
            return
        bad = ~torch.isfinite(loss)
        self._bad = bad if self._bad is None else self._bad | bad

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_flag(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_flag(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("val_loss")
        if value is not None and not math.isfinite(float(value)):
            raise NumericsError(
                f"training stopped: the validation loss is {float(value)} at epoch {trainer.current_epoch} "
                f"(the model gives non-finite outputs on the validation data); {_ADVICE}"
            )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._check_flag(trainer)
        # One device synchronisation per save: cheap next to writing the file.
        finite = [p.detach().isfinite().all() for p in pl_module.parameters()]
        if finite and not bool(torch.stack(finite).all()):
            raise NumericsError(
                f"training stopped: the weights became non-finite at epoch {trainer.current_epoch}; {_ADVICE}"
            )

    def _check_flag(self, trainer: L.Trainer) -> None:
        bad = self._bad is not None and bool(self._bad)
        if trainer.world_size > 1:
            # Every rank must stop together, or the others would wait forever in their next collective.
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise NumericsError(
                f"training stopped: the loss became non-finite during epoch {trainer.current_epoch}; {_ADVICE}"
            )


def check_finite_probabilities(probabilities: np.ndarray, dataset: Any, start: int = 0) -> None:
    """Refuse non-finite probabilities ``[B, H, W]`` (samples ``start..start+B-1`` of ``dataset``) with one line.

    A NaN map is refused, not patched: the models map missing measurements (NaN cells, even all-NaN frames) to
    finite maps, so a NaN output means inputs outside what they handle (e.g. absurd ``tx_pos``), and any value put
    in its place would be a guess presented as a prediction.
    """
    finite = np.isfinite(probabilities.reshape(len(probabilities), -1)).all(axis=1)
    if finite.all():
        return
    bad = [int(dataset.indices[start + i]) for i in np.flatnonzero(~finite)[:5]]
    where = getattr(dataset.source, "path", "the data")
    raise NumericsError(
        f"{where}: the model gives non-finite probabilities for sample(s) {', '.join(map(str, bad))} "
        "(check the data with `tomoformer data validate`: signal values, tx_pos); nothing was written"
    )
