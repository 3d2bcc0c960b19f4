"""Command-line flags generated from a run config's dataclass fields (see :mod:`tomoformer.tasks.options`).

Every field with ``help`` in its metadata becomes ``--field-name`` (or ``--<flag>``); booleans get ``--x`` and
``--no-x`` (or one of them, ``bool_flag``). A field holding an options dataclass (``augment``, ``nested`` metadata)
contributes its own fields' flags, collected back into its mapping by :func:`values_from_args`. All flags default
to ``argparse.SUPPRESS``, so only the flags actually given override the ``--config`` YAML file, which overrides the
dataclass defaults. Range checks are the config's own (one line naming the option, exit 2), so a flag and a YAML
value fail alike.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from tomoformer.cli.common import read_yaml
from tomoformer.cli.renamed import add_sample_frames_flags
from tomoformer.errors import ConfigError
from tomoformer.tasks.options import flatten_sections

_S = argparse.SUPPRESS


def _parse(annotation: str) -> Any:
    """The argparse ``type=`` of a field: the first of int, float, str its annotation names."""
    parts = [part.strip() for part in annotation.split("|")]
    if "int" in parts and "str" in parts:
        return str  # devices: "2", "auto", "0,1" (the config turns "2" into 2)
    for name, kind in (("int", int), ("float", float)):
        if name in parts:
            return kind
    return str


def option_fields(cls: type, skip: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    """The fields of ``cls`` that have a flag (help text in their metadata), minus ``skip``."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help") and f.name not in skip]


def nested_fields(cls: type, skip: tuple[str, ...] = ()) -> dict[str, type]:
    """``{field name: options dataclass}`` of the fields of ``cls`` holding one (``nested`` metadata)."""
    return {
        f.name: type(f.metadata["nested"]())
        for f in dataclasses.fields(cls)
        if f.metadata.get("nested") is not None and f.name not in skip
    }


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, skip: tuple[str, ...] = ()
) -> None:
    """One flag per documented field of the config dataclass ``cls`` (minus ``skip``), then those of its nested
    options dataclasses (``augment``); defaults say where from."""
    for f in option_fields(cls, skip):
        name = (f.metadata.get("flag") or f.name).replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        text = str(f.metadata["help"])
        if f.metadata.get("parse") == "frames":  # --sample-frames N|A-B and its old spelling (cli/renamed.py)
            add_sample_frames_flags(parser)
            continue
        if str(f.type) == "bool":
            how = f.metadata.get("bool_flag", "both")
            if how == "on":
                parser.add_argument(f"--{name}", dest=f.name, action="store_true", default=_S, help=text)
            elif how == "off":
                parser.add_argument(f"--no-{name}", dest=f.name, action="store_false", default=_S, help=text)
            else:
                action = argparse.BooleanOptionalAction
                parser.add_argument(f"--{name}", dest=f.name, action=action, default=_S, help=text)
            continue
        shown = f" (default {default})" if default not in (None, "") and "default" not in text else ""
        choices = f.metadata.get("choices")
        if choices and "," not in text:
            text = f"{text}: {', '.join(c for c in choices if not c.isdigit())}"
        extra = {"metavar": f.metadata["metavar"]} if f.metadata.get("metavar") else {}
        parser.add_argument(f"--{name}", dest=f.name, type=_parse(str(f.type)), default=_S, help=text + shown, **extra)
    for nested in nested_fields(cls, skip).values():
        add_options(parser, nested)


def values_from_args(args: argparse.Namespace, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``--config`` YAML mapping (if any) with the flags given for ``cls``'s fields laid over it."""
    values: dict[str, Any] = read_yaml(args.config) if getattr(args, "config", None) else {}
    values = flatten_sections(values, "run")  # a flag then overrides a value given under run: / optim:
    for f in dataclasses.fields(cls):
        if f.name not in skip and hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    for name, nested in nested_fields(cls, skip).items():
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(nested) if hasattr(args, f.name)}
        if given:
            block = values.get(name) or {}
            if not isinstance(block, dict):
                raise ConfigError(f"option {name} is {block!r}, expected a mapping")
            values[name] = {**block, **given}
    return values
