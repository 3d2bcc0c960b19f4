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


def check_train_config(config: Any) -> None:
    """Range checks of a :class:`~tomoformer.tasks.train.TrainConfig` (and its ``augment`` options)."""
    check_int("max_epochs", config.max_epochs, -1)
    check_int("max_steps", config.max_steps, -1)
    check_int("batch_size", config.batch_size, 1)
    check_float("lr", config.lr, 0.0)  # 0 is allowed: a run that only evaluates
    check_float("weight_decay", config.weight_decay, 0.0)
    check_float("warmup_fraction", config.warmup_fraction, 0.0, 1.0)
    check_float("dice_weight", config.dice_weight, 0.0)
    check_float("val_fraction", config.val_fraction, 0.0, 1.0, high_open=True)
    check_int("seed", config.seed, 0, SEED_MAX)
    check_int("num_nodes", config.num_nodes, 1)
    check_int("num_workers", config.num_workers, 0)
    check_int("fit_batches", config.fit_batches, 1)
    _check_devices(config.devices)
    if config.accelerator not in ACCELERATORS:
        raise ConfigError(f"option accelerator is {config.accelerator!r}, expected one of: {', '.join(ACCELERATORS)}")
    if config.precision is not None and str(config.precision) not in PRECISIONS:
        raise ConfigError(f"option precision is {config.precision!r}, expected one of: {', '.join(PRECISIONS[:6])}")
    augment = getattr(config, "augment", None)
    if augment is not None:
        if augment.max_frames is not None:  # 0 or None: no frame subsets
            check_int("augment.max_frames (--frames)", augment.max_frames, 0)
        if augment.min_frames is not None and augment.max_frames:
            check_int("augment.min_frames", augment.min_frames, 1, augment.max_frames)
        if augment.min_keep_fraction is not None:
            check_float("augment.min_keep_fraction", augment.min_keep_fraction, 0.0, 1.0)
        if augment.max_floor_fraction is not None:
            check_float("augment.max_floor_fraction", augment.max_floor_fraction, 0.0, 1.0, high_open=True)
        if getattr(augment, "crop", None) is not None:
            check_int("augment.crop (--crop)", augment.crop, 1)


def _check_devices(devices: Any) -> None:
    """Lightning's forms: N >= 1, -1 (all), "auto", or a comma list of device indices ("0,2")."""
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices == 0 or devices < -1:
            raise ConfigError(f"option devices is {devices}, expected -1 (all), a count >= 1, auto or a list like 0,1")
        return
    text = str(devices).strip()
    if text in ("auto", "-1") or (text and all(part.strip().isdigit() for part in text.rstrip(",").split(","))):
        return
    raise ConfigError(f"option devices is {devices!r}, expected -1 (all), a count >= 1, auto or a list like 0,1")


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
