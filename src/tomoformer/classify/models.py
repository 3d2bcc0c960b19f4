"""timm classifiers built at the data's image size, and pretrained weights fitted onto them.

Any timm model name works. Models that take ``img_size`` (ViTs, DeiT, Swin ...) are built at the data's size;
when the model's patch does not tile the image into a grid of at least ``min(8, side / 2)`` patches (a 16-pixel
patch on 8x8 digits), a smaller patch is chosen (see :func:`auto_patch_size`). Weights from another grid, patch
size, channel count or class count are adapted with timm's own helpers: the architecture's
``checkpoint_filter_fn`` (resamples position and patch embeddings), ``adapt_input_conv`` (grey ↔ RGB stems),
and a classifier head of the wrong shape is dropped (left at its fresh initialisation).
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import sys
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models._manipulate import adapt_input_conv
from torch import nn

from tomoformer.errors import CheckpointError, ConfigError

DEFAULT_MODEL = "vit_tiny_patch16_224"


def check_model_name(name: str) -> None:
    """Refuse a name timm does not know, with the closest known names."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see timm.list_models())"
        raise ConfigError(f"unknown timm model {name!r}{hint}")


def auto_patch_size(patch: int, size: tuple[int, int]) -> int:
    """``patch`` if it tiles ``size`` (H, W) into a grid of at least ``min(8, side // 2)`` per side, else the
    largest patch that does (so 8x8 images get 2x2 patches and 32x32 images 4x4)."""
    side = min(size)
    target = min(8, max(1, side // 2))
    if all(s % patch == 0 for s in size) and side // patch >= target:
        return patch
    common = math.gcd(*size)
    return max(d for d in range(1, common + 1) if common % d == 0 and side // d >= target)


def resolve_model_kwargs(
    name: str,
    num_classes: int,
    in_chans: int,
    image_size: tuple[int, int],
    patch_size: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The complete keyword arguments of ``timm.create_model(name, ...)`` for this data: they are stored in
    checkpoints so the same model can be rebuilt without the data."""
    check_model_name(name)
    kwargs = {**(extra or {}), "num_classes": int(num_classes), "in_chans": int(in_chans)}
    with torch.device("meta"):  # a shape-only probe: no memory, no initialisation
        probe = timm.create_model(name, **{k: v for k, v in kwargs.items() if k != "patch_size"})
    if "img_size" in inspect.signature(type(probe).__init__).parameters:
        kwargs["img_size"] = [int(s) for s in image_size]
        default = getattr(getattr(probe, "patch_embed", None), "patch_size", None)
        if patch_size is None and default is not None:
            patch_size = auto_patch_size(int(default[0] if isinstance(default, tuple) else default), image_size)
        if patch_size is not None:
            kwargs["patch_size"] = int(patch_size)
    elif patch_size is not None:
        raise ConfigError(f"model {name!r} has no patch size to set")
    return kwargs


def create_classifier(name: str, model_kwargs: dict[str, Any], pretrained: bool = False) -> nn.Module:
    """``timm.create_model(name, **model_kwargs)``; ``pretrained=True`` downloads timm's weights (internet)."""
    check_model_name(name)
    try:
        model = timm.create_model(name, **model_kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        raise ConfigError(f"cannot build {name!r} with {model_kwargs}: {str(err).splitlines()[0][:200]}") from None
    if not pretrained:
        return model
    try:
        return timm.create_model(name, pretrained=True, **model_kwargs)
    except Exception as err:  # no network, no such weights, hub errors: all mean "use --weights"
        detail = (str(err).strip().splitlines() or ["no detail"])[0].split(". ")[0][:200]
        raise ConfigError(
            f"could not download pretrained weights for {name!r} ({type(err).__name__}: {detail}); offline, "
            "download the model's .safetensors file elsewhere and pass --weights FILE"
        ) from None


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file (timm or Hugging Face layout) or a torch file (read with
    ``weights_only=True``; a Lightning checkpoint's ``state_dict`` with its ``model.`` prefix is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable weights file ({type(err).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no tensors of a model state dict in this file")
    if state and all(k.startswith("model.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    return state


_HF_VIT = {
    r"embeddings\.cls_token": "cls_token",
    r"embeddings\.position_embeddings": "pos_embed",
    r"embeddings\.patch_embeddings\.projection\.(\w+)": r"patch_embed.proj.\1",
    r"encoder\.layer\.(\d+)\.layernorm_before\.(\w+)": r"blocks.\1.norm1.\2",
    r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(\w+)": r"blocks.\1.attn.proj.\2",
    r"encoder\.layer\.(\d+)\.layernorm_after\.(\w+)": r"blocks.\1.norm2.\2",
    r"encoder\.layer\.(\d+)\.intermediate\.dense\.(\w+)": r"blocks.\1.mlp.fc1.\2",
    r"encoder\.layer\.(\d+)\.output\.dense\.(\w+)": r"blocks.\1.mlp.fc2.\2",
    r"layernorm\.(\w+)": r"norm.\1",
    r"classifier\.(\w+)": r"head.\1",
}


def convert_hf_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``transformers`` ViT weights (``ViTForImageClassification`` / ``ViTModel``) → timm names;
    separate query/key/value projections are stacked into timm's ``qkv``. Other layouts pass through."""
    if not any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in state):
        return state
    state = {k.removeprefix("vit."): v for k, v in state.items() if not k.startswith(("pooler.", "vit.pooler."))}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        found = re.fullmatch(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(\w+)", key)
        if found:
            qkv.setdefault((found.group(1), found.group(3)), {})[found.group(2)] = value
            continue
        for pattern, target in _HF_VIT.items():
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, target, key)] = value
                break
        else:
            out[key] = value  # left for load_weights to report as unexpected
    for (block, kind), parts in qkv.items():
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def _classifier_prefix(model: nn.Module) -> str | None:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        return None
    return next((f"{n}." for n, m in model.named_modules() if m is head and n), None)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load ``state`` into ``model`` after adapting it (see the module docstring); returns the names of the
    classifier-head tensors left at their fresh initialisation (dropped for another shape, or absent from a
    headless source). Anything else that does not fit raises CheckpointError."""
    state = convert_hf_vit(dict(state))
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as err:
            raise CheckpointError(f"{source}: weights do not fit {type(model).__name__} ({err})") from None
    own = model.state_dict()
    head = _classifier_prefix(model)
    for key in list(state):
        if key not in own or state[key].shape == own[key].shape:
            continue
        value = state[key]
        if value.ndim == 4 and value.shape[0] == own[key].shape[0] and value.shape[2:] == own[key].shape[2:]:
            state[key] = adapt_input_conv(own[key].shape[1], value)  # e.g. RGB stem on grey images
        elif head is not None and key.startswith(head):
            del state[key]
        else:
            raise CheckpointError(
                f"{source}: {key} has shape {list(value.shape)}, the model needs {list(own[key].shape)}"
            )
    # A headless source (a backbone, HF ViTModel) leaves the fresh head in place.
    missing = [k for k in own if k not in state and not (head is not None and k.startswith(head))]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise CheckpointError(f"{source}: weights do not fit {type(model).__name__} ({what}, ...)")
    model.load_state_dict(state, strict=False)
    return [k for k in own if k not in state]
