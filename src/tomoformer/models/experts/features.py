"""Per-sample features that the clustering (and the routing of an :class:`ExpertsModel`) is based on.

Two kinds, both torch modules so that the fitted model computes exactly the features it was clustered on:

* ``stats`` (:func:`signal_statistics`): distributions of the per-frame normalised dB and of the excess loss over
  free space (quantiles over the pixels of the per-pixel mean / best values, see ``models.features``), the mean
  spatial gradient energy of both, and coverage (mean measured fraction, share of never-received pixels). The
  per-frame normalisation makes them independent of dBm vs path gain and of the transmit power.
* ``encoder`` (:class:`PooledEncoder`): the mean-pooled features of a pretrained (frozen) model: TomoFormer's
  encoder tokens (``forward_features``), else the input of the model's head (``get_classifier()``).

:class:`FeatureExtractor` standardises either with a fitted mean and scale (buffers, so ``state_dict`` keeps them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tomoformer.errors import ConfigError
from tomoformer.models.features import pixel_statistics

QUANTILES = (0.1, 0.5, 0.9)
STAT_FEATURES = (
    *(f"db_mean_q{int(q * 100)}" for q in QUANTILES),
    "db_std",
    *(f"ex_max_q{int(q * 100)}" for q in QUANTILES),
    *(f"ex_mean_q{int(q * 100)}" for q in QUANTILES),
    "ex_std",
    "grad_db",
    "grad_ex",
    "coverage",
    "never_received",
)
NUM_STAT_FEATURES = len(STAT_FEATURES)


def _masked_quantiles(values: Tensor, mask: Tensor) -> Tensor:
    """Quantiles ``QUANTILES`` over the pixels where ``mask``: values, mask [B, H, W] -> [B, 3] (0 if none)."""
    flat = torch.where(mask, values, torch.nan).flatten(1)
    q = torch.tensor(QUANTILES, device=values.device, dtype=flat.dtype)
    return torch.nan_to_num(torch.nanquantile(flat, q, dim=1).T, nan=0.0)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the pixels where ``mask``: [B, H, W] -> [B] (0 if none)."""
    mask = mask.float()
    return (values * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)


def _gradient_energy(values: Tensor, mask: Tensor) -> Tensor:
    """Mean squared difference between measured 4-neighbours: [B, H, W] -> [B] (in squared 20 dB units)."""
    dy = (values[:, 1:] - values[:, :-1]) ** 2
    dx = (values[:, :, 1:] - values[:, :, :-1]) ** 2
    my, mx = (mask[:, 1:] & mask[:, :-1]).float(), (mask[:, :, 1:] & mask[:, :, :-1]).float()
    total = (dy * my).flatten(1).sum(1) + (dx * mx).flatten(1).sum(1)
    return total / (my.flatten(1).sum(1) + mx.flatten(1).sum(1)).clamp_min(1.0)


@torch.no_grad()
def signal_statistics(signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
    """Per-sample signal statistics (see ``STAT_FEATURES``).

    Args:
        signals: [B, T, H, W] dB, NaN = missing.
        tx_pos: [B, T, 3] cells or None (then the excess-loss features are 0).

    Returns:
        [B, 15] float32, never NaN; dB quantities in 20 dB units.
    """
    stats = pixel_statistics(signals.float(), None if tx_pos is None else tx_pos.float())
    db_mean, db_std, seen = stats[:, 0], stats[:, 3], stats[:, 4] > 0
    ex_mean, ex_max, ex_std, ex_seen = stats[:, 5], stats[:, 6], stats[:, 8], stats[:, 9] > 0
    coverage = stats[:, 4].flatten(1).mean(1)
    never = 1.0 - seen.float().flatten(1).mean(1)
    columns = [
        _masked_quantiles(db_mean, seen),
        _masked_mean(db_std, seen)[:, None],
        _masked_quantiles(ex_max, ex_seen),
        _masked_quantiles(ex_mean, ex_seen),
        _masked_mean(ex_std, ex_seen)[:, None],
        _gradient_energy(db_mean, seen)[:, None],
        _gradient_energy(ex_max, ex_seen)[:, None],
        coverage[:, None],
        never[:, None],
    ]
    return torch.cat(columns, dim=1)


class PooledEncoder(nn.Module):
    """A frozen pretrained model used as an embedding: signals [B, T, H, W] -> [B, D].

    TomoFormer-like models (``forward_features``) give the mean of their encoder tokens; other models the
    spatial mean of the input of their head, caught by a forward pre-hook on ``get_classifier()``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "forward_features") and not hasattr(model, "get_classifier"):
            raise ConfigError(f"{type(model).__name__} has neither forward_features nor get_classifier: no embedding")
        self.model = model
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> PooledEncoder:
        # Always eval: the clusters were fitted on eval-mode embeddings (dropout off).
        return super().train(False)

    @torch.no_grad()
    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        if hasattr(self.model, "forward_features"):
            return self.model.forward_features(signals, tx_pos).float().mean(1)
        caught: list[Tensor] = []
        hook = self.model.get_classifier().register_forward_pre_hook(lambda _m, args: caught.append(args[0]))
        try:
            self.model(signals, tx_pos)
        finally:
            hook.remove()
        return caught[-1].float().mean((2, 3))


class FeatureExtractor(nn.Module):
    """Standardised clustering features: signals [B, T, H, W] dB (+ tx_pos) -> [B, F].

    Args:
        kind: ``"stats"`` (:func:`signal_statistics`, F = 15) or ``"encoder"`` (needs ``encoder``).
        encoder: the pretrained model for ``kind="encoder"``.
        num_features: F; for ``encoder`` the width of its embedding.
    """

    def __init__(self, kind: str = "stats", encoder: nn.Module | None = None, num_features: int | None = None) -> None:
        super().__init__()
        if kind not in ("stats", "encoder"):
            raise ConfigError(f"features must be 'stats' or 'encoder', got {kind!r}")
        if kind == "encoder" and encoder is None:
            raise ConfigError("features 'encoder' needs an encoder model (encoder_checkpoint)")
        self.kind = kind
        self.encoder = PooledEncoder(encoder) if kind == "encoder" and encoder is not None else None
        F = NUM_STAT_FEATURES if kind == "stats" else int(num_features or 0)
        if F < 1:
            raise ConfigError("features 'encoder' needs num_features >= 1")
        self.num_features = F
        self.register_buffer("mean", torch.zeros(F))
        self.register_buffer("scale", torch.ones(F))

    def raw(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """Unstandardised features [B, F] float32."""
        if self.encoder is not None:
            return self.encoder(signals, tx_pos)
        return signal_statistics(signals, tx_pos)

    def set_scaler(self, mean: Any, scale: Any) -> None:
        """Store a fitted standardisation (e.g. sklearn StandardScaler ``mean_``, ``scale_``), arrays [F]."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32).clamp_min(1e-6))

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        return (self.raw(signals, tx_pos) - self.mean) / self.scale


def embedding_width(encoder: nn.Module, size: int = 16) -> int:
    """Width D of :class:`PooledEncoder` over ``encoder`` (probed on a tiny random input)."""
    probe = torch.randn(1, 2, size, size, device=next(encoder.parameters()).device) * 10 - 80
    return int(PooledEncoder(encoder)(probe).shape[1])
