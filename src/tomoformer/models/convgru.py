"""ConvGRU: a convolutional GRU that reads the T frames one after another (a recurrent model of the frames).

Each frame is turned into the shared per-frame features (``features.frame_features``: dB relative to the frame
median in 20 dB units, validity, log distance and excess loss over free space), encoded by a small CNN at
1/2**levels resolution, and folded into a hidden state by a ConvGRU cell. Missing frames and unmeasured cells do
not update the hidden state (the update is masked), so padding a sequence with all-NaN frames changes nothing.
The final hidden state is upsampled and decoded together with the per-pixel statistics over all frames (which
carry "never received" and the best excess per pixel at full resolution).

Frame order matters (it is a recurrent model), so it suits ordered sequences such as a transmitter driving
along a street; any T >= 1 works, at a cost linear in T. The recurrence is not a mean over frames (its state
depends on order and count); the per-pixel statistics beside it are, with ``frame_stats="stable"`` (the
default; ``"max"``, the original maxima and minima, for checkpoints written before the option).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tomoformer.errors import ConfigError
from tomoformer.models.adapt import linear_and_conv_targets
from tomoformer.models.features import NUM_FRAME_FEATURES, NUM_PIXEL_STATISTICS, frame_features
from tomoformer.models.pixel_pool import PixelStatistics
from tomoformer.models.registry import register_model
from tomoformer.models.tracing import is_exporting

__all__ = ["ConvGRU", "ConvGRUCell", "convgru"]


def _conv_block(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: statistics must not depend on batch composition (as in unet.py). At least two
    # channels per group, so that a 1x1 map still has more than one value per group.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(max(1, min(8, out_ch // 2)), out_ch),
        nn.GELU(),
    )


class ConvGRUCell(nn.Module):
    """One GRU step with 3x3 convolutions: x [B, Cin, h, w], h [B, C, h, w] -> new h [B, C, h, w]."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.gates = nn.Conv2d(in_channels + hidden_channels, 2 * hidden_channels, kernel_size, padding=pad)
        self.candidate = nn.Conv2d(in_channels + hidden_channels, hidden_channels, kernel_size, padding=pad)
        # Bias the update gate towards "keep" so early training does not overwrite the state every frame.
        nn.init.constant_(self.gates.bias[hidden_channels:], -1.0)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        reset, update = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * h], dim=1)))
        return (1 - update) * h + update * candidate


class ConvGRU(nn.Module):
    """Signals [B, T, H, W] dB (+ tx_pos [B, T, 3] | None) -> building logits [B, H, W].

    Args:
        hidden_channels: channels of the recurrent state.
        levels: stride-2 downsamplings before the recurrence (the state lives at H/2**levels); more levels give
            a larger receptive field per step and a cheaper recurrence.
        decoder_channels: channels of the full-resolution decoder.
        frame_stats: aggregation of the per-pixel statistics over frames, "stable" or "max".
    """

    requires_fit = False

    def __init__(
        self, hidden_channels: int = 32, levels: int = 1, decoder_channels: int = 24, frame_stats: str = "stable"
    ) -> None:
        super().__init__()
        self.pixel_stats = PixelStatistics(frame_stats)
        if levels < 0 or hidden_channels < 1 or decoder_channels < 1:
            raise ConfigError("convgru: levels >= 0, hidden_channels >= 1 and decoder_channels >= 1")
        self.levels = levels
        self.hidden_channels = hidden_channels
        enc: list[nn.Module] = [_conv_block(NUM_FRAME_FEATURES, hidden_channels)]
        enc += [_conv_block(hidden_channels, hidden_channels, stride=2) for _ in range(levels)]
        self.encoder = nn.Sequential(*enc)
        self.cell = ConvGRUCell(hidden_channels, hidden_channels)
        self.stats_stem = _conv_block(NUM_PIXEL_STATISTICS, decoder_channels)
        self.decoder = nn.Sequential(
            _conv_block(hidden_channels + decoder_channels, decoder_channels),
            _conv_block(decoder_channels, decoder_channels),
        )
        self.head = nn.Conv2d(decoder_channels, 1, 1)

    def get_classifier(self) -> nn.Module:
        return self.head

    def lora_targets(self) -> list[str]:
        """Every conv layer except the head."""
        return linear_and_conv_targets(self)

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB (NaN = missing), tx_pos [B, T, 3] cells | None -> logits [B, H, W]."""
        T, H, W = signals.shape[1:]
        multiple = 2**self.levels
        pad = (0, (-W) % multiple, 0, (-H) % multiple)
        if T < 1:
            raise ConfigError("convgru needs at least one frame")
        if is_exporting():
            # torch.export unrolls a Python loop for the traced T only; a scan keeps T dynamic (ONNX Scan).
            h = self._scan_frames(signals, tx_pos, pad)
        else:
            h = None
            for t in range(T):
                # One frame at a time: memory for the features of a single frame, whatever T is.
                tx = None if tx_pos is None else tx_pos[:, t : t + 1]
                h = self._step(h, signals[:, t : t + 1], tx, pad)
        assert h is not None
        stats = F.pad(self.pixel_stats(signals, tx_pos), pad).to(self.head.weight.dtype)
        up = F.interpolate(h, size=stats.shape[-2:], mode="bilinear", align_corners=False) if self.levels else h
        x = self.decoder(torch.cat([up, self.stats_stem(stats)], dim=1))
        return self.head(x)[:, 0, :H, :W].float()

    def _step(self, h: Tensor | None, frame: Tensor, tx: Tensor | None, pad: tuple[int, ...]) -> Tensor:
        """Fold one frame [B, 1, H, W] dB (tx [B, 1, 3] | None) into the state h [B, C, h, w] (None: zeros)."""
        feats, present = frame_features(frame, tx)
        x = self.encoder(F.pad(feats[:, 0], pad).to(self.head.weight.dtype))  # [B, C, h, w]
        # A cell of the coarse grid updates if any of its full-resolution cells was measured in this frame.
        valid = F.pad(feats[:, 0, 1:2], pad)
        mask = F.adaptive_max_pool2d(valid, x.shape[-2:]) if self.levels else valid
        mask = mask * present[:, 0, None, None, None].to(mask.dtype)
        if h is None:
            h = torch.zeros_like(x)
        return torch.where(mask > 0, self.cell(x, h), h)

    def _scan_frames(self, signals: Tensor, tx_pos: Tensor | None, pad: tuple[int, ...]) -> Tensor:
        """The final state after all frames, as one ``scan`` over T (same numbers as the loop)."""
        from torch._higher_order_ops.scan import scan

        B, T, H, W = signals.shape
        multiple = 2**self.levels
        coarse = ((H + pad[3]) // multiple, (W + pad[1]) // multiple)  # stride-2 convs halve the padded map
        h0 = signals.new_zeros(B, self.hidden_channels, *coarse, dtype=self.head.weight.dtype)
        frames = signals.transpose(0, 1)[:, :, None]  # [T, B, 1, H, W]
        if tx_pos is None:
            tx_pos = signals.new_full((B, T, 3), float("nan"))  # all unknown: the models treat it as None
        positions = tx_pos.transpose(0, 1)[:, :, None]  # [T, B, 1, 3]

        def body(h: Tensor, xs: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            new = self._step(h, xs[0], xs[1], pad)
            return new, new.new_zeros(())

        return scan(body, h0, (frames, positions))[0]


@register_model
def convgru(**kwargs: Any) -> ConvGRU:
    """Convolutional GRU over the frames; defaults give ~60 k parameters."""
    return ConvGRU(**kwargs)
