import pytest
import torch

from tomoformer.errors import ConfigError
from tomoformer.models.registry import create_model, list_models

TINY = {
    "tomoformer_tiny": dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_heads=2),
    "tomoformer_small": dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_heads=2),
    "tomoformer_base": dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_heads=2),
    "unet": dict(base_channels=8),
    "seednet": dict(d_model=32, num_heads=2, dim_feedforward=64, img_size=16),
    "seednet_small": dict(img_size=16),
}


def test_builtin_models_registered() -> None:
    assert {
        "tomoformer_tiny",
        "tomoformer_small",
        "tomoformer_base",
        "unet",
        "seednet",
        "threshold",
        "rti",
    } <= set(list_models())
    with pytest.raises(ConfigError):
        create_model("no_such_model")


@pytest.mark.parametrize("name", sorted(list_models()))
@pytest.mark.parametrize("shape", [(16, 16), (17, 23)])
def test_every_model_maps_signals_to_logits(name: str, shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = create_model(name, **TINY.get(name, {}))
    signals = torch.randn(2, 4, *shape) * 10 - 70
    signals[0, 1] = float("nan")
    tx = torch.rand(2, 4, 3) * 10
    out = model(signals, tx)
    assert out.shape == (2, *shape) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model(signals[:1, :3], tx[:1, :3]).shape == (1, *shape)  # B=1, another T
    assert isinstance(getattr(model, "requires_fit", False), bool)
