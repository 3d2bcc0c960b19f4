"""timm models built at the data's size, and pretrained weights adapted onto them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.classify.conftest import TINY_VIT
from tomoformer.classify.models import (
    auto_patch_size,
    convert_hf_vit,
    create_classifier,
    load_weights,
    read_weights_file,
    resolve_model_kwargs,
)
from tomoformer.errors import CheckpointError, ConfigError

VIT = "vit_tiny_patch16_224"


def _vit(classes: int = 3, chans: int = 1, size: tuple[int, int] = (8, 8), patch: int | None = None):
    kwargs = resolve_model_kwargs(VIT, classes, chans, size, patch, TINY_VIT)
    return create_classifier(VIT, kwargs), kwargs


@pytest.mark.parametrize(
    ("patch", "size", "expected"), [(16, (8, 8), 2), (16, (32, 32), 4), (16, (224, 224), 16), (16, (28, 28), 2)]
)
def test_auto_patch_size(patch: int, size: tuple[int, int], expected: int) -> None:
    assert auto_patch_size(patch, size) == expected


def test_resolve_model_kwargs_fits_small_images() -> None:
    model, kwargs = _vit()
    assert kwargs == {**TINY_VIT, "num_classes": 3, "in_chans": 1, "img_size": [8, 8], "patch_size": 2}
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    assert model.patch_embed.grid_size == (4, 4)
    # Models without img_size (a CNN) are built as timm makes them; a patch size makes no sense there.
    assert "img_size" not in resolve_model_kwargs("resnet10t", 3, 1, (8, 8))
    with pytest.raises(ConfigError, match="no patch size"):
        resolve_model_kwargs("resnet10t", 3, 1, (8, 8), patch_size=2)


def test_unknown_model_name_suggests_close_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown timm model 'vit_tiny_patch16_22'.*did you mean"):
        resolve_model_kwargs("vit_tiny_patch16_22", 3, 1, (8, 8))


def test_weights_are_adapted_to_grid_channels_and_classes() -> None:
    source, _ = _vit(classes=5, chans=3, size=(16, 16), patch=2)  # 8x8 grid, RGB, 5 classes
    target, _ = _vit(classes=3, chans=1, size=(8, 8), patch=2)  # 4x4 grid, grey, 3 classes
    head_before = target.head.weight.clone()
    fresh = load_weights(target, source.state_dict(), "src")
    assert fresh == ["head.weight", "head.bias"]
    assert torch.equal(target.head.weight, head_before)  # the mismatched head is not loaded
    assert torch.equal(target.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert target.pos_embed.shape == (1, 17, 32)
    # Grey stem from the RGB one: timm's adapt_input_conv sums the input channels.
    assert torch.allclose(target.patch_embed.proj.weight, source.patch_embed.proj.weight.sum(1, keepdim=True))


def test_weights_that_do_not_fit_are_refused() -> None:
    target, _ = _vit()
    wider = create_classifier(VIT, resolve_model_kwargs(VIT, 3, 1, (8, 8), 2, {**TINY_VIT, "embed_dim": 48}))
    with pytest.raises(CheckpointError, match=r"shape|fit"):
        load_weights(target, wider.state_dict(), "wide.safetensors")
    state = {k: v for k, v in target.state_dict().items() if not k.startswith("blocks.1.")}
    with pytest.raises(CheckpointError, match=r"missing blocks\.1"):
        load_weights(target, state, "partial")


def _to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ViT names → Hugging Face ``ViTForImageClassification`` names (the inverse of convert_hf_vit)."""
    rules = [
        (r"cls_token", "vit.embeddings.cls_token"),
        (r"pos_embed", "vit.embeddings.position_embeddings"),
        (r"patch_embed\.proj\.(\w+)", r"vit.embeddings.patch_embeddings.projection.\1"),
        (r"blocks\.(\d+)\.norm1\.(\w+)", r"vit.encoder.layer.\1.layernorm_before.\2"),
        (r"blocks\.(\d+)\.norm2\.(\w+)", r"vit.encoder.layer.\1.layernorm_after.\2"),
        (r"blocks\.(\d+)\.attn\.proj\.(\w+)", r"vit.encoder.layer.\1.attention.output.dense.\2"),
        (r"blocks\.(\d+)\.mlp\.fc1\.(\w+)", r"vit.encoder.layer.\1.intermediate.dense.\2"),
        (r"blocks\.(\d+)\.mlp\.fc2\.(\w+)", r"vit.encoder.layer.\1.output.dense.\2"),
        (r"norm\.(\w+)", r"vit.layernorm.\1"),
        (r"head\.(\w+)", r"classifier.\1"),
    ]
    out = {}
    for key, value in state.items():
        found = re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.(\w+)", key)
        if found:
            for part, chunk in zip(("query", "key", "value"), value.chunk(3), strict=True):
                out[f"vit.encoder.layer.{found.group(1)}.attention.attention.{part}.{found.group(2)}"] = chunk
            continue
        pattern, target = next((p, t) for p, t in rules if re.fullmatch(p, key))
        out[re.sub(pattern, target, key)] = value
    return out


def test_hugging_face_vit_weights_load_from_safetensors(tmp_path: Path) -> None:
    source, kwargs = _vit()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in _to_hf(source.state_dict()).items()}, str(path))
    state = read_weights_file(path)
    assert "vit.embeddings.cls_token" in state and "cls_token" in convert_hf_vit(state)
    target = create_classifier(VIT, kwargs)
    assert load_weights(target, state, str(path)) == []
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(source.eval()(x), target.eval()(x), atol=1e-6)


def test_read_weights_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such"):
        read_weights_file(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable"):
        read_weights_file(tmp_path / "junk.safetensors")


def test_pretrained_download_offline_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached: the download itself is needed
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    kwargs = resolve_model_kwargs(VIT, 3, 1, (8, 8), None, TINY_VIT)
    with pytest.raises(ConfigError, match=r"could not download pretrained weights.*--weights") as err:
        create_classifier(VIT, kwargs, pretrained=True)
    assert "\n" not in str(err.value)
