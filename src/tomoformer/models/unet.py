"""A RadioUNet-like baseline: a small U-Net over per-pixel statistics of the T frames.

The T frames are summarised per pixel first (``features.pixel_statistics``: masked mean/max/min/std of the
normalised dB and of the excess loss over free space, and how often the pixel was measured), so the net is
independent of T and costs the same for T=4 and T=1000.

``physics_features=True`` is the ablation that feeds it what TomoFormer's full-resolution pyramid gets: the same
statistics plus the learned per-pixel pooling over frames (``PixelFramePool``) of every frame's features and its
radial slope (``features.radial_slope``).

``frame_stats`` chooses the per-pixel aggregation over frames: ``"stable"`` (default; means and soft extremes,
which converge as frames are added) or ``"max"`` (the original maxima and minima; checkpoints written before the
option load with it, ``pixel_pool.FrameStatsMode``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tomoformer.models.adapt import linear_and_conv_targets
from tomoformer.models.features import NUM_FRAME_FEATURES, NUM_PIXEL_STATISTICS, pad_to_multiple
from tomoformer.models.pixel_pool import (
    PixelFramePool,
    PixelStatistics,
    physics_frame_features,
    physics_pixel_dim,
    physics_pixel_inputs,
)
from tomoformer.models.registry import register_model

__all__ = ["UNet", "unet"]


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: batches are small and statistics must not depend on batch composition.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.GroupNorm(min(8, out_ch), out_ch),
        nn.GELU(),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.GroupNorm(min(8, out_ch), out_ch),
        nn.GELU(),
    )


class UNet(nn.Module):
    """Signals [B, T, H, W] dB (+ tx_pos [B, T, 3] | None) -> building logits [B, H, W].

    Args:
        base_channels: channels of the first level; level i has base_channels * 2**i.
        depth: number of 2x downsamplings (H, W are padded to a multiple of 2**depth and cropped back).
        physics_features: also feed the learned per-pixel frame pooling over the frame features and their radial
            slope (TomoFormer's pyramid inputs); ``pixel_pool_dim`` is its width, as in TomoFormer.
        frame_stats: per-pixel aggregation over frames, "stable" or "max" (see the module docstring).
    """

    requires_fit = False

    def __init__(
        self,
        base_channels: int = 24,
        depth: int = 3,
        physics_features: bool = False,
        pixel_pool_dim: int = 8,
        frame_stats: str = "stable",
    ) -> None:
        super().__init__()
        self.depth = depth
        self.pixel_stats = PixelStatistics(frame_stats)
        chans = [base_channels * 2**i for i in range(depth + 1)]
        # Frame features + the radial slope, pooled per pixel: exactly what TomoFormer's pyramid sees.
        pool_in = NUM_FRAME_FEATURES + 1
        self.pixel_pool = PixelFramePool(pool_in, pixel_pool_dim, frame_stats=frame_stats) if physics_features else None
        in_ch = physics_pixel_dim(pixel_pool_dim) if physics_features else NUM_PIXEL_STATISTICS
        self.stem = _conv_block(in_ch, chans[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _conv_block(chans[i], chans[i + 1])) for i in range(depth)
        )
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_conv_block(2 * chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], 1, 1)

    def get_classifier(self) -> nn.Module:
        return self.head

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style layer groups: the stem, then the encoder stages ``down.i`` (decoder and head come last)."""
        return {"stem": r"^stem", "blocks": r"^down\.(\d+)"}

    def lora_targets(self) -> list[str]:
        """Every conv and linear layer except the head."""
        return linear_and_conv_targets(self)

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB (NaN = missing), tx_pos [B, T, 3] cells | None -> logits [B, H, W]."""
        H, W = signals.shape[-2:]
        if self.pixel_pool is None:
            x = self.pixel_stats(signals, tx_pos)
        else:
            feats = physics_frame_features(signals, tx_pos)[0]
            x = physics_pixel_inputs(signals, tx_pos, feats, self.pixel_pool, self.pixel_stats)
        x = pad_to_multiple(x, 2**self.depth)
        x = self.stem(x.to(self.head.weight.dtype))
        skips = [x]
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)[:, 0, :H, :W].float()


@register_model
def unet(**kwargs: Any) -> UNet:
    """U-Net over per-pixel statistics; defaults give ~1.1 M parameters."""
    return UNet(**kwargs)
