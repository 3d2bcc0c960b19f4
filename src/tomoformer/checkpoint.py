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

# Bounds on what a checkpoint may ask us to build: model options are a few dozen small numbers, so anything far
# larger is refused before a model is built from it (an option of 10**9 channels would allocate until killed).
MAX_MODEL_KWARGS = 256
MAX_HPARAMS_JSON = 64 * 1024
MAX_OPTION_INT = 2**16


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

    @property
    def temperature(self) -> float:
        """The fitted temperature of the checkpoint's logits (``hyper_parameters.calibration.temperature``);
        1.0 for checkpoints that were never calibrated."""
        return temperature_of(self.hparams)

    def calibrated(self) -> nn.Module:
        """The model with its temperature applied to its logits (the model itself when ``T = 1``)."""
        from tomoformer.evaluation.calibration import with_temperature

        return with_temperature(self.model, self.temperature)


def temperature_of(hparams: dict[str, Any]) -> float:
    """``hparams["calibration"]["temperature"]`` when present (a positive finite number), else 1.0."""
    calibration = hparams.get("calibration")
    value = calibration.get("temperature") if isinstance(calibration, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 < value < float("inf")):
        return 1.0
    return float(value)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint dict (``state_dict`` and ``hyper_parameters``), read without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        checkpoint = _read_safetensors(path)
    else:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise refusal(path, err) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a TomoFormer checkpoint (no 'state_dict')")
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "model" not in hparams:
        raise CheckpointError(f"{path}: checkpoint does not name its model (no hyper_parameters.model)")
    check_hparams(path, hparams)
    bad = next(
        (k for k, v in checkpoint["state_dict"].items() if not isinstance(k, str) or not torch.is_tensor(v)), None
    )
    if bad is not None:
        raise CheckpointError(f"{path}: state_dict entry {str(bad)[:80]!r} is not a named tensor")
    return checkpoint


def refusal(path: str | os.PathLike[str], err: BaseException) -> CheckpointError:
    """The one-line error for a checkpoint ``torch.load(weights_only=True)`` could not read (``err``): a pickled
    object is refused (never with advice to load it unsafely), anything else is unreadable."""
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            return CheckpointError(
                f"{path}: refused: the file carries a pickled Python object ({found.group(1)}) that could run code"
            )
        return CheckpointError(f"{path}: not a readable checkpoint (corrupt or not a torch file)")
    if isinstance(err, CheckpointError):
        return err
    return CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__})")


def check_hparams(path: str | os.PathLike[str], hparams: dict[str, Any]) -> None:
    """Refuse malformed or oversized ``hyper_parameters`` with one line: ``model`` a name, ``model_kwargs`` and
    ``data_attrs`` mappings, all of it small plain JSON, option names identifiers and numbers bounded."""
    if not isinstance(hparams.get("model"), str) or not hparams["model"]:
        raise CheckpointError(f"{path}: hyper_parameters.model is {hparams.get('model')!r}, not a model name")
    for key in ("model_kwargs", "data_attrs", "calibration"):
        if hparams.get(key) is not None and not isinstance(hparams[key], dict):
            raise CheckpointError(f"{path}: hyper_parameters.{key} is a {type(hparams[key]).__name__}, not a mapping")
    try:
        size = len(json.dumps(hparams, allow_nan=True, default=_not_json))
    except (TypeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: hyper_parameters hold a value that is not plain data ({err})") from None
    if size > MAX_HPARAMS_JSON:
        raise CheckpointError(f"{path}: hyper_parameters take {size:,} bytes (at most {MAX_HPARAMS_JSON:,}), refused")
    kwargs = hparams.get("model_kwargs") or {}
    if len(kwargs) > MAX_MODEL_KWARGS:
        raise CheckpointError(f"{path}: {len(kwargs)} model options (at most {MAX_MODEL_KWARGS}), refused")
    for name, value in kwargs.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise CheckpointError(f"{path}: model option {str(name)[:40]!r} is not an option name")
        for number in _numbers(value):
            if isinstance(number, int) and abs(number) > MAX_OPTION_INT:
                raise CheckpointError(
                    f"{path}: model option {name} = {number} is out of range (|value| <= {MAX_OPTION_INT})"
                )


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _numbers(value: Any) -> list[int | float]:
    """The numbers inside a JSON-like value (bools excluded)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _numbers(v)]
    return []


def build_with_weights(
    path: str | os.PathLike[str], name: str, build: Callable[[], nn.Module], state_dict: dict[str, torch.Tensor]
) -> nn.Module:
    """``build()`` the model ``name`` and load the ``model.*`` weights of a task ``state_dict`` into it (strict);
    a failure of either is one :class:`CheckpointError` line naming ``path``. The options are first built on the
    ``meta`` device (nothing allocated): a model asking for far more numbers than the file's weights hold is refused
    before any memory is taken."""
    _check_size_on_meta(path, name, build, state_dict)
    try:
        model = build()
    except TomoFormerError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (MemoryError, RuntimeError, TypeError, ValueError, AttributeError, KeyError, IndexError) as err:
        # The options come from the file: any failure to build from them is the file's fault, not a bug of ours.
        detail = str(err).splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: its model options do not build model {name!r} ({detail})") from None
    state = {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = str(err).splitlines()[0][:200]
        raise CheckpointError(f"{path}: weights do not fit model {name!r} ({detail})") from None
    return model


def _check_size_on_meta(
    path: str | os.PathLike[str], name: str, build: Callable[[], nn.Module], state_dict: dict[str, torch.Tensor]
) -> None:
    stored = sum(v.numel() for k, v in state_dict.items() if k.startswith("model."))
    try:
        with torch.device("meta"):
            probe = build()
    except Exception:
        return  # the real build below reports what is wrong with the options
    asked = sum(p.numel() for p in probe.parameters()) + sum(b.numel() for b in probe.buffers())
    if asked > 2 * stored + (1 << 20):
        raise CheckpointError(
            f"{path}: its model options ask for {asked:,} numbers in model {name!r}, but its weights hold "
            f"{stored:,}; refused before allocating"
        )


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


def write_with_hparams(source: str | os.PathLike[str], path: str | os.PathLike[str], hparams: dict[str, Any]) -> Path:
    """Copy checkpoint ``source`` to ``path`` (atomically) with its ``hyper_parameters`` replaced by ``hparams``.

    The weights are copied as stored (a float16 safetensors file stays float16); a ``.ckpt`` keeps everything
    else it holds. ``path`` ends in ``.safetensors`` or not, whatever ``source`` is.
    """
    checkpoint = read_checkpoint(source)
    check_hparams(path, hparams)
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            state = {k: v.contiguous() for k, v in checkpoint["state_dict"].items()}
            save_file(state, str(tmp), metadata={"tomoformer": json.dumps(hparams)})
        else:
            torch.save({**checkpoint, "hyper_parameters": hparams}, tmp)
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
    if len(metadata["tomoformer"]) > MAX_HPARAMS_JSON:
        raise CheckpointError(f"{path}: 'tomoformer' metadata larger than {MAX_HPARAMS_JSON:,} bytes, refused")
    try:
        hparams = json.loads(metadata["tomoformer"])
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: 'tomoformer' metadata is not valid JSON") from None
    return {"state_dict": state, "hyper_parameters": hparams}
