"""Filling an :class:`~tomoformer.models.experts.ExpertsModel` from trained expert checkpoints.

The model layer knows no checkpoint files: this pipeline step reads each expert's training run and hands the
weights to :meth:`ExpertsModel.load_expert_state`.
"""

from __future__ import annotations

from pathlib import Path

from tomoformer.checkpoint import load_checkpoint, read_checkpoint
from tomoformer.errors import CheckpointError
from tomoformer.models.experts.model import ExpertsModel

__all__ = ["load_expert"]


def load_expert(model: ExpertsModel, k: int, path: str | Path) -> None:
    """Load expert k of ``model`` from a training run's checkpoint ``path``; a shared-LoRA expert takes the run's
    unmerged LoRA adapter and head (a ``lora:R`` run's ``lora_state_dict``), the backbone stays as it is."""
    if model.backbone is None:
        model.load_expert_state(k, load_checkpoint(path).model.state_dict())
        return
    lora_state = read_checkpoint(path).get("lora_state_dict")
    if not isinstance(lora_state, dict):
        raise CheckpointError(f"{path}: no LoRA adapter state (shared_lora experts are trained with lora:R)")
    plain = {key.removeprefix("model."): v for key, v in lora_state.items() if key.startswith("model.")}
    model.load_expert_state(k, plain)
