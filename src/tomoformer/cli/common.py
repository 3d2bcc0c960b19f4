"""Helpers shared by subcommands: YAML configs under command-line flags, and key=value options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tomoformer.errors import ConfigError
from tomoformer.safe_yaml import load_yaml, read_yaml_file
from tomoformer.validation import bounds_text, check_float, check_int


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping read with ``safe_load`` semantics and bounded size (never executes tags, refuses alias
    bombs, see :mod:`tomoformer.safe_yaml`); ``{}`` for an empty file."""
    values = read_yaml_file(path)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config must be a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def parse_key_values(pairs: list[str] | None, what: str) -> dict[str, Any]:
    """``["depth=4", "decoder=transformer"]`` → ``{"depth": 4, "decoder": "transformer"}`` (values as YAML)."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what}: expected KEY=VALUE, got {pair!r}")
        name = key.replace("-", "_")
        if not name.isidentifier():
            raise ConfigError(f"{what}: {key!r} is not an option name")
        values[name] = load_yaml(raw, f"{what} {pair!r}")
    return values


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="read options from this YAML file; flags override it")


def add_model_source(parser: argparse.ArgumentParser, onnx: bool = False) -> None:
    """The required choice of one model: ``--checkpoint CKPT`` or ``--pretrained NAME`` (or ``--onnx FILE``)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a trained checkpoint")
    if onnx:
        source.add_argument("--onnx", help="a file from `tomoformer export --format onnx` (runs with onnxruntime)")
    source.add_argument("--pretrained", metavar="NAME", help="a shipped model (`tomoformer models --pretrained`)")


def add_overwrite_flag(parser: argparse.ArgumentParser, default: Any = False) -> None:
    """``--overwrite``: replace an existing output; only what tomoformer recorded writing is removed
    (docs/safety.md)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=default,
        help="replace an existing output (only what tomoformer recorded writing is removed; never a folder of yours, "
        "an input, or through a symlink)",
    )


def _flag_type(name: str, check: Callable[[Any], Any], parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses a flag value and range-checks it with a :mod:`tomoformer.validation` check;
    a bad value becomes argparse's one-line error naming the flag (exit 2)."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        try:
            return check(value)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None

    convert.__name__ = name
    return convert


def int_at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low``."""
    return _flag_type(f"an integer >= {low}", lambda v: check_int("flag", v, low), int)


def float_in(
    low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """argparse type: a finite float in the given interval (NaN and inf refused)."""
    name = f"a finite number {bounds_text(low, high, low_open, high_open)}".strip()
    return _flag_type(name, lambda v: check_float("flag", v, low, high, low_open, high_open), float)


# argparse types of the numeric flags (NaN and inf are never accepted).
positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_in(0.0, low_open=True)
non_negative_float = float_in(0.0)
probability = float_in(0.0, 1.0)
below_one = float_in(0.0, 1.0, high_open=True)
open_fraction = float_in(0.0, 1.0, low_open=True, high_open=True)
finite_float = float_in()


def device_name(text: str) -> str:
    """argparse type: an inference device that exists on this machine (``auto``, ``cpu``, ``cuda[:N]``, ``mps``)."""
    from tomoformer.validation import check_device

    try:
        return check_device(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--device {text}: ")) from None


def concrete_device_name(text: str) -> str:
    """argparse type: like :func:`device_name`, but ``auto`` is refused (commands that take cpu or cuda only)."""
    if text == "auto":
        raise argparse.ArgumentTypeError("give cpu or cuda[:N] here, not auto")
    return device_name(text)


def seed_value(text: str) -> int:
    """argparse type: a seed in [0, 2**32 - 1] (numpy and Lightning replace others by a random seed)."""
    from tomoformer.validation import SEED_MAX

    return _flag_type(f"a seed in [0, {SEED_MAX}]", lambda v: check_int("flag", v, 0, SEED_MAX), int)(text)
