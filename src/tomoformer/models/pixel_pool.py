"""Learned per-pixel statistics over frames (``PixelFramePool``) and the physics inputs built on them.

Shared by TomoFormer's full-resolution pyramid and by ``unet`` with ``physics_features=True`` (the ablation that
gives the U-Net the same inputs as TomoFormer's pyramid).

How frames are aggregated per pixel is the model option ``frame_stats``: ``"stable"`` (the default: means and soft
extremes, which converge as frames are added) or ``"max"`` (the original design: maxima and minima, which drift
with T). Both modules below store the choice in a buffer (``frame_stats_code``), so a checkpoint rebuilds the
aggregation it was trained with; a checkpoint written before the option existed has no such buffer and loads as
``"max"`` (:class:`FrameStatsMode`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tomoformer.errors import ConfigError
from tomoformer.models.features import (
    AGGREGATIONS,
    NUM_PIXEL_STATISTICS,
    SoftExtreme,
    frame_features,
    pixel_statistics,
    radial_slope,
)

__all__ = [
    "FrameStatsMode",
    "PixelFramePool",
    "PixelStatistics",
    "check_frame_stats",
    "physics_frame_features",
    "physics_pixel_dim",
    "physics_pixel_inputs",
]
# The aggregation a checkpoint without a ``frame_stats_code`` buffer was trained with.
LEGACY_FRAME_STATS = "max"


def check_frame_stats(value: str) -> str:
    """``value`` if it names an aggregation over frames, else a one-line :class:`ConfigError`."""
    if value not in AGGREGATIONS:
        raise ConfigError(f"frame_stats must be one of {', '.join(AGGREGATIONS)}, got {value!r}")
    return value


class FrameStatsMode(nn.Module):
    """A module whose per-pixel aggregation over frames (``frame_stats``) is saved with its weights.

    The choice lives in ``self.frame_stats`` (a Python string, so export sees no data-dependent branch) and in
    the buffer ``frame_stats_code`` (its index in ``AGGREGATIONS``) that checkpoints carry. Loading a state dict
    sets the string from the buffer; a state dict without the buffer (written before the option existed) loads
    as ``"max"``, the aggregation those weights were trained with.
    """

    def __init__(self, frame_stats: str) -> None:
        super().__init__()
        self.frame_stats = check_frame_stats(frame_stats)
        self.register_buffer("frame_stats_code", torch.tensor(AGGREGATIONS.index(frame_stats)))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "frame_stats_code"
        if key not in state_dict:
            state_dict[key] = torch.tensor(AGGREGATIONS.index(LEGACY_FRAME_STATS))
        code = int(state_dict[key])
        if not 0 <= code < len(AGGREGATIONS):
            raise RuntimeError(f"{key} is {code}, not an aggregation over frames")
        self.frame_stats = AGGREGATIONS[code]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PixelStatistics(FrameStatsMode):
    """``features.pixel_statistics`` with the module's aggregation: signals [B, T, H, W] dB, tx_pos [B, T, 3] |
    None -> [B, NUM_PIXEL_STATISTICS, H, W]."""

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        return pixel_statistics(signals, tx_pos, aggregation=self.frame_stats)


def physics_frame_features(signals: Tensor, tx_pos: Tensor | None, slope: bool = True) -> tuple[Tensor, Tensor]:
    """signals [B, T, H, W] dB, tx_pos [B, T, 3] | None -> per-frame features [B, T, 5 (+1), H, W] (the
    ``features.frame_features`` and, with ``slope``, the radial slope) and frame presence [B, T] bool."""
    feats, present = frame_features(signals, tx_pos)
    if slope:
        feats = torch.cat([feats, radial_slope(feats, tx_pos)[:, :, None]], dim=2)
    return feats, present


def physics_pixel_dim(pool_dim: int) -> int:
    """Channels of :func:`physics_pixel_inputs`: the hand-made statistics and the pool's mean and (soft) maximum."""
    return NUM_PIXEL_STATISTICS + 2 * pool_dim


def physics_pixel_inputs(
    signals: Tensor, tx_pos: Tensor | None, feats: Tensor, pool: PixelFramePool | None, stats: PixelStatistics
) -> Tensor:
    """Per-pixel inputs [B, physics_pixel_dim, H, W]: the hand-made statistics ``stats`` computes and, if ``pool``
    is given, its learned statistics over the frames of ``feats`` [B, T, C, H, W] (from
    :func:`physics_frame_features`)."""
    stats = stats(signals, tx_pos)
    if pool is None:
        return stats
    return torch.cat([stats, pool(feats, feats[:, :, 1] > 0).to(stats.dtype)], dim=1)


class PixelFramePool(FrameStatsMode):
    """Learned per-pixel statistics over frames: a small MLP (1x1 convs) shared by every frame and pixel, then
    the mean and the maximum (``frame_stats="max"``) or the soft maximum (``"stable"``: log-mean-exp at
    temperature 1 in the MLP's own units, which it can scale) over the frames in which the pixel was measured.

    The hand-made statistics (``features.pixel_statistics``) summarise each feature over frames on its own; this
    pool first combines a frame's features at a pixel (its excess loss together with its distance to that
    frame's transmitter and the loss added along the ray), which no summary of single features can express.
    Frames are processed in chunks of ``chunk`` so memory stays bounded for long sequences.
    """

    def __init__(self, in_dim: int, dim: int, chunk: int = 64, frame_stats: str = LEGACY_FRAME_STATS) -> None:
        super().__init__(frame_stats)
        self.dim, self.chunk = dim, chunk
        self.mlp = nn.Sequential(nn.Conv2d(in_dim, 2 * dim, 1), nn.GELU(), nn.Conv2d(2 * dim, dim, 1))

    def forward(self, feats: Tensor, valid: Tensor) -> Tensor:
        """feats [B, T, C, H, W], valid [B, T, H, W] bool -> [B, 2 * dim, H, W] (zeros where never measured)."""
        B, T, _, H, W = feats.shape
        total = feats.new_zeros(B, self.dim, H, W)
        count = feats.new_zeros(B, 1, H, W)
        low = torch.finfo(feats.dtype).min
        peak = feats.new_full((B, self.dim, H, W), low)
        soft = SoftExtreme(peak, 1.0) if self.frame_stats == "stable" else None
        starts = [0] if torch.compiler.is_compiling() else range(0, T, self.chunk)
        chunk = T if torch.compiler.is_compiling() else self.chunk
        for start in starts:
            f = feats[:, start : start + chunk]
            m = valid[:, start : start + chunk, None].to(feats.dtype)  # [B, t, 1, H, W]
            h = self.mlp(f.flatten(0, 1)).unflatten(0, (B, -1))  # [B, t, dim, H, W]
            total = total + (h * m).sum(1)
            count = count + m.sum(1)
            if soft is not None:
                soft.add(h, (m > 0).expand_as(h))
            else:
                peak = torch.maximum(peak, torch.where(m > 0, h, low).amax(1))
        if soft is not None:
            peak = soft.value()
        seen = count > 0
        return torch.cat([total / count.clamp_min(1.0), torch.where(seen, peak, 0.0)], dim=1)
