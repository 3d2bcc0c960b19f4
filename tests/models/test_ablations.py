"""The ablation options: ``unet`` with TomoFormer's physics inputs, TomoFormer without its Transformer, and
``seednet`` with per-patch tokens."""

from __future__ import annotations

import pytest
import torch

from tomoformer.errors import ConfigError
from tomoformer.models.features import NUM_PIXEL_STATISTICS
from tomoformer.models.registry import create_model
from tomoformer.models.seednet import SeedNet


def _inputs(shape: tuple[int, int] = (17, 23)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    signals = torch.randn(2, 4, *shape, generator=gen) * 10 - 70
    signals[0, 1] = float("nan")
    signals[1, :, :3] = float("nan")
    return signals, torch.rand(2, 4, 3, generator=gen) * 10


def test_unet_physics_features_see_radial_slope_and_frame_pool() -> None:
    torch.manual_seed(0)
    plain, physics = create_model("unet"), create_model("unet", physics_features=True, pixel_pool_dim=8)
    assert plain.stem[0].in_channels == NUM_PIXEL_STATISTICS and plain.pixel_pool is None
    assert physics.stem[0].in_channels == NUM_PIXEL_STATISTICS + 16  # the same inputs as TomoFormer's pyramid
    assert physics.pixel_pool.mlp[0].in_channels == 6  # 5 frame features + the radial slope
    signals, tx = _inputs()
    out = physics(signals, tx)
    assert out.shape == (2, 17, 23) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in physics.pixel_pool.parameters())
    # Frame order does not matter (pooling over frames), and a missing frame is ignored.
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        torch.testing.assert_close(physics(signals[:, perm], tx[:, perm]), out, atol=1e-4, rtol=1e-4)


def test_tomoformer_pyramid_has_no_transformer() -> None:
    torch.manual_seed(0)
    full, pyramid = create_model("tomoformer_tiny"), create_model("tomoformer_pyramid")
    assert not any(k.startswith(("blocks.", "patch_embed", "agg.", "decoder.")) for k in pyramid.state_dict())
    # Everything else is the same: the pyramid, its inputs (PixelFramePool) and the head.
    shared = {k: v.shape for k, v in pyramid.state_dict().items()}
    full_shapes = {k: v.shape for k, v in full.state_dict().items()}
    differ = [k for k, s in shared.items() if full_shapes.get(k) != s]
    assert all(k.startswith("pyramid.dec.2.0") for k in differ), differ  # the last level drops the decoder's map
    assert sum(p.numel() for p in pyramid.parameters()) < 0.6 * sum(p.numel() for p in full.parameters())
    signals, tx = _inputs()
    out = pyramid(signals, tx)
    assert out.shape == (2, 17, 23) and torch.isfinite(out).all()
    assert pyramid.forward_train(signals, tx)[1] == []
    with pytest.raises(ConfigError, match="no Transformer"):
        pyramid.forward_features(signals, tx)
    with pytest.raises(ConfigError, match="aux_weight"):
        create_model("tomoformer_tiny", transformer=False, aux_weight=0.5)


@pytest.mark.parametrize("shape", [(16, 16), (17, 23)])
def test_seednet_patch_tokens_any_size_and_masked_frames(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = SeedNet(d_model=32, num_heads=2, num_layers=1, dim_feedforward=64, dropout=0.0, tokens="patch")
    assert model.head.out_features == 16  # one dense head per 4x4 patch, whatever the map size
    signals, tx = _inputs(shape)
    out = model(signals, tx)
    assert out.shape == (2, *shape) and torch.isfinite(out).all()
    padded = model(
        torch.cat([signals, torch.full_like(signals[:, :2], float("nan"))], 1), torch.cat([tx, tx[:, :2]], 1)
    )
    torch.testing.assert_close(padded, out, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="tokens"):
        SeedNet(tokens="grid")
