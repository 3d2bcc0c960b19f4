"""``seednet``: the user's first design (TimeDistributed CNN -> Transformer encoder over frames -> dense map),
made runnable.

The sketch, for T=1000 frames of 100x100, ``d_model=512``, 8 heads, 6 layers, applies
Conv2D(32, 3x3) and Conv2D(64, 3x3) to every frame, flattens each frame to 100*100*64 = 640,000 features,
runs a Transformer encoder over the T frame vectors and ends in Dense(100*100, sigmoid). Taken literally:

* activations: the two conv outputs alone are 1000*100*100*32 and 1000*100*100*64 floats per sample,
  1.28 GB + 2.56 GB in float32 (training keeps them, and the ReLU outputs, for the backward pass);
* an input projection 640,000 -> d_model=512 has 327.7 M weights (1.31 GB) and costs 0.66 TFLOP per sample;
* without that projection the encoder runs at width 640,000: one attention layer's Q, K, V and output
  projections (8 heads x 512) hold 4 * 640,000 * 4,096 = 10.5 G weights (62.9 G for 6 layers), and the
  residual add of the 512-wide feed-forward output to the 640,000-wide input does not type-check;
* Dense(10,000) per frame on 640,000 features is 6.4 G weights and gives T maps, not one; on the flattened
  T x d_model sequence it is 1000 * 512 * 10,000 = 5.12 G weights (20.5 GB) and fixes T to 1000.

What runs here keeps the user's structure but makes each frame a compact token: the shared per-frame CNN
(3x3 convs with 32 and 64 channels, the second strided) is followed by a strided conv and adaptive pooling
to a fixed 8x8 grid, flattened and projected to ``d_model``; a Transformer encoder mixes the T frame tokens
(missing frames masked), a masked mean pools them, and a dense head predicts a coarse 25x25 map that is
upsampled bilinearly to H x W. Any T, any H, W; ~1 M parameters.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tomoformer.models.features import NUM_FRAME_FEATURES, frame_features
from tomoformer.models.registry import register_model

__all__ = ["SeedNet", "seednet"]


class SeedNet(nn.Module):
    """Signals [B, T, H, W] dB (+ tx_pos [B, T, 3] | None) -> building logits [B, H, W].

    Args:
        d_model: width of the frame tokens and the Transformer.
        num_heads, num_layers, dim_feedforward, dropout: the Transformer encoder.
        pool_size: each frame's CNN features are pooled to pool_size x pool_size before the projection.
        out_size: side of the coarse output map predicted by the dense head.
        frame_chunk: frames pushed through the CNN at once (bounds peak memory for T=1000 at inference).
    """

    requires_fit = False

    def __init__(
        self,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 256,
        dropout: float = 0.0,
        pool_size: int = 8,
        out_size: int = 25,
        frame_chunk: int = 256,
    ) -> None:
        super().__init__()
        self.out_size = out_size
        self.frame_chunk = frame_chunk
        self.cnn = nn.Sequential(
            nn.Conv2d(NUM_FRAME_FEATURES, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(pool_size),
            nn.Flatten(),
            nn.Linear(64 * pool_size**2, d_model),
        )
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_size * out_size)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB (NaN = missing), tx_pos [B, T, 3] cells | None -> logits [B, H, W]."""
        B, T, H, W = signals.shape
        feats, present = frame_features(signals, tx_pos)
        frames = feats.flatten(0, 1).to(self.head.weight.dtype)
        tokens = torch.cat([self.cnn(c) for c in frames.split(self.frame_chunk)]).reshape(B, T, -1)
        # A sample without any measured frame keeps all its (zero) frames: attention must not see only -inf.
        present = present | ~present.any(dim=1, keepdim=True)
        x = self.norm(self.encoder(tokens, src_key_padding_mask=~present))
        weights = present.to(x.dtype)[..., None]
        pooled = (x * weights).sum(1) / weights.sum(1)
        coarse = self.head(pooled).reshape(B, 1, self.out_size, self.out_size)
        return F.interpolate(coarse.float(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]


@register_model
def seednet(**kwargs: Any) -> SeedNet:
    """The user's TimeDistributed-CNN + Transformer-encoder design with compact frame tokens."""
    return SeedNet(**kwargs)
