"""A registry of model builders, so that every command can build any model by name (as timm does).

Every builder returns an ``nn.Module`` that is a :class:`~tomoformer.models.protocol.MappingModel` (optionally a
``FittedModel`` or ``DeepSupervisedModel``); ``tests/models/test_protocol.py`` checks it for every name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from tomoformer.errors import ConfigError

# A builder: keyword options -> an nn.Module that is a MappingModel.
ModelBuilder = Callable[..., nn.Module]
_MODELS: dict[str, ModelBuilder] = {}


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Register ``fn`` under its own name; ``fn(**kwargs)`` must return the model."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _import_builtin_models()
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with config overrides ``kwargs``: an ``nn.Module`` that is a
    :class:`~tomoformer.models.protocol.MappingModel` (signals [B, T, H, W] dB, tx_pos [B, T, 3] -> [B, H, W])."""
    _import_builtin_models()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(_MODELS))}")
    try:
        return _MODELS[name](**kwargs)
    except TypeError as err:
        raise ConfigError(f"model {name!r}: bad option ({err})") from None


def _import_builtin_models() -> None:
    # Importing the model modules runs their @register_model decorators.
    from tomoformer.models import classical, convgru, seednet, tomoformer, unet  # noqa: F401
    from tomoformer.models.experts import model as _experts  # noqa: F401
