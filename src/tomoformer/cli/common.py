"""Helpers shared by subcommands: YAML configs under command-line flags, and key=value options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from tomoformer.errors import ConfigError


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping read with ``safe_load`` (never executes tags); ``{}`` for an empty file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config must be a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def merged_options(args: argparse.Namespace, defaults: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``defaults`` < ``--config`` YAML < flags given on the command line (flags default to SUPPRESS)."""
    options = dict(defaults)
    if getattr(args, "config", None):
        from_file = read_yaml(args.config)
        unknown = sorted(set(from_file) - set(defaults))
        if unknown:
            raise ConfigError(f"{args.config}: unknown option(s): {', '.join(unknown)}")
        options.update(from_file)
    for key, value in vars(args).items():
        if key in defaults and key not in skip:
            options[key] = value
    return options


def parse_key_values(pairs: list[str] | None, what: str) -> dict[str, Any]:
    """``["depth=4", "decoder=transformer"]`` → ``{"depth": 4, "decoder": "transformer"}`` (values as YAML)."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what}: expected KEY=VALUE, got {pair!r}")
        values[key.replace("-", "_")] = yaml.safe_load(raw)
    return values


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="read options from this YAML file; flags override it")
