"""Run and optimiser options shared by every run config, and the one way a config is read from a mapping.

:class:`RunOptions` (trainer, hardware, seed, run folder policy) and :class:`OptimOptions` (batch, AdamW, warm-up)
are declared once here; ``TrainConfig``, ``ClassifyConfig`` and ``ExpertsConfig`` inherit them, so the fields, their
defaults, their range checks and their help text have one home. Inheritance rather than a nested ``run:`` field:
the fields stay flat attributes (``config.lr``), so run folders' ``config.yaml``, ``--resume`` comparison and every
caller keep their names; a YAML file may still group them under ``run:`` / ``optim:`` (see :func:`config_from_dict`).

Each field's ``metadata`` carries what the command line needs (:func:`option`): ``help`` (no help: no flag),
``flag`` (a different flag name), ``bounds`` (range check, applied by :func:`check_fields` whether the value came
from a flag, a YAML file or code). ``tomoformer.cli.options.add_options`` builds the flags from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tomoformer.errors import ConfigError
from tomoformer.validation import ACCELERATORS, PRECISIONS, SEED_MAX, check_declared

# ("int", low, high) or ("float", low, high, low_open, high_open); None: unbounded on that side.
Bounds = tuple[Any, ...]
SECTIONS = ("run", "optim")  # YAML sections accepted besides flat keys
# The fine-tuning policies, spelled once (tasks.policy parses them; every command's help quotes this).
POLICY_HELP = "full, head, freeze:K, llrd:G, lora:R or lp-ft[:F]"
OBJECTIVES = ("supervised", "masked")
MASK_MODES = ("frames", "patches")


def option(
    default: Any = dataclasses.MISSING,
    help: str | None = None,
    *,
    bounds: Bounds | None = None,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    factory: Any = dataclasses.MISSING,
    bool_flag: str = "both",
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its command-line help, flag name and range check in ``metadata``. (A field holding
    an options dataclass, ``augment``, instead carries ``nested``: a callable building it from keyword arguments.)
    ``bool_flag``: a bool field gets ``--x`` and ``--no-x`` ("both"), only ``--x`` ("on") or only ``--no-x``
    ("off")."""
    meta = {"help": help, "bounds": bounds, "flag": flag, "choices": choices, "bool_flag": bool_flag}
    if metavar:
        meta["metavar"] = metavar
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def like(cls: type, name: str, default: Any) -> Any:
    """Field ``name`` of ``cls`` (help, bounds, flag) with another default: one config's own default."""
    base = {f.name: f for f in dataclasses.fields(cls)}[name]
    return field(default=default, metadata=base.metadata)


@dataclass
class RunOptions:
    """How a run is executed: Lightning trainer and hardware, seed, step budget, and the run folder policy."""

    seed: int = option(0, "seed of the split, shuffling, augmentation and initialisation", bounds=("int", 0, SEED_MAX))
    max_steps: int = option(-1, "optimiser steps; -1 = no limit", bounds=("int", -1, None))
    accelerator: str = option("auto", "auto, cpu or gpu", choices=ACCELERATORS)
    devices: int | str = option(1, "devices per node: N, -1 (all), auto or a list like 0,1")
    num_nodes: int = option(1, "nodes", bounds=("int", 1, None))
    strategy: str = option("auto", "Lightning strategy, e.g. ddp")
    precision: str | None = option(
        None, "e.g. 32-true, bf16-mixed (default: bf16-mixed on CUDA, else 32-true)", choices=PRECISIONS
    )
    num_workers: int = option(0, "data-loading worker processes", bounds=("int", 0, None))
    val_every_steps: int | None = option(
        None,
        "validate (and keep the best checkpoint) every N optimiser steps instead of after every epoch: for small "
        "datasets trained for many epochs",
        bounds=("int", 1, None),
    )
    progress: bool = option(True, "live progress bar on a terminal")
    resume: bool = option(False, "continue the run in --out from its last checkpoint")
    overwrite: bool = option(False, "replace the run in --out (only the entries that run recorded are removed)")


@dataclass
class OptimOptions:
    """How the weights are optimised: batch size, AdamW with linear warm-up and cosine decay."""

    batch_size: int = option(8, "samples per step", bounds=("int", 1, None))
    lr: float = option(1e-3, "peak AdamW learning rate", bounds=("float", 0.0, None, False, False))
    weight_decay: float = option(0.05, "AdamW weight decay", bounds=("float", 0.0, None, False, False))
    warmup_fraction: float = option(
        0.05, "fraction of the steps spent warming up", bounds=("float", 0.0, 1.0, False, False)
    )


@dataclass
class AdaptOptions:
    """Where a fine-tuning run starts (``init``: a checkpoint or a shipped model's name) and what it trains."""

    init: str | None = option(
        None,
        "pretrained checkpoint, or a shipped model's name (`tomoformer models --pretrained`)",
        flag="from",
        metavar="CKPT",
    )
    policy: str = option("full", f"one of {POLICY_HELP} (default: full)")


@dataclass
class PretrainOptions:
    """The pretraining objective: supervised mapping, or masked signal modelling (no labels) and its masking."""

    objective: str = option("supervised", "masked: no labels needed", choices=OBJECTIVES)
    mask_ratio: float = option(
        0.5, "masked: fraction of frames or patches hidden", bounds=("float", 0.0, 1.0, True, True)
    )
    mask_mode: str = option("frames", "masked: what is hidden", choices=MASK_MODES)


@dataclass
class StreamOptions:
    """Training on samples simulated on the fly: new ones every epoch, validated on a fixed simulated set."""

    stream: bool = option(False, "simulate new training samples every epoch", bool_flag="on")
    sim_config: str | None = option(None, "SimConfig fields (see `tomoformer simulate`)", metavar="YAML")
    samples_per_epoch: int = option(1024, "simulated training samples per epoch", bounds=("int", 1, None))
    val_samples: int = option(64, "size of the fixed simulated validation set", bounds=("int", 1, None))


def section_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def shared_values(config: Any) -> dict[str, Any]:
    """The :class:`RunOptions` and :class:`OptimOptions` values of ``config`` (to build another config from)."""
    names = section_fields(RunOptions) | section_fields(OptimOptions)
    return {name: getattr(config, name) for name in names if hasattr(config, name)}


def check_fields(config: Any) -> None:
    """Range and choice checks of every field that declares them (:func:`tomoformer.validation.check_declared`,
    the one table); one-line :class:`ConfigError` naming it."""
    check_declared(config)
    if hasattr(config, "devices"):
        config.devices = devices_value(config.devices)


def check_budget(config: Any) -> None:
    """A run needs a step budget: ``max_epochs`` or ``max_steps`` of at least 1 (the command line's rule, applied
    to every config so a library caller gets it too)."""
    if config.max_epochs < 1 and config.max_steps < 1:
        raise ConfigError("give --max-epochs or --max-steps of at least 1")


def devices_value(devices: Any) -> int | str:
    """Lightning's forms: N >= 1, -1 (all), "auto", or a comma list of indices ("0,2"); "3" becomes 3."""
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices == 0 or devices < -1:
            raise ConfigError(f"option devices is {devices}, expected -1 (all), a count >= 1, auto or a list like 0,1")
        return devices
    text = str(devices).strip()
    if text == "auto" or (text and all(part.strip().isdigit() for part in text.rstrip(",").split(","))):
        return text
    raise ConfigError(f"option devices is {devices!r}, expected -1 (all), a count >= 1, auto or a list like 0,1")


# Field annotation (as written, ``from __future__ import annotations``) -> the YAML value types it accepts.
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
}


def _check_type(name: str, value: Any, annotation: str) -> None:
    """Refuse a YAML value of the wrong type (``max_epochs: ten``) with one line, before it fails deep inside."""
    allowed = [part.strip() for part in annotation.split("|")]
    kinds: tuple[type, ...] = ()
    for part in allowed:
        if part in _TYPES:
            kinds += _TYPES[part]
        elif part.startswith("dict"):
            kinds += (dict,)
        elif part.startswith(("list", "tuple")):
            kinds += (list, tuple)
        else:  # a nested options dataclass (augment): given as a mapping
            kinds += (dict, object) if part == "Any" else (dict,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and "bool" not in allowed):
        raise ConfigError(f"option {name} is {value!r}, expected {annotation.replace(' | ', ' or ')}")


def config_from_dict(cls: type, values: dict[str, Any], what: str) -> Any:
    """Build the run config ``cls`` from a plain mapping (a YAML file, flags): flat keys, or the shared ones grouped
    under ``run:`` / ``optim:``; unknown keys, wrong types and bad values fail with one line naming the option.
    Nested options dataclasses (``augment``, a field with ``nested`` metadata) are built from their mapping with
    the same checks."""
    values = flatten_sections(values, what)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"unknown {what} option(s): {', '.join(map(str, unknown))}")
    built: dict[str, Any] = {}
    for name, value in values.items():
        _check_type(name, value, str(fields[name].type))
        nested = fields[name].metadata.get("nested")
        if isinstance(value, dict) and nested is not None:
            value = nested_from_dict(type(nested()), value, name, nested)
        built[name] = value
    if isinstance(built.get("model_kwargs"), dict):
        bad = [k for k in built["model_kwargs"] if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise ConfigError(f"model_kwargs: {bad[0]!r} is not an option name")
    try:
        return cls(**built)
    except TypeError as err:
        raise ConfigError(f"bad {what} option ({err})") from None


def nested_from_dict(cls: type, values: dict[str, Any], prefix: str, build: Any = None) -> Any:
    """An options dataclass (``augment``) from its mapping; unknown keys and wrong types fail with one line."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    bad = sorted(set(values) - set(fields), key=str)
    if bad:
        raise ConfigError(f"unknown {prefix} option(s): {', '.join(map(str, bad))}")
    for name, value in values.items():
        _check_type(f"{prefix}.{name}", value, str(fields[name].type))
    return (build or cls)(**values)


def flatten_sections(values: dict[str, Any], what: str) -> dict[str, Any]:
    """``{run: {seed: 1}, lr: 0.1}`` -> ``{seed: 1, lr: 0.1}``; a key given both ways, or one in the wrong
    section, fails with one line."""
    flat = {k: v for k, v in values.items() if k not in SECTIONS}
    for section, cls in zip(SECTIONS, (RunOptions, OptimOptions), strict=True):
        if section not in values:
            continue
        group = values[section]
        if not isinstance(group, dict):
            raise ConfigError(f"option {section} must be a mapping of {what} options, got {group!r}")
        group = {str(k).replace("-", "_"): v for k, v in group.items()}
        wrong = sorted(set(group) - section_fields(cls))
        if wrong:
            raise ConfigError(f"unknown {section} option(s): {', '.join(wrong)}")
        twice = sorted(set(group) & set(flat))
        if twice:
            raise ConfigError(f"option(s) {', '.join(twice)} given both flat and under {section}:")
        flat.update(group)
    return flat
