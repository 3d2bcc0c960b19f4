"""Every registry model follows the model protocol; the helpers tell fitted and deep-supervised models apart."""

from __future__ import annotations

import torch

from tomoformer.models.protocol import (
    DeepSupervisedModel,
    FittedModel,
    MappingModel,
    forward_train_of,
    requires_fit,
)
from tomoformer.models.registry import create_model, list_models

SMALL = {"embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 32, "decoder_heads": 2}
KWARGS = {
    "tomoformer_small": SMALL,
    "tomoformer_base": SMALL,
    "seednet": {"img_size": 16, "d_model": 16, "num_heads": 2, "num_layers": 1, "dim_feedforward": 32},
    "seednet_small": {"img_size": 16},
}


def test_every_registry_model_maps_signals_to_logits_and_declares_its_kind() -> None:
    signals = -60 - 30 * torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    tx_pos = torch.cat([torch.full((2, 4, 2), 8.0), torch.full((2, 4, 1), 1.5)], dim=2)
    fitted = set()
    for name in list_models():
        model = create_model(name, **KWARGS.get(name, {})).eval()
        assert isinstance(model, MappingModel), name
        with torch.no_grad():
            assert model(signals, tx_pos).shape == (2, 16, 16), name
        assert requires_fit(model) == isinstance(model, FittedModel) == bool(getattr(model, "requires_fit", False))
        if requires_fit(model):
            fitted.add(name)
        train = forward_train_of(model)
        assert (train is not None) == isinstance(model, DeepSupervisedModel), name
        if train is not None:
            logits, auxiliary = train(signals, tx_pos)
            assert logits.shape == (2, 16, 16) and all(a.shape == (2, 16, 16) for _, a in auxiliary)
    assert fitted == {"threshold", "rti"}


def test_helpers_on_a_plain_module() -> None:
    plain = torch.nn.Identity()
    assert not requires_fit(plain) and forward_train_of(plain) is None
