"""Safe checkpoint loading and saving.

Checkpoints are read with ``torch.load(weights_only=True)`` (or from safetensors), so a file from a stranger
cannot run code. Every checkpoint carries ``hyper_parameters`` with the model name and its options, so any command
can rebuild the model from the registry without the training code.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tomoformer.errors import CheckpointError, TomoFormerError
from tomoformer.io import atomic_path
from tomoformer.models.registry import create_model


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with the options it was built with."""

    model: nn.Module
    name: str
    model_kwargs: dict[str, Any]
    hparams: dict[str, Any]

    @property
    def data_attrs(self) -> dict[str, Any]:
        return dict(self.hparams.get("data_attrs") or {})


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint dict (``state_dict`` and ``hyper_parameters``), read without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            raise CheckpointError(
                f"{path}: refused: the file carries a pickled Python object ({found.group(1)}) that could run code"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or not a torch file)") from None
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a TomoFormer checkpoint (no 'state_dict')")
    if "model" not in checkpoint.get("hyper_parameters", {}):
        raise CheckpointError(f"{path}: checkpoint does not name its model (no hyper_parameters.model)")
    return checkpoint


def build_with_weights(
    path: str | os.PathLike[str], name: str, build: Callable[[], nn.Module], state_dict: dict[str, torch.Tensor]
) -> nn.Module:
    """``build()`` the model ``name`` and load the ``model.*`` weights of a task ``state_dict`` into it (strict);
    a failure of either is one :class:`CheckpointError` line naming ``path``."""
    try:
        model = build()
    except TomoFormerError as err:
        raise CheckpointError(f"{path}: {err}") from None
    state = {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = str(err).splitlines()[0][:200]
        raise CheckpointError(f"{path}: weights do not fit model {name!r} ({detail})") from None
    return model


def load_checkpoint(path: str | os.PathLike[str], expect_model: str | None = None) -> LoadedModel:
    """Rebuild the model stored in ``path`` in eval mode on the CPU."""
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint["hyper_parameters"])
    name = hparams["model"]
    if expect_model is not None and name != expect_model:
        raise CheckpointError(f"{path}: checkpoint holds model {name!r}, not {expect_model!r}")
    kwargs = dict(hparams.get("model_kwargs") or {})
    model = build_with_weights(path, name, lambda: create_model(name, **kwargs), checkpoint["state_dict"])
    model.eval()
    return LoadedModel(model=model, name=name, model_kwargs=kwargs, hparams=hparams)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    hparams: dict[str, Any],
) -> Path:
    """Write ``model`` as a Lightning-compatible checkpoint (``.ckpt``) or a safetensors file, atomically."""
    path = Path(path)
    state = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"tomoformer": json.dumps(hparams)})
        else:
            torch.save({"state_dict": state, "hyper_parameters": hparams}, tmp)
    return path


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(err).__name__})") from None
    if "tomoformer" not in metadata:
        raise CheckpointError(f"{path}: safetensors file has no 'tomoformer' metadata naming its model")
    return {"state_dict": state, "hyper_parameters": json.loads(metadata["tomoformer"])}
