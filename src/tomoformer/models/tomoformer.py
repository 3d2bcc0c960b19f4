"""TomoFormer: a Vision Transformer that maps T radio maps of an area to its building map.

Layout (like timm's ``vision_transformer.py``):

1. per-frame features (``features.frame_features`` and the loss each cell adds along the transmitter's ray,
   ``features.radial_slope``) -> patch embedding shared by all frames + token MLP;
2. frame aggregation: per patch, a few learned queries cross-attend over the T frame tokens (Perceiver-style,
   masked for missing frames), so the cost is linear in T and any T works at inference;
3. spatial encoder: timm ``Block``s over the patch tokens with a 2D position embedding resampled to the grid;
4. decoder: ``"conv"`` (pixel-shuffle upsampling) or ``"transformer"`` (one learned query per output patch
   cross-attending to the encoder tokens), both refined at full resolution by a conv pyramid over per-pixel
   statistics over T (hand-made ones, and learned ones: ``PixelFramePool``) so that building edges are sharp.

Every aggregation over frames is a weighted mean: the attention pooling (softmax weights over the frames) and,
with ``frame_stats="stable"`` (the default), the per-pixel statistics (means and soft extremes); so adding frames
refines the map instead of moving its inputs out of the range seen in training, and duplicating every frame
changes nothing. ``frame_stats="max"`` is the original design (per-pixel maxima and minima), kept for the
checkpoints trained with it (they load with it: ``pixel_pool.FrameStatsMode``).

Output: logits [B, H, W] for "building".
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale, Mlp, resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Attention, Block
from torch import Tensor, nn

from tomoformer.errors import ConfigError
from tomoformer.models.adapt import linear_and_conv_targets
from tomoformer.models.features import NUM_FRAME_FEATURES, pad_to_multiple
from tomoformer.models.pixel_pool import (
    PixelFramePool,
    PixelStatistics,
    check_frame_stats,
    physics_frame_features,
    physics_pixel_dim,
)
from tomoformer.models.registry import register_model

__all__ = [
    "PixelFramePool",
    "TomoFormer",
    "TomoFormerConfig",
    "config_dict",
    "tomoformer_base",
    "tomoformer_pyramid",
    "tomoformer_small",
    "tomoformer_tiny",
]

# Linear projections of the ViT blocks (attention and MLP) and of the frame pooling (FramePool).
_LORA_TARGETS = re.compile(r"(^|\.)blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])$|^agg\.(q|kv|proj|merge|mlp\.fc[12])$")


@dataclass
class TomoFormerConfig:
    """Hyper-parameters of a TomoFormer; presets override a few of them."""

    img_size: int = 100  # grid the position embedding is stored for; other sizes are resampled
    patch_size: int = 5
    embed_dim: int = 96
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_queries: int = 2  # learned queries that pool the T frames of each patch
    time_embed: bool = False  # sinusoidal frame-index embedding, for ordered sequences
    decoder: str = "conv"  # "conv" | "transformer"
    decoder_dim: int = 32  # channels per pixel after upsampling
    decoder_embed_dim: int = 96  # transformer decoder width
    decoder_depth: int = 2
    decoder_heads: int = 3
    skip_dim: int = 24  # channels of the full-resolution level of the per-pixel-statistics pyramid
    pyramid_levels: int = 3  # halvings in that pyramid
    frame_mlp_ratio: float = 2.0  # per-frame token MLP; it runs on T x tokens, so it is kept narrow
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    num_classes: int = 1
    radial_slope: bool = True  # add the excess loss's slope along each ray (features.radial_slope) per frame
    pixel_pool_dim: int = 8  # >0: learned per-pixel statistics over frames (PixelFramePool) join the pyramid
    aux_weight: float = 0.0  # deep supervision: weight of a loss on the Transformer decoder's own map
    transformer: bool = True  # False: the ablation without frame tokens, ViT and decoder (the pyramid alone)
    frame_stats: str = "stable"  # per-pixel statistics over frames: "stable" (converge in T) | "max" (original)

    def __post_init__(self) -> None:
        check_frame_stats(self.frame_stats)
        if not self.transformer and self.aux_weight > 0:
            raise ConfigError("aux_weight needs the Transformer (transformer=true)")
        if self.decoder not in ("conv", "transformer"):
            raise ConfigError(f"decoder must be 'conv' or 'transformer', got {self.decoder!r}")
        if not 1 <= self.patch_size <= 32:
            raise ConfigError(f"patch_size must be in 1..32, got {self.patch_size}")
        for dim, heads in ((self.embed_dim, self.num_heads), (self.decoder_embed_dim, self.decoder_heads)):
            if dim % heads:
                raise ConfigError(f"width {dim} is not divisible by {heads} heads")


def sinusoidal_embedding(positions: Tensor, dim: int) -> Tensor:
    """positions [T] -> [T, dim] sin/cos features (no length limit, unlike a learned table)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / max(half, 1))
    angles = positions.float()[:, None] * freq[None]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(emb, (0, dim - emb.shape[-1]))


class FramePool(nn.Module):
    """Attention pooling over frames: tokens [M, T, D], mask [M, T] -> [M, D], ``num_queries`` queries."""

    def __init__(self, dim: int, num_heads: int, num_queries: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.merge = nn.Linear(num_queries * dim, dim)
        trunc_normal_(self.query, std=0.02)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        M, T, D = x.shape
        h = self.num_heads
        q = self.q(self.query).reshape(1, -1, h, D // h).transpose(1, 2).expand(M, -1, -1, -1)
        k, v = self.kv(self.norm_kv(x)).reshape(M, T, 2, h, D // h).permute(2, 0, 3, 1, 4)
        # The caller guarantees each row has at least one True entry, so softmax never sees only -inf.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        out = self.query + self.proj(out.transpose(1, 2).reshape(M, -1, D))
        out = out + self.mlp(self.norm_mlp(out))
        return self.merge(out.flatten(1))


class CrossBlock(nn.Module):
    """Decoder block: self-attention, cross-attention to ``memory``, MLP (pre-norm, timm style)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, init_values=None
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.norm_mem = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls3 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def cross_attn(self, x: Tensor, memory: Tensor) -> Tensor:
        B, N, D = x.shape
        h = self.num_heads
        q = self.q(x).reshape(B, N, h, D // h).transpose(1, 2)
        k, v = self.kv(self.norm_mem(memory)).reshape(B, -1, 2, h, D // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path(self.ls2(self.cross_attn(self.norm2(x), memory)))
        return x + self.drop_path(self.ls3(self.mlp(self.norm3(x))))


class ConvDecoder(nn.Module):
    """Encoder tokens [B, N, D] on a (gh, gw) grid -> features [B, C, gh*p, gw*p] by conv + pixel shuffle."""

    def __init__(self, embed_dim: int, out_dim: int, patch_size: int) -> None:
        super().__init__()
        self.neck = nn.Sequential(nn.Conv2d(embed_dim, embed_dim, 3, padding=1), nn.GELU())
        self.expand = nn.Conv2d(embed_dim, out_dim * patch_size**2, 1)
        self.shuffle = nn.PixelShuffle(patch_size)

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        return self.shuffle(self.expand(self.neck(x)))


class TransformerDecoder(nn.Module):
    """One learned query per output patch cross-attends to encoder tokens; a per-patch linear makes pixels."""

    def __init__(self, cfg: TomoFormerConfig, base_grid: int) -> None:
        super().__init__()
        dim = cfg.decoder_embed_dim
        self.base_grid = base_grid
        self.query_embed = nn.Parameter(torch.zeros(1, base_grid * base_grid, dim))
        self.memory_proj = nn.Linear(cfg.embed_dim, dim)
        self.blocks = nn.ModuleList(CrossBlock(dim, cfg.decoder_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(dim)
        self.pixels = nn.Linear(dim, cfg.decoder_dim * cfg.patch_size**2)
        self.shuffle = nn.PixelShuffle(cfg.patch_size)
        trunc_normal_(self.query_embed, std=0.02)

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        B = tokens.shape[0]
        queries = resample_abs_pos_embed(
            self.query_embed, list(grid), [self.base_grid] * 2, num_prefix_tokens=0
        ).expand(B, -1, -1)
        memory = self.memory_proj(tokens)
        x = queries
        for block in self.blocks:
            x = block(x, memory)
        x = self.pixels(self.norm(x)).transpose(1, 2).reshape(B, -1, *grid)
        return self.shuffle(x)


def _conv_block(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: batches are small and statistics must not depend on batch composition.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, out_ch), out_ch),
        nn.GELU(),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.GroupNorm(min(8, out_ch), out_ch),
        nn.GELU(),
    )


def _fit(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Crop or zero-pad the last two axes of ``x`` to ``size`` (the patch grid and the pyramid pad differently)."""
    x = x[..., : size[0], : size[1]]
    return F.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]))


class PixelPyramid(nn.Module):
    """The full-resolution path: a conv pyramid over the per-pixel statistics (``levels`` halvings), decoded
    coarse to fine, with the Transformer's tokens added at every level of the decoding and the Transformer
    decoder's output joined at full size.

    The Transformer sees the whole area and every frame, but at patch resolution; the pyramid sees each pixel's
    statistics over T, but locally. Together they give global context and sharp edges (as in TransUNet). The
    tokens join every level, not only the coarsest, because the patch grid (e.g. 20x20 for 100x100 cells and
    patch 5) is finer than the bottom of the pyramid (13x13).
    """

    def __init__(self, stats_dim: int, width: int, token_dim: int, decoder_dim: int, levels: int = 3) -> None:
        # token_dim = decoder_dim = 0: no Transformer (the pyramid-only ablation), nothing is injected.
        super().__init__()
        self.multiple = 2**levels
        widths = [width * 2**i for i in range(levels + 1)]
        self.enc = nn.ModuleList(
            _conv_block(stats_dim if i == 0 else widths[i - 1], widths[i], stride=1 if i == 0 else 2)
            for i in range(levels + 1)
        )
        # inject[j] feeds the tokens into the input of decoding step j (coarsest first); the last one into dec.
        self.inject = nn.ModuleList(
            nn.Conv2d(token_dim, widths[i + 1], 1) for i in reversed(range(levels)) if token_dim > 0
        )
        self.dec = nn.ModuleList(
            _conv_block(widths[i + 1] + widths[i] + (decoder_dim if i == 0 else 0), widths[i])
            for i in reversed(range(levels))
        )

    def forward(self, stats: Tensor, tokens: Tensor | None, decoded: Tensor | None) -> Tensor:
        """stats [B, S, H, W] (H, W multiples of ``multiple``), tokens [B, D, gh, gw], decoded [B, C, H, W]
        (both None without a Transformer) -> features [B, width, H, W]."""
        skips = []
        x = stats
        for stage in self.enc:
            x = stage(x)
            skips.append(x)
        last = len(self.dec) - 1
        for i, (stage, skip) in enumerate(zip(self.dec, reversed(skips[:-1]), strict=True)):
            if tokens is not None:
                tokens_i = F.interpolate(tokens.to(x.dtype), size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = x + self.inject[i](tokens_i)
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            # By position, not `stage is self.dec[-1]`: torch.export can hand out other module objects.
            parts = [x, skip] if i != last or decoded is None else [x, skip, decoded.to(x.dtype)]
            x = stage(torch.cat(parts, dim=1))
        return x


class TomoFormer(nn.Module):
    """Signals [B, T, H, W] dB (+ optional tx_pos [B, T, 3] cells) -> building logits [B, H, W]."""

    requires_fit = False

    def __init__(self, cfg: TomoFormerConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        cfg = cfg or TomoFormerConfig(**kwargs)
        self.cfg = cfg
        p, D = cfg.patch_size, cfg.embed_dim
        self.patch_size = p
        self.embed_dim = self.num_features = D
        self.grid = math.ceil(cfg.img_size / p)
        if cfg.transformer:
            self._build_transformer(cfg)
        else:
            self.decoder = None
        frame_dim = NUM_FRAME_FEATURES + int(cfg.radial_slope)
        self.pixel_stats = PixelStatistics(cfg.frame_stats)
        pool_dim, stats_mode = cfg.pixel_pool_dim, cfg.frame_stats
        self.pixel_pool = PixelFramePool(frame_dim, pool_dim, frame_stats=stats_mode) if pool_dim > 0 else None
        token_dim, decoder_dim = (D, cfg.decoder_dim) if cfg.transformer else (0, 0)
        self.pyramid = PixelPyramid(
            physics_pixel_dim(cfg.pixel_pool_dim), cfg.skip_dim, token_dim, decoder_dim, cfg.pyramid_levels
        )
        self.head = nn.Conv2d(cfg.skip_dim, cfg.num_classes, 1)
        # The pyramid alone already fits the per-pixel statistics well, so without a loss of their own the
        # Transformer's tokens get little gradient early on; a map predicted from the decoder alone fixes that.
        self.aux_head = nn.Conv2d(cfg.decoder_dim, cfg.num_classes, 1) if cfg.aux_weight > 0 else None
        self.init_weights()
        # Loaded weights decide the aggregation (an old checkpoint: "max"); the config follows them.
        self.register_load_state_dict_post_hook(_sync_frame_stats)

    def _build_transformer(self, cfg: TomoFormerConfig) -> None:
        p, D = cfg.patch_size, cfg.embed_dim
        # Frame encoder, shared by every frame.
        self.patch_embed = nn.Conv2d(NUM_FRAME_FEATURES + int(cfg.radial_slope), D, p, stride=p)
        self.frame_norm = nn.LayerNorm(D)
        self.frame_mlp = Mlp(D, int(D * cfg.frame_mlp_ratio))
        self.time_proj = nn.Linear(D, D) if cfg.time_embed else None
        self.agg = FramePool(D, cfg.num_heads, cfg.num_queries, cfg.mlp_ratio)

        # Spatial encoder.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, D))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.Sequential(
            *(
                Block(
                    D,
                    cfg.num_heads,
                    cfg.mlp_ratio,
                    qkv_bias=cfg.qkv_bias,
                    proj_drop=cfg.drop_rate,
                    attn_drop=cfg.attn_drop_rate,
                    drop_path=dpr[i],
                )
                for i in range(cfg.depth)
            )
        )
        self.norm = nn.LayerNorm(D)

        # Decoder (the full-resolution refinement is built by __init__).
        if cfg.decoder == "conv":
            self.decoder = ConvDecoder(D, cfg.decoder_dim, p)
        else:
            self.decoder = TransformerDecoder(cfg, self.grid)

    def init_weights(self) -> None:
        if self.cfg.transformer:
            trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_linear)

    # ----- timm hooks ---------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        names = {"pos_embed", "agg.query"}
        if isinstance(self.decoder, TransformerDecoder):
            names.add("decoder.query_embed")
        return names

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^pos_embed|^patch_embed|^frame_|^time_proj|^agg",
            blocks=r"^blocks\.(\d+)" if coarse else [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def lora_targets(self) -> list[str]:
        """LoRA goes on the attention and MLP projections of the ViT blocks and of the frame pooling; without the
        Transformer (``transformer=False``) on every conv and linear layer except the head."""
        names = [n for n, m in self.named_modules() if isinstance(m, nn.Linear) and _LORA_TARGETS.search(n)]
        return names or linear_and_conv_targets(self)

    def reset_classifier(self, num_classes: int = 1) -> None:
        """Replace the final 1x1 projection (fresh weights) with ``num_classes`` outputs."""
        self.cfg.num_classes = num_classes
        self.head = nn.Conv2d(self.head.in_channels, num_classes, 1).to(self.head.weight.device)

    # ----- forward ------------------------------------------------------------------------------------------
    def _pos_embed(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        pos = resample_abs_pos_embed(self.pos_embed, list(grid), [self.grid] * 2, num_prefix_tokens=0)
        return self.pos_drop(x + pos.to(x.dtype))

    def frame_inputs(self, signals: Tensor, tx_pos: Tensor | None) -> tuple[Tensor, Tensor]:
        """signals [B, T, H, W] -> per-frame features [B, T, C, H, W] and frame presence [B, T] bool."""
        return physics_frame_features(signals, tx_pos, self.cfg.radial_slope)

    def embed_frames(self, feats: Tensor, present: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """feats [B, T, C, H, W] -> frame tokens [B, T, N, D], frame mask [B, T] and the token grid."""
        B, T = present.shape
        feats = pad_to_multiple(feats.flatten(0, 1), self.patch_size)
        x = self.patch_embed(feats.to(self.patch_embed.weight.dtype))
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # [B*T, N, D]
        x = x + self.frame_mlp(self.frame_norm(x))
        x = x.reshape(B, T, -1, self.embed_dim)
        if self.time_proj is not None:
            t_emb = self.time_proj(sinusoidal_embedding(torch.arange(T, device=x.device), self.embed_dim))
            x = x + t_emb[None, :, None, :].to(x.dtype)
        # Only missing frames are masked: a patch not received in a present frame keeps that fact (valid = 0),
        # which is evidence of buildings. A sample with no measured frame at all still needs one key per
        # query, else the softmax gives NaN.
        present = present | ~present.any(dim=1, keepdim=True)
        return x, present, grid

    def forward_features(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB, tx_pos [B, T, 3] | None -> encoder tokens [B, N, D] (padded patch grid)."""
        if not self.cfg.transformer:
            raise ConfigError("this TomoFormer has no Transformer (transformer=false), so no encoder tokens")
        return self._encode(*self.frame_inputs(signals, tx_pos))[0]

    def _encode(self, feats: Tensor, present: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x, present, grid = self.embed_frames(feats, present)
        B, T, N, D = x.shape
        mask = present[:, None, :].expand(B, N, T).reshape(B * N, T)
        x = self.agg(x.transpose(1, 2).reshape(B * N, T, D), mask).reshape(B, N, D)
        x = self.blocks(self._pos_embed(x, grid))
        return self.norm(x), grid

    def forward_head(
        self,
        x: Tensor,
        signals: Tensor,
        tx_pos: Tensor | None = None,
        stats: Tensor | None = None,
        grid: tuple[int, int] | None = None,
    ) -> Tensor:
        """Encoder tokens [B, N, D] -> logits [B, H, W] (H, W from ``signals``; stats recomputed if None)."""
        feats = self.frame_inputs(signals, tx_pos)[0] if self.pixel_pool is not None else None
        return self._decode(x, signals, tx_pos, feats, stats, grid)[0]

    def _decode(
        self,
        x: Tensor | None,
        signals: Tensor,
        tx_pos: Tensor | None,
        feats: Tensor | None,
        stats: Tensor | None,
        grid: tuple[int, int] | None,
    ) -> tuple[Tensor, Tensor | None]:
        """-> logits [B, H, W] and the decoder's features [B, decoder_dim, H', W'] (padded; None, like the
        encoder tokens ``x``, without a Transformer)."""
        H, W = signals.shape[-2:]
        p = self.patch_size
        if grid is None:
            grid = ((H + p - 1) // p, (W + p - 1) // p)
        if stats is None:
            stats = self.pixel_stats(signals, tx_pos)
        if self.pixel_pool is not None:
            stats = torch.cat([stats, self.pixel_pool(feats, feats[:, :, 1] > 0).to(stats.dtype)], dim=1)
        stats = pad_to_multiple(stats, self.pyramid.multiple).to(self.head.weight.dtype)
        decoded = token_map = None
        if x is not None:
            decoded = _fit(self.decoder(x, grid), stats.shape[-2:])
            token_map = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        out = self.head(self.pyramid(stats, token_map, decoded))[..., :H, :W]
        return _squeeze_classes(out.float()), decoded

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB (NaN = missing), tx_pos [B, T, 3] cells | None -> logits [B, H, W]."""
        return self.forward_train(signals, tx_pos)[0]

    def forward_train(self, signals: Tensor, tx_pos: Tensor | None = None) -> tuple[Tensor, list[tuple[float, Tensor]]]:
        """Like ``forward``, plus the auxiliary outputs to supervise: [(weight, logits [B, H, W])] (empty when
        ``aux_weight`` is 0). The training task adds ``weight x loss(aux logits)`` to the loss."""
        feats, present = self.frame_inputs(signals, tx_pos)
        if not self.cfg.transformer:
            return self._decode(None, signals, tx_pos, feats, None, None)[0], []
        x, grid = self._encode(feats, present)
        logits, decoded = self._decode(x, signals, tx_pos, feats, None, grid)
        if self.aux_head is None or decoded is None:
            return logits, []
        H, W = signals.shape[-2:]
        aux = _squeeze_classes(self.aux_head(decoded)[..., :H, :W].float())
        return logits, [(self.cfg.aux_weight, aux)]


def _sync_frame_stats(module: nn.Module, incompatible: Any) -> None:
    module.cfg.frame_stats = module.pixel_stats.frame_stats


def _squeeze_classes(out: Tensor) -> Tensor:
    return out[:, 0] if out.shape[1] == 1 else out


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _create(defaults: dict[str, Any], **kwargs: Any) -> TomoFormer:
    known = {f.name for f in fields(TomoFormerConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"unknown TomoFormer option(s): {', '.join(unknown)}")
    return TomoFormer(TomoFormerConfig(**{**defaults, **kwargs}))


@register_model
def tomoformer_tiny(**kwargs: Any) -> TomoFormer:
    """2.0 M parameters (2.2 M with the transformer decoder): trains on a CPU in minutes (48x48, T=16)."""
    return _create(dict(embed_dim=96, depth=4, num_heads=3, decoder_embed_dim=96, decoder_heads=3), **kwargs)


@register_model
def tomoformer_pyramid(**kwargs: Any) -> TomoFormer:
    """Ablation: ``tomoformer_tiny`` without its Transformer (no frame tokens, ViT or decoder), the pyramid alone
    over the same per-pixel physics inputs (hand-made statistics and ``PixelFramePool``)."""
    return tomoformer_tiny(**{"transformer": False, **kwargs})


@register_model
def tomoformer_small(**kwargs: Any) -> TomoFormer:
    cfg = dict(embed_dim=384, depth=8, num_heads=6, num_queries=4, decoder_dim=48, skip_dim=24, pixel_pool_dim=16)
    return _create({**cfg, "decoder_embed_dim": 256, "decoder_heads": 8, "decoder_depth": 2}, **kwargs)


@register_model
def tomoformer_base(**kwargs: Any) -> TomoFormer:
    cfg = dict(embed_dim=768, depth=12, num_heads=12, num_queries=4, decoder_dim=64, skip_dim=32, pixel_pool_dim=16)
    return _create({**cfg, "decoder_embed_dim": 512, "decoder_heads": 16, "decoder_depth": 4}, **kwargs)


def config_dict(model: TomoFormer) -> dict[str, Any]:
    """The model's configuration as a plain dict (for checkpoints)."""
    return asdict(model.cfg)
