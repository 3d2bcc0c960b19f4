"""Weights that ship inside the package: trained models a user runs with no training and no download.

Each shipped model is two files in this folder: ``NAME.safetensors`` (the weights, float16, with the checkpoint's
hyper-parameters in the safetensors metadata, so :func:`tomoformer.checkpoint.load_checkpoint` reads it like any
checkpoint) and ``NAME.json``, its card: what it was trained on, the conditions it expects (cell size, frequency),
the figures it earned and the command that produced them. ``tomoformer models --pretrained`` lists them;
``predict``/``evaluate --pretrained NAME`` and ``finetune --from NAME`` use them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tomoformer.checkpoint import read_checkpoint, save_checkpoint
from tomoformer.errors import ConfigError, DataError
from tomoformer.io import write_text_atomic
from tomoformer.outputs import check_output

HERE = Path(__file__).parent
# How far a dataset's cell size and carrier frequency may stray from the ones a shipped model was trained at.
CELL_SIZE_TOLERANCE = 0.15
FREQUENCY_TOLERANCE = 0.25


@dataclass(frozen=True)
class ModelCard:
    """What ``NAME.json`` says about a shipped model."""

    name: str
    model: str
    description: str
    cell_size_m: float
    frequency_hz: float
    trained_on: str
    command: str
    figures: dict[str, Any] = field(default_factory=dict)
    licence: str = ""

    @property
    def weights(self) -> Path:
        return HERE / f"{self.name}.safetensors"

    def summary(self) -> str:
        """One line, the name first: ``NAME  model  cell size, frequency  description``."""
        size_mb = self.weights.stat().st_size / 1e6 if self.weights.is_file() else math.nan
        return (
            f"{self.name}  {self.model}  {self.cell_size_m:g} m cells, {self.frequency_hz / 1e9:g} GHz, "
            f"{size_mb:.1f} MB  {self.description}"
        )


def available() -> list[ModelCard]:
    """The shipped models, by name."""
    return [read_card(path) for path in sorted(HERE.glob("*.json"))]


def read_card(path: Path) -> ModelCard:
    """A card from its JSON file (one-line error when it is malformed)."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return ModelCard(**values)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{path}: not a model card ({err})") from None


def card(name: str) -> ModelCard:
    """The card of the shipped model ``name``; an unknown name lists the ones there are."""
    path = HERE / f"{name}.json"
    if "/" in name or "\\" in name or not path.is_file():
        names = ", ".join(c.name for c in available()) or "none"
        raise ConfigError(f"no shipped pretrained model {name!r} (shipped: {names})")
    found = read_card(path)
    if not found.weights.is_file():
        raise ConfigError(f"shipped model {name!r}: its weights {found.weights.name} are missing from the package")
    return found


def resolve(spec: str) -> str:
    """``spec`` as a checkpoint path: an existing file stays itself; a shipped model's name becomes its weights."""
    if Path(spec).exists() or not (HERE / f"{spec}.json").is_file():
        return spec
    return str(card(spec).weights)


def check_conditions(model: ModelCard, attrs: dict[str, Any], source: str) -> None:
    """Refuse, with one line, data whose ``cell_size_m`` or ``frequency_hz`` attributes stray from the model's.

    Data without these attributes passes: the user is told the assumed conditions by :meth:`ModelCard.summary`.
    """
    checks = (
        ("cell_size_m", model.cell_size_m, CELL_SIZE_TOLERANCE, "m", 1.0),
        ("frequency_hz", model.frequency_hz, FREQUENCY_TOLERANCE, "GHz", 1e9),
    )
    for key, expected, tolerance, unit, scale in checks:
        value = attrs.get(key)
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            continue
        if abs(value / expected - 1) > tolerance:
            raise DataError(
                f"{source}: {key} is {value / scale:g} {unit}, but pretrained model {model.name!r} was trained at "
                f"{expected / scale:g} {unit} (within {tolerance:.0%}); resample the maps or fine-tune it on yours "
                f"(`tomoformer finetune --from {model.name}`)"
            )


def package_checkpoint(
    checkpoint: str | Path, model: ModelCard, folder: Path = HERE, *, overwrite: bool = False
) -> Path:
    """Write ``checkpoint``'s weights as float16 ``NAME.safetensors`` and the card ``NAME.json`` into ``folder``.

    An existing model of that name is refused (:class:`~tomoformer.errors.OutputError`) unless ``overwrite``.
    """
    from tomoformer.checkpoint import load_checkpoint

    for target in (folder / f"{model.name}.safetensors", folder / f"{model.name}.json"):
        check_output(target, overwrite=overwrite, inputs=[checkpoint], option="pretrained model")

    raw = read_checkpoint(checkpoint)
    loaded = load_checkpoint(checkpoint)
    hparams = {
        k: v
        for k, v in raw["hyper_parameters"].items()
        if k in ("model", "model_kwargs", "data_attrs", "task", "calibration")
    }
    half = loaded.model.to(torch.float16)
    folder.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(folder / f"{model.name}.safetensors", half, hparams)
    write_text_atomic(folder / f"{model.name}.json", json.dumps(asdict(model), indent=2) + "\n")
    return path


def weights_for_data(name: str, data: str | Path) -> str:
    """The weights of shipped model ``name``, after checking that dataset ``data`` suits it (cell size, frequency)."""
    from tomoformer.data.format import open_dataset

    model = card(name)
    with open_dataset(data) as dataset:
        check_conditions(model, dict(dataset.attrs), str(data))
    return str(model.weights)
