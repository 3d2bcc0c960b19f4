"""Range checks for numeric options, shared by the command-line flags and the config dataclasses.

Every check raises a one-line :class:`~tomoformer.errors.ConfigError` naming the option, so a value given as a
flag and the same value read from a YAML file fail alike (``--lr nan``, ``lr: .nan``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tomoformer.errors import ConfigError

if TYPE_CHECKING:
    import torch

# Lightning's precision names (lightning.pytorch.trainer.connectors.accelerator_connector._PRECISION_INPUT_STR).
PRECISIONS = ("16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true", "16", "32", "64", "bf16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
SEED_MAX = 2**32 - 1  # numpy and Lightning seeds; Lightning replaces a larger one by a random seed


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (either bound optional); bool is not an int here."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"option {name} is {value!r}, expected an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"option {name} is {value}, expected an integer {bounds_text(low, high, False, False)}")
    return value


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval given by ``low``/``high`` (open ends with ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"option {name} is {value!r}, expected a number")
    value = float(value)
    bad = not math.isfinite(value)
    bad = bad or (low is not None and (value < low or (low_open and value == low)))
    bad = bad or (high is not None and (value > high or (high_open and value == high)))
    if bad:
        raise ConfigError(
            f"option {name} is {value}, expected a finite number {bounds_text(low, high, low_open, high_open)}"
        )
    return value


def bounds_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_declared(config: Any, prefix: str = "") -> None:
    """The range and choice checks each dataclass field of ``config`` declares in its metadata (``bounds``:
    ``("int", low, high)`` or ``("float", low, high, low_open, high_open)``; ``choices``): the one table of range
    checks. A None value of an optional field passes; ``prefix`` names a nested options block (``augment.``)."""
    import dataclasses

    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        bounds, choices = f.metadata.get("bounds"), f.metadata.get("choices")
        name = prefix + f.name
        if bounds is not None and not (value is None and "None" in str(f.type)):
            if bounds[0] == "int":
                check_int(name, value, bounds[1], bounds[2])
            else:
                check_float(name, value, *bounds[1:])
        if choices is not None and value is not None and str(value) not in choices:
            raise ConfigError(f"option {name} is {value!r}, expected one of: {', '.join(choices[:8])}")


def check_train_config(config: Any) -> None:
    """Range checks of a :class:`~tomoformer.tasks.config.TrainConfig` and its ``augment`` options: those its
    fields declare (:func:`check_declared`, the one table)."""
    check_declared(config)
    augment = getattr(config, "augment", None)
    if augment is not None:
        check_declared(augment, "augment.")


def check_accelerator_available(accelerator: str, devices: Any = 1) -> None:
    """Refuse an accelerator this machine does not have, before Lightning or torch fail deep inside."""
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"accelerator {accelerator!r}: no CUDA GPU is available on this machine (use cpu or auto)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("accelerator 'mps': Apple MPS is not available on this machine (use cpu or auto)")
    wants_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if wants_gpu and isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        available = torch.cuda.device_count()
        if devices > available:
            raise ConfigError(f"devices {devices}: this machine has {available} CUDA GPU(s)")


def check_device(device: str) -> str:
    """A torch device string for inference (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``) that exists here."""
    import torch

    if device in ("auto", None):
        return "auto"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device}: not a device name (auto, cpu, cuda, cuda:N, mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU is available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {device}: Apple MPS is not available on this machine")
    elif parsed.type != "cpu":
        raise ConfigError(f"--device {device}: unsupported device type (auto, cpu, cuda, cuda:N, mps)")
    return device


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to run on: ``None``/``"auto"`` → CUDA when present, else CPU; any other name is checked by
    :func:`check_device` (a device this machine does not have is a one-line :class:`ConfigError`)."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(check_device(device))
