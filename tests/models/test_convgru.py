import numpy as np
import pytest
import torch

from tomoformer.models.convgru import ConvGRU, convgru
from tomoformer.models.registry import create_model

TINY = dict(hidden_channels=8, decoder_channels=8)


@pytest.mark.parametrize("levels", [0, 1, 2])
@pytest.mark.parametrize("shape", [(16, 16), (17, 23), (1, 1)])
def test_shapes_any_size_and_t(levels: int, shape: tuple[int, int]) -> None:
    model = ConvGRU(levels=levels, **TINY)
    signals = torch.randn(2, 4, *shape) * 10 - 70
    assert model(signals, torch.rand(2, 4, 3) * 10).shape == (2, *shape)
    assert model(signals[:1, :1]).shape == (1, *shape)  # B=1, T=1, no positions
    assert model(torch.cat([signals] * 3, dim=1)).shape == (2, *shape)  # another T at inference


def test_registered_and_configurable() -> None:
    assert isinstance(create_model("convgru", hidden_channels=4), ConvGRU)
    assert sum(p.numel() for p in convgru().parameters()) < 200_000


def test_missing_frames_and_cells_do_not_change_the_state() -> None:
    torch.manual_seed(0)
    model = ConvGRU(**TINY).eval()
    signals, tx = torch.randn(2, 3, 16, 16) * 10 - 70, torch.rand(2, 3, 3) * 16
    nan_frame = torch.full((2, 1, 16, 16), float("nan"))
    nan_tx = torch.full((2, 1, 3), float("nan"))
    reference = model(signals, tx)
    # A missing frame anywhere in the sequence is skipped exactly.
    padded = model(
        torch.cat([signals[:, :1], nan_frame, signals[:, 1:], nan_frame], 1),
        torch.cat([tx[:, :1], nan_tx, tx[:, 1:], nan_tx], 1),
    )
    torch.testing.assert_close(padded, reference)
    # Dropping cells changes the prediction (the model sees them) but never produces NaN.
    holes = signals.clone()
    holes[:, :, 4:9, 4:9] = float("nan")
    out = model(holes, tx)
    assert torch.isfinite(out).all() and not torch.allclose(out, reference)
    assert torch.isfinite(model(torch.full((1, 2, 8, 8), float("nan")))).all()


def test_offset_invariance() -> None:
    # Per-frame normalisation: a constant dB offset per frame (dBm vs path gain) changes nothing.
    torch.manual_seed(0)
    model = ConvGRU(**TINY).eval()
    signals = torch.randn(1, 3, 16, 16) * 10 - 70
    shifted = signals + torch.tensor([30.0, -12.0, 5.0])[None, :, None, None]
    torch.testing.assert_close(model(shifted), model(signals), atol=1e-5, rtol=1e-5)


def test_learns_tiny_synthetic_task() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    def task(B: int) -> tuple[torch.Tensor, torch.Tensor]:
        buildings = (torch.rand(B, 4, 4, generator=gen) < 0.3).float().repeat_interleave(4, 1).repeat_interleave(4, 2)
        offsets = torch.randn(B, 4, 1, 1, generator=gen) * 20
        signals = -20 * buildings[:, None] + torch.randn(B, 4, 16, 16, generator=gen) * 3 + offsets
        return signals, buildings

    model = ConvGRU(**TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
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
    assert iou > 0.8


def test_exports_with_dynamic_frames(tmp_path) -> None:
    # torch.export would unroll the frame loop for the traced T; the scan keeps T dynamic (ONNX Scan).
    pytest.importorskip("onnxruntime")
    from tomoformer.checkpoint import save_checkpoint
    from tomoformer.export import OnnxPredictor, example_inputs, export_model

    torch.manual_seed(0)
    model = ConvGRU(levels=1, **TINY).eval()
    checkpoint = save_checkpoint(tmp_path / "g.ckpt", model, {"model": "convgru", "model_kwargs": TINY})
    onnx_file = export_model(checkpoint, "onnx", tmp_path / "g.onnx", height=13, width=10, optimize=False)
    program = torch.export.load(export_model(checkpoint, "torchscript", tmp_path / "g.pt2", height=13, width=10))
    for batch, frames in [(1, 1), (2, 9)]:  # traced with B=2, T=3
        signals, tx_pos = example_inputs(batch, frames, (13, 10), seed=frames)
        with torch.no_grad():
            expected = model(signals, tx_pos)
            torch.testing.assert_close(program.module()(signals, tx_pos), expected, atol=1e-5, rtol=1e-5)
        got = OnnxPredictor(onnx_file)(signals.numpy(), tx_pos.numpy())
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert all(p.requires_grad for p in model.parameters())  # export leaves the model trainable
