"""Learned per-pixel statistics over frames (``PixelFramePool``) and the physics inputs built on them.

Shared by TomoFormer's full-resolution pyramid and by ``unet`` with ``physics_features=True`` (the ablation that
gives the U-Net the same inputs as TomoFormer's pyramid).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tomoformer.models.features import NUM_PIXEL_STATISTICS, frame_features, pixel_statistics, radial_slope

__all__ = ["PixelFramePool", "physics_frame_features", "physics_pixel_dim", "physics_pixel_inputs"]


def physics_frame_features(signals: Tensor, tx_pos: Tensor | None, slope: bool = True) -> tuple[Tensor, Tensor]:
    """signals [B, T, H, W] dB, tx_pos [B, T, 3] | None -> per-frame features [B, T, 5 (+1), H, W] (the
    ``features.frame_features`` and, with ``slope``, the radial slope) and frame presence [B, T] bool."""
    feats, present = frame_features(signals, tx_pos)
    if slope:
        feats = torch.cat([feats, radial_slope(feats, tx_pos)[:, :, None]], dim=2)
    return feats, present


def physics_pixel_dim(pool_dim: int) -> int:
    """Channels of :func:`physics_pixel_inputs`: the hand-made statistics and the pool's mean and maximum."""
    return NUM_PIXEL_STATISTICS + 2 * pool_dim


def physics_pixel_inputs(signals: Tensor, tx_pos: Tensor | None, feats: Tensor, pool: PixelFramePool | None) -> Tensor:
    """Per-pixel inputs [B, physics_pixel_dim, H, W]: ``features.pixel_statistics`` and, if ``pool`` is given,
    its learned statistics over the frames of ``feats`` [B, T, C, H, W] (from :func:`physics_frame_features`)."""
    stats = pixel_statistics(signals, tx_pos)
    if pool is None:
        return stats
    return torch.cat([stats, pool(feats, feats[:, :, 1] > 0).to(stats.dtype)], dim=1)


class PixelFramePool(nn.Module):
    """Learned per-pixel statistics over frames: a small MLP (1x1 convs) shared by every frame and pixel, then
    the mean and the maximum over the frames in which the pixel was measured.

    The hand-made statistics (``features.pixel_statistics``) summarise each feature over frames on its own; this
    pool first combines a frame's features at a pixel (its excess loss together with its distance to that
    frame's transmitter and the loss added along the ray), which no summary of single features can express.
    Frames are processed in chunks of ``chunk`` so memory stays bounded for long sequences.
    """

    def __init__(self, in_dim: int, dim: int, chunk: int = 64) -> None:
        super().__init__()
        self.dim, self.chunk = dim, chunk
        self.mlp = nn.Sequential(nn.Conv2d(in_dim, 2 * dim, 1), nn.GELU(), nn.Conv2d(2 * dim, dim, 1))

    def forward(self, feats: Tensor, valid: Tensor) -> Tensor:
        """feats [B, T, C, H, W], valid [B, T, H, W] bool -> [B, 2 * dim, H, W] (zeros where never measured)."""
        B, T, _, H, W = feats.shape
        total = feats.new_zeros(B, self.dim, H, W)
        count = feats.new_zeros(B, 1, H, W)
        low = torch.finfo(feats.dtype).min
        peak = feats.new_full((B, self.dim, H, W), low)
        starts = [0] if torch.compiler.is_compiling() else range(0, T, self.chunk)
        chunk = T if torch.compiler.is_compiling() else self.chunk
        for start in starts:
            f = feats[:, start : start + chunk]
            m = valid[:, start : start + chunk, None].to(feats.dtype)  # [B, t, 1, H, W]
            h = self.mlp(f.flatten(0, 1)).unflatten(0, (B, -1))  # [B, t, dim, H, W]
            total = total + (h * m).sum(1)
            count = count + m.sum(1)
            peak = torch.maximum(peak, torch.where(m > 0, h, low).amax(1))
        seen = count > 0
        return torch.cat([total / count.clamp_min(1.0), torch.where(seen, peak, 0.0)], dim=1)
