"""What the rest of the toolkit may assume of a registry model, as ``typing.Protocol`` classes.

Every model is an ``nn.Module`` that is a :class:`MappingModel`. Two optional parts: a :class:`FittedModel`
(``requires_fit = True``) is fitted from batches instead of trained by gradient descent (the classical
baselines); a :class:`DeepSupervisedModel` has ``forward_train``, which also returns weighted auxiliary logits
for the training loss. Code outside ``models/`` asks for these with :func:`requires_fit` and
:func:`forward_train_of` rather than probing attributes itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["DeepSupervisedModel", "FittedModel", "MappingModel", "forward_train_of", "requires_fit"]

TrainOutput = tuple[Tensor, list[tuple[float, Tensor]]]


@runtime_checkable
class MappingModel(Protocol):
    """``forward(signals [B, T, H, W] dB (NaN = missing), tx_pos [B, T, 3] cells | None) -> logits [B, H, W]``."""

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor: ...

    def __call__(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class FittedModel(MappingModel, Protocol):
    """A model fitted from data batches (dicts with ``signals``, ``tx_pos``, ``buildings``), not trained."""

    requires_fit: bool

    def fit(self, batches: Iterable[dict[str, Tensor]]) -> None: ...

    def describe(self) -> str:
        """One line: what ``fit`` chose (rule, regularisation, thresholds) and how well it fitted."""
        ...


@runtime_checkable
class DeepSupervisedModel(MappingModel, Protocol):
    """A model whose training forward also returns auxiliary logits [B, H, W] with their loss weights."""

    def forward_train(self, signals: Tensor, tx_pos: Tensor | None = None) -> TrainOutput: ...


def requires_fit(model: Any) -> bool:
    """True for a :class:`FittedModel` (fitted from batches, nothing to train or fine-tune)."""
    return bool(getattr(model, "requires_fit", False))


def forward_train_of(model: Any) -> Callable[[Tensor, Tensor | None], TrainOutput] | None:
    """``model.forward_train`` of a :class:`DeepSupervisedModel`, else None."""
    return getattr(model, "forward_train", None)
