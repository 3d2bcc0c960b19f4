import pytest
import torch

from tomoformer.models.seednet import SeedNet, seednet


@pytest.mark.parametrize("shape", [(16, 16), (17, 23)])
def test_shapes_any_t(shape: tuple[int, int]) -> None:
    model = seednet()
    signals = torch.randn(2, 4, *shape) - 70
    assert model(signals).shape == (2, *shape)
    assert model(torch.randn(1, 9, *shape), torch.rand(1, 9, 3)).shape == (1, *shape)


@pytest.mark.parametrize("train", [True, False])
def test_nan_frames_are_masked(train: bool) -> None:
    model = SeedNet(d_model=32, num_heads=2, dim_feedforward=64).train(train)
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
    model = SeedNet(d_model=32, num_heads=2, frame_chunk=3).eval()
    signals = torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        chunked = model(signals)
        model.frame_chunk = 256
        torch.testing.assert_close(chunked, model(signals), atol=1e-5, rtol=1e-5)


def test_bf16_autocast() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = seednet()(torch.randn(1, 2, 17, 23))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
