import pytest
import torch
from timm.optim import param_groups_layer_decay

from tomoformer.errors import ConfigError
from tomoformer.models.registry import create_model
from tomoformer.models.tomoformer import (
    TomoFormer,
    TomoFormerConfig,
    tomoformer_base,
    tomoformer_small,
    tomoformer_tiny,
)

MICRO = dict(embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32, decoder_heads=2, patch_size=4)


def _batch(B: int = 2, T: int = 4, H: int = 16, W: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    signals = torch.randn(B, T, H, W, generator=gen) * 10 - 80
    tx = torch.rand(B, T, 3, generator=gen) * 20
    return signals, tx


@pytest.mark.parametrize("decoder", ["conv", "transformer"])
@pytest.mark.parametrize("shape", [(16, 16), (17, 23)])
def test_shapes(decoder: str, shape: tuple[int, int]) -> None:
    model = tomoformer_tiny(decoder=decoder, **MICRO)
    signals, tx = _batch(H=shape[0], W=shape[1])
    assert model(signals, tx).shape == (2, *shape)
    assert model(signals[:1, :1], None).shape == (1, *shape)  # B=1, T=1, no positions
    assert model(torch.cat([signals] * 3, dim=1)).shape == (2, *shape)  # T changes at inference


@pytest.mark.parametrize("decoder", ["conv", "transformer"])
def test_nan_inputs_give_finite_outputs(decoder: str) -> None:
    model = tomoformer_tiny(decoder=decoder, **MICRO, time_embed=True)
    signals, tx = _batch(H=17, W=23)
    signals[0, 1] = float("nan")  # missing frame
    signals[1, :, 3:9, 2:5] = float("nan")  # never-received block
    tx[1, 2] = float("nan")  # unknown transmitter
    out = model(signals, tx)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    empty = torch.full((1, 3, 9, 9), float("nan"))
    assert torch.isfinite(model(empty)).all()


def test_missing_frames_are_ignored() -> None:
    model = tomoformer_tiny(**MICRO).eval()
    signals, tx = _batch()
    padded = torch.cat([signals, torch.full_like(signals[:, :2], float("nan"))], dim=1)
    padded_tx = torch.cat([tx, tx[:, :2]], dim=1)
    torch.testing.assert_close(model(signals, tx), model(padded, padded_tx), atol=1e-5, rtol=1e-4)


def test_deterministic_under_seed() -> None:
    signals, tx = _batch()
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(tomoformer_tiny(decoder="transformer", **MICRO)(signals, tx))
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


def test_bf16_autocast_cpu() -> None:
    model = tomoformer_tiny(**MICRO)
    signals, tx = _batch(H=17, W=23)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(signals, tx)
    assert out.dtype == torch.float32 and out.shape == (2, 17, 23) and torch.isfinite(out).all()


def test_timm_hooks_and_layer_decay() -> None:
    model = tomoformer_tiny(decoder="transformer", **MICRO)
    tokens = model.forward_features(*_batch())
    assert tokens.shape == (2, 16, model.num_features)
    assert model.forward_head(tokens, _batch()[0]).shape == (2, 16, 16)
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)
    groups = param_groups_layer_decay(
        model, weight_decay=0.05, layer_decay=0.5, no_weight_decay_list=model.no_weight_decay()
    )
    scales = {g["lr_scale"] for g in groups}
    assert len(scales) == model.cfg.depth + 2  # stem, each block, decoder/head
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    for group in groups:
        if any(id(p) in head_ids for p in group["params"]):
            assert group["lr_scale"] == 1.0
        if any(p is model.patch_embed.weight for p in group["params"]):
            assert group["lr_scale"] == min(scales)
        if any(p is model.pos_embed for p in group["params"]):
            assert group["weight_decay"] == 0.0
    assert set(model.group_matcher(coarse=True)) == {"stem", "blocks"}


def test_freeze_patch_embed_and_first_blocks() -> None:
    model = tomoformer_tiny(**MICRO)
    for module in [model.patch_embed, *model.blocks[:1]]:
        module.requires_grad_(False)
    model(*_batch()).sum().backward()
    assert model.patch_embed.weight.grad is None and model.blocks[1].attn.qkv.weight.grad is not None


def test_reset_classifier() -> None:
    model = tomoformer_tiny(**MICRO)
    old = model.get_classifier()
    model.reset_classifier(1)
    assert model.get_classifier() is not old
    assert model(*_batch()).shape == (2, 16, 16)


def test_presets_ordered_and_configurable() -> None:
    counts = [sum(p.numel() for p in f().parameters()) for f in (tomoformer_tiny, tomoformer_small, tomoformer_base)]
    assert counts[0] < counts[1] < counts[2]
    model = create_model("tomoformer_tiny", decoder="transformer", patch_size=4)
    assert isinstance(model, TomoFormer) and model.cfg.patch_size == 4
    with pytest.raises(ConfigError):
        create_model("tomoformer_tiny", not_an_option=1)
    with pytest.raises(ConfigError):
        TomoFormerConfig(decoder="mlp")


def _task(B: int, gen: torch.Generator, T: int = 4, H: int = 16, W: int = 16):
    buildings = torch.zeros(B, H, W)
    for b in range(B):
        for _ in range(2):
            r, c = torch.randint(0, H - 5, (2,), generator=gen).tolist()
            h, w = torch.randint(3, 6, (2,), generator=gen).tolist()
            buildings[b, r : r + h, c : c + w] = 1
    noise = torch.randn(B, T, H, W, generator=gen) * 3
    offsets = torch.randn(B, T, 1, 1, generator=gen) * 20
    signals = -20 * buildings[:, None] + noise + offsets - 60
    return signals, buildings


def _iou(logits: torch.Tensor, target: torch.Tensor) -> float:
    pred = logits > 0
    return float((pred & (target > 0)).sum() / (pred | (target > 0)).sum().clamp_min(1))


@pytest.mark.parametrize("decoder", ["conv", "transformer"])
def test_learns_tiny_synthetic_task(decoder: str) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = tomoformer_tiny(**MICRO, decoder=decoder, decoder_dim=16, skip_dim=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        signals, buildings = _task(8, gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(signals), buildings)
        opt.zero_grad()
        loss.backward()
        opt.step()
    signals, buildings = _task(16, gen, T=7)  # a different T at test time
    with torch.no_grad():
        iou = _iou(model(signals), buildings)
    trivial = float(buildings.mean())  # IoU of predicting "building" everywhere
    assert iou > max(0.7, trivial + 0.3), (iou, trivial)


def test_torch_export_keeps_batch_and_frames_dynamic() -> None:
    from torch.export import Dim

    model = tomoformer_tiny(**MICRO).eval()
    dims = {"signals": {0: Dim.DYNAMIC, 1: Dim.DYNAMIC}}
    program = torch.export.export(model, (_batch(T=4, H=17, W=23)[0],), dynamic_shapes=dims)
    signals = _batch(B=3, T=7, H=17, W=23)[0]
    signals[0, 2] = float("nan")
    torch.testing.assert_close(program.module()(signals), model(signals), atol=1e-5, rtol=1e-4)


def test_forward_train_adds_deep_supervision_only_when_asked() -> None:
    signals, tx = _batch(H=17, W=23)
    plain = tomoformer_tiny(**MICRO).eval()
    logits, aux = plain.forward_train(signals, tx)
    assert aux == []
    torch.testing.assert_close(logits, plain(signals, tx))

    model = tomoformer_tiny(**MICRO, aux_weight=0.3).eval()
    logits, aux = model.forward_train(signals, tx)
    torch.testing.assert_close(logits, model(signals, tx))
    ((weight, aux_logits),) = aux
    assert weight == 0.3 and aux_logits.shape == logits.shape == (2, 17, 23)
    # The auxiliary map depends on the Transformer only, not on the per-pixel pyramid.
    aux_logits.sum().backward()
    assert all(p.grad is None for p in model.pyramid.parameters())
    assert model.patch_embed.weight.grad.abs().sum() > 0


def test_pixel_frame_pool_is_chunk_invariant_and_skips_unmeasured_frames() -> None:
    from tomoformer.models.tomoformer import PixelFramePool

    torch.manual_seed(0)
    pool = PixelFramePool(in_dim=6, dim=4, chunk=64)
    feats = torch.randn(2, 7, 6, 5, 5)
    valid = torch.rand(2, 7, 5, 5) > 0.3
    valid[0, :, 0, 0] = False  # a pixel never measured
    out = pool(feats, valid)
    assert out.shape == (2, 8, 5, 5)
    pool.chunk = 2
    torch.testing.assert_close(pool(feats, valid), out)
    assert torch.equal(out[0, :, 0, 0], torch.zeros(8))
    changed = feats.clone()
    changed[~valid[:, :, None].expand_as(feats)] = 1e3  # what unmeasured cells hold must not matter
    torch.testing.assert_close(pool(changed, valid), out)
