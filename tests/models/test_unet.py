import pytest
import torch

from tomoformer.models.unet import UNet, unet


@pytest.mark.parametrize("shape", [(16, 16), (17, 23), (1, 1)])
def test_shapes_any_size(shape: tuple[int, int]) -> None:
    model = unet()
    signals = torch.randn(2, 4, *shape) - 70
    assert model(signals).shape == (2, *shape)
    assert model(signals[:1, :1], torch.rand(1, 1, 3)).shape == (1, *shape)


def test_default_size_and_nan() -> None:
    model = unet()
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2.5e6
    signals = torch.randn(2, 4, 17, 23)
    signals[0, 2] = float("nan")
    signals[1, :, :5, :5] = float("nan")
    out = model(signals, torch.full((2, 4, 3), float("nan")))
    assert torch.isfinite(out).all()
    assert torch.isfinite(model(torch.full((1, 2, 8, 8), float("nan")))).all()


def test_bf16_autocast_and_determinism() -> None:
    signals = torch.randn(1, 3, 16, 16)
    torch.manual_seed(1)
    a = UNet(base_channels=8)(signals)
    torch.manual_seed(1)
    model = UNet(base_channels=8)
    torch.testing.assert_close(a, model(signals), atol=0, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(signals)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_learns_tiny_synthetic_task() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    def task(B: int) -> tuple[torch.Tensor, torch.Tensor]:
        buildings = (torch.rand(B, 4, 4, generator=gen) < 0.3).float().repeat_interleave(4, 1).repeat_interleave(4, 2)
        offsets = torch.randn(B, 4, 1, 1, generator=gen) * 20
        signals = -20 * buildings[:, None] + torch.randn(B, 4, 16, 16, generator=gen) * 3 + offsets
        return signals, buildings

    model = UNet(base_channels=8, depth=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        signals, buildings = task(8)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(signals), buildings)
        opt.zero_grad()
        loss.backward()
        opt.step()
    signals, buildings = task(16)
    with torch.no_grad():
        pred = model(signals) > 0
    target = buildings > 0
    iou = float((pred & target).sum() / (pred | target).sum())
    assert iou > max(0.7, float(buildings.mean()) + 0.3), iou
