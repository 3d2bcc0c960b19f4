"""``seednet``: the per-frame CNN + Transformer design (TimeDistributed CNN -> Transformer encoder over frames ->
dense sigmoid map), at the widths of its reference specification.

The reference specification, for T=1000 frames of 100x100: Conv2D(32, 3x3) and Conv2D(64, 3x3) on every frame,
each frame flattened, a 6-layer Transformer encoder (``d_model=512``, 8 heads, feed-forward 2048, dropout 0.1)
over the T frames, and Dense(100*100, sigmoid). Taken literally it does not run:

* activations: the two conv outputs alone are 1000*100*100*32 and 1000*100*100*64 floats per sample,
  1.28 GB + 2.56 GB in float32 (training keeps them, and the ReLU outputs, for the backward pass);
* the flattened frame has 100*100*64 = 640,000 features: an input projection to ``d_model=512`` holds 327.7 M
  weights (1.31 GB); without one, the encoder runs at width 640,000 (10.5 G weights per attention layer) and its
  residual add of the 512-wide feed-forward output does not type-check;
* Dense(10,000) applied to every frame's encoder output gives T maps, not one; applied to the flattened
  T x 512 sequence it holds 5.12 G weights and fixes T to 1000.

What runs here keeps every width of the specification and changes only what must change:

* per-frame CNN: Conv(32, 3x3) and Conv(64, 3x3) at full resolution as specified, then a 1x1 Conv(``cnn_out``)
  and adaptive average pooling to a ``pool_size`` x ``pool_size`` grid (instead of flattening all 640,000
  features), flattened and projected to ``d_model`` (16*16*32 -> 512: 4.2 M weights); frames go through the
  CNN in chunks of ``frame_chunk``, so T=1000 at inference needs the activations of ``frame_chunk`` frames only
  (training keeps them all: about 0.65 GB per sample at T=64, 100x100, float32);
* Transformer encoder over the T frame tokens: 6 layers, width 512, 8 heads, feed-forward 2048, dropout 0.1, as
  specified; pre-norm instead of post-norm (the usual choice for deep encoders; not compared here); missing
  frames are masked; no frame position (the frames are an unordered set of transmitters);
* frame pooling (so that any T works): the masked mean of the encoder's outputs over the present frames, one
  512-number vector per sample;
* dense head as specified: one linear layer from that vector to every cell of the ``img_size`` x ``img_size`` map
  (512 -> 10,000: 5.1 M weights), sigmoid in the loss. The head fixes the map size: for another H x W the map is
  resampled bilinearly to H x W (``other_size="resample"``, the default) or refused with one line
  (``other_size="refuse"``). Train with ``img_size`` set to the data's size (``--model-opt img_size=48``).

``tokens="patch"`` is the per-patch variant of the same design: each frame's CNN features are cut into
``patch_size`` x ``patch_size`` patches, each patch of each frame is a token, the same Transformer runs over the T
frames of every patch, and the dense head predicts the patch's cells from its pooled token. It has no fixed map
size and no global bottleneck (the whole-map head must squeeze every map through one 512-number vector), but
no context beyond a patch and its CNN border either; it costs H*W/patch_size^2 times the Transformer compute.

``seednet`` has about 28 M parameters at 100x100; ``seednet_small`` (width 128, 2 layers) is the CPU preset.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tomoformer.errors import ConfigError, DataError
from tomoformer.models.adapt import linear_and_conv_targets
from tomoformer.models.features import NUM_FRAME_FEATURES, frame_features, pad_to_multiple
from tomoformer.models.registry import register_model

__all__ = ["SeedNet", "seednet", "seednet_small"]


class SeedNet(nn.Module):
    """Signals [B, T, H, W] dB (+ tx_pos [B, T, 3] | None) -> building logits [B, H, W].

    Args:
        img_size: side of the map the dense head predicts (cells); other sizes see ``other_size``.
        d_model, num_heads, num_layers, dim_feedforward, dropout: the Transformer encoder over frames.
        cnn_out: channels of the per-frame CNN's last (1x1) conv.
        pool_size: each frame's CNN features are pooled to pool_size x pool_size before the projection.
        frame_chunk: frames pushed through the CNN at once (bounds peak memory for T=1000).
        other_size: "resample" (bilinear, the map to H x W) or "refuse" (DataError) when H x W != img_size.
        tokens: "frame" (one token per frame, dense head over the whole map: the specification) or "patch" (one token
            per frame and patch, dense head per patch; any H x W, ``img_size`` and ``pool_size`` unused).
        patch_size: cells per patch side with ``tokens="patch"``.
    """

    requires_fit = False

    def __init__(
        self,
        img_size: int = 100,
        d_model: int = 512,
        num_heads: int = 8,
        num_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        cnn_out: int = 32,
        pool_size: int = 16,
        frame_chunk: int = 256,
        other_size: str = "resample",
        tokens: str = "frame",
        patch_size: int = 4,
    ) -> None:
        super().__init__()
        if tokens not in ("frame", "patch") or patch_size < 1:
            raise ConfigError(f"seednet: tokens must be 'frame' or 'patch' and patch_size >= 1, got {tokens!r}")
        if other_size not in ("resample", "refuse"):
            raise ConfigError(f"seednet: other_size must be 'resample' or 'refuse', got {other_size!r}")
        if img_size < 1 or d_model % num_heads:
            raise ConfigError(
                f"seednet: need img_size >= 1 and d_model divisible by num_heads ({d_model}, {num_heads})"
            )
        self.img_size, self.frame_chunk, self.other_size = img_size, frame_chunk, other_size
        self.tokens, self.patch_size = tokens, patch_size
        if tokens == "frame":
            to_tokens = [nn.AdaptiveAvgPool2d(pool_size), nn.Flatten(), nn.Linear(cnn_out * pool_size**2, d_model)]
        else:
            to_tokens = [_Patchify(patch_size), nn.Linear(cnn_out * patch_size**2, d_model)]
        self.cnn = nn.Sequential(
            nn.Conv2d(NUM_FRAME_FEATURES, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, cnn_out, 1),
            nn.ReLU(),
            *to_tokens,
        )
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, img_size * img_size if tokens == "frame" else patch_size**2)

    def get_classifier(self) -> nn.Module:
        return self.head

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm-style layer groups: the per-frame CNN, then the Transformer encoder layers (norm and head last)."""
        return {"stem": r"^cnn", "blocks": r"^encoder\.layers\.(\d+)"}

    def lora_targets(self) -> list[str]:
        """Every conv and linear layer except the head and the attention output projections (see
        :func:`~tomoformer.models.adapt.linear_and_conv_targets`)."""
        return linear_and_conv_targets(self)

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB (NaN = missing), tx_pos [B, T, 3] cells | None -> logits [B, H, W]."""
        B, T, H, W = signals.shape
        if self.tokens == "patch":
            return self._forward_patches(signals, tx_pos)
        same_size = (self.img_size, self.img_size) == (H, W)
        if not same_size and self.other_size == "refuse":
            raise DataError(
                f"seednet: its dense head predicts {self.img_size}x{self.img_size} maps, the data is {H}x{W} "
                f"(train with --model-opt img_size=..., or other_size=resample)"
            )
        tokens, present = self._frame_tokens(signals, tx_pos)
        logits = self.head(self._pool(tokens.reshape(B, T, -1), present)).float()
        logits = logits.reshape(B, 1, self.img_size, self.img_size)
        if not same_size:
            logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        return logits[:, 0]

    def _frame_tokens(self, signals: Tensor, tx_pos: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> the CNN's tokens [B*T, ...] of every frame and frame presence [B, T] (a sample without any
        measured frame keeps all its zero frames, so that attention never sees only masked keys)."""
        feats, present = frame_features(signals, tx_pos)
        frames = feats.flatten(0, 1).to(self.head.weight.dtype)
        tokens = torch.cat([self.cnn(c) for c in frames.split(self.frame_chunk)])
        return tokens, present | ~present.any(dim=1, keepdim=True)

    def _pool(self, tokens: Tensor, present: Tensor) -> Tensor:
        """tokens [M, T, D], present [M, T] -> the masked mean over frames of the encoder's output [M, D]."""
        x = self.norm(self.encoder(tokens, src_key_padding_mask=~present))
        weights = present.to(x.dtype)[..., None]
        return (x * weights).sum(1) / weights.sum(1)

    def _forward_patches(self, signals: Tensor, tx_pos: Tensor | None) -> Tensor:
        B, T, H, W = signals.shape
        p = self.patch_size
        gh, gw = -(-H // p), -(-W // p)
        tokens, present = self._frame_tokens(signals, tx_pos)  # [B*T, N, D]
        tokens = tokens.reshape(B, T, gh * gw, -1).transpose(1, 2).flatten(0, 1)  # [B*N, T, D]
        present = present[:, None, :].expand(B, gh * gw, T).flatten(0, 1)
        cells = self.head(self._pool(tokens, present)).float()  # [B*N, p*p]
        logits = F.pixel_shuffle(cells.reshape(B, gh, gw, p * p).permute(0, 3, 1, 2), p)
        return logits[:, 0, :H, :W]


class _Patchify(nn.Module):
    """[M, C, H, W] -> [M, N, C * p * p]: the cells of every p x p patch (zero-padded at the bottom/right)."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x: Tensor) -> Tensor:
        x = F.pixel_unshuffle(pad_to_multiple(x, self.patch_size), self.patch_size)
        return x.flatten(2).transpose(1, 2)


@register_model
def seednet(**kwargs: Any) -> SeedNet:
    """The per-frame CNN + Transformer design at its specified widths: per-frame CNN, 6 x 512 Transformer over frames,
    dense head."""
    return SeedNet(**kwargs)


@register_model
def seednet_small(**kwargs: Any) -> SeedNet:
    """The same design narrowed for CPU benchmarks: width 128, 2 layers, 4 heads, feed-forward 512."""
    defaults = dict(d_model=128, num_heads=4, num_layers=2, dim_feedforward=512, dropout=0.0)
    return SeedNet(**{**defaults, **kwargs})
