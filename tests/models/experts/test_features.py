import torch

from tomoformer.models.experts.features import (
    NUM_STAT_FEATURES,
    FeatureExtractor,
    PooledEncoder,
    embedding_width,
    signal_statistics,
)
from tomoformer.models.registry import create_model


def _signals(B: int = 3, T: int = 4, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, size, size, generator=gen) * 10 - 70, torch.rand(B, T, 3, generator=gen) * size


def test_statistics_shape_finite_and_offset_free() -> None:
    signals, tx = _signals()
    signals[0, 1] = float("nan")  # missing frame
    signals[1, :, :5, :5] = float("nan")  # never received
    stats = signal_statistics(signals, tx)
    assert stats.shape == (3, NUM_STAT_FEATURES) and torch.isfinite(stats).all()
    # dBm vs path gain: a constant offset per frame changes nothing.
    shifted = signals + torch.tensor([30.0, -10.0, 0.0, 5.0])[None, :, None, None]
    torch.testing.assert_close(signal_statistics(shifted, tx), stats, atol=1e-5, rtol=1e-5)
    # Coverage and never-received see the hole.
    assert stats[1, -1] > 0 and stats[2, -1] == 0 and stats[1, -2] < stats[2, -2]
    assert torch.isfinite(signal_statistics(torch.full((1, 2, 8, 8), float("nan")))).all()
    assert signal_statistics(signals, None)[:, 4:11].abs().sum() == 0  # no positions: no excess-loss features


def test_statistics_separate_smooth_from_blocky_maps() -> None:
    signals, tx = _signals(B=1)
    blocky = signals.clone()
    blocky[..., ::2, :] -= 40  # strong cell-to-cell jumps
    smooth, rough = signal_statistics(signals, tx), signal_statistics(blocky, tx)
    grad = 11  # grad_db
    assert rough[0, grad] > 2 * smooth[0, grad]


def test_extractor_standardises_and_round_trips() -> None:
    signals, tx = _signals()
    extractor = FeatureExtractor("stats")
    raw = extractor.raw(signals, tx)
    extractor.set_scaler(raw.mean(0), raw.std(0))
    z = extractor(signals, tx)
    torch.testing.assert_close(z.mean(0), torch.zeros(NUM_STAT_FEATURES), atol=1e-5, rtol=0)
    copy = FeatureExtractor("stats")
    copy.load_state_dict(extractor.state_dict())
    torch.testing.assert_close(copy(signals, tx), z)


def test_encoder_embeddings_for_tomoformer_and_head_models() -> None:
    signals, tx = _signals(B=2)
    tiny = dict(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_heads=2, patch_size=4)
    for model, width in ((create_model("tomoformer_tiny", **tiny), 16), (create_model("unet", base_channels=4), 4)):
        assert embedding_width(model) == width
        encoder = PooledEncoder(model).train()
        assert not encoder.model.training and not any(p.requires_grad for p in encoder.parameters())
        emb = encoder(signals, tx)
        assert emb.shape == (2, width) and torch.isfinite(emb).all()
        extractor = FeatureExtractor("encoder", model, width)
        assert extractor(signals, tx).shape == (2, width)
