import pytest
import torch

from tomoformer.errors import ConfigError, DataError
from tomoformer.models.registry import create_model
from tomoformer.models.seednet import SeedNet, seednet, seednet_small

SMALL = dict(d_model=32, num_heads=2, num_layers=2, dim_feedforward=64, dropout=0.0, pool_size=4)


def test_full_preset_has_the_sketch_widths() -> None:
    model = seednet()
    layer = model.encoder.layers[0]
    assert len(model.encoder.layers) == 6 and layer.self_attn.embed_dim == 512 and layer.self_attn.num_heads == 8
    assert layer.linear1.out_features == 2048 and layer.dropout.p == 0.1
    assert model.head.in_features == 512 and model.head.out_features == 100 * 100  # one dense map of 100x100
    assert 25e6 < sum(p.numel() for p in model.parameters()) < 32e6
    small = seednet_small(img_size=16)
    assert small.head.out_features == 256 and sum(p.numel() for p in small.parameters()) < 2e6


@pytest.mark.parametrize("shape", [(16, 16), (17, 23)])
def test_shapes_any_t_and_other_sizes_resampled(shape: tuple[int, int]) -> None:
    model = SeedNet(img_size=16, **SMALL)
    signals = torch.randn(2, 4, *shape) - 70
    assert model(signals).shape == (2, *shape)
    assert model(torch.randn(1, 9, *shape), torch.rand(1, 9, 3)).shape == (1, *shape)


def test_native_size_is_the_dense_map_itself() -> None:
    torch.manual_seed(0)
    model = SeedNet(img_size=8, **SMALL).eval()
    signals = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(64.0))  # each cell its own output: no resampling in between
        torch.testing.assert_close(model(signals), torch.arange(64.0).reshape(1, 8, 8))


def test_other_size_refused_with_one_line() -> None:
    model = SeedNet(img_size=16, other_size="refuse", **SMALL)
    assert model(torch.randn(1, 2, 16, 16)).shape == (1, 16, 16)
    with pytest.raises(DataError, match=r"predicts 16x16 maps, the data is 17x23"):
        model(torch.randn(1, 2, 17, 23))
    with pytest.raises(ConfigError, match="other_size"):
        create_model("seednet", other_size="crop")


@pytest.mark.parametrize("train", [True, False])
def test_nan_frames_are_masked(train: bool) -> None:
    model = SeedNet(img_size=16, **SMALL).train(train)
    signals = torch.randn(2, 4, 17, 23)
    tx = torch.rand(2, 4, 3) * 10
    tx[0, 0] = float("nan")
    with torch.set_grad_enabled(train):
        out = model(signals, tx)
        padded = model(
            torch.cat([signals, torch.full_like(signals[:, :2], float("nan"))], 1),
            torch.cat([tx, tx[:, :2]], 1),
        )
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(out, padded, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(model(torch.full((1, 3, 8, 8), float("nan")))).all()


def test_frame_chunking_matches() -> None:
    torch.manual_seed(0)
    model = SeedNet(img_size=16, frame_chunk=3, **SMALL).eval()
    signals = torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        chunked = model(signals)
        model.frame_chunk = 256
        torch.testing.assert_close(chunked, model(signals), atol=1e-5, rtol=1e-5)


def test_bf16_autocast() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = seednet_small(img_size=16)(torch.randn(1, 2, 17, 23))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
