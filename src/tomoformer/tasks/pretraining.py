"""Self-supervised pretraining by masked signal modelling: no building labels needed.

Some cells of the input are hidden (set to NaN): whole frames (``mask_mode="frames"``) or whole patches of every
frame (``"patches"``). From the encoder tokens of what is left, a small head predicts, per pixel, the mean over the
hidden frames of the per-frame-normalised dB of the ORIGINAL signals (``frame_features`` channel 0, ``norm_db``).
The loss is the MSE over pixels with at least one hidden, originally valid cell.

The backbone lives under ``model.`` exactly as in :class:`~tomoformer.tasks.mapping.MappingTask` and the head under
``recon.``, so :func:`tomoformer.checkpoint.load_checkpoint` (which keeps only ``model.`` keys) rebuilds the plain
registry model and ``tomoformer finetune --from`` works on the checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tomoformer.errors import ConfigError
from tomoformer.models.features import frame_features
from tomoformer.models.registry import create_model
from tomoformer.models.tomoformer import TomoFormer
from tomoformer.tasks.base import BaseTask
from tomoformer.tasks.options import MASK_MODES
from tomoformer.tasks.train import (
    TrainConfig,
    TrainResult,
    datamodule_for,
    run_job,
    task_options,
)


def _first_k(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """True at the ``k[b]`` smallest entries of each row of ``scores [B, M]`` (``k: [B]``)."""
    rank = scores.argsort(dim=1).argsort(dim=1)
    return rank < k[:, None]


def mask_cells(
    signals: torch.Tensor,
    mask_ratio: float,
    mode: str,
    patch_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the cells to hide.

    Args:
        signals: [B, T, H, W] dB, NaN = missing (only used for shape, device and which frames are present).
        mask_ratio: fraction in (0, 1) of the present frames (``"frames"``) or of the patches (``"patches"``) to
            hide; at least one and, when there are two or more, never all of them.
        mode: ``"frames"`` or ``"patches"`` (patches of ``patch_size`` cells hidden in every frame).
        generator: a CPU generator for reproducible masks (validation); None uses the global RNG.

    Returns:
        hidden [B, T, H, W] bool.
    """
    if mode not in MASK_MODES:
        raise ConfigError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {mode!r}")
    B, T, H, W = signals.shape
    if mode == "frames":
        present = torch.isfinite(signals).flatten(2).any(dim=2).cpu()  # [B, T]
        n = present.sum(dim=1)
        k = (mask_ratio * n).round().long().clamp(min=1).minimum((n - 1).clamp(min=1))
        # Absent (padding) frames sort last so that only present frames are chosen.
        scores = torch.rand(B, T, generator=generator) + (~present).float() * 2
        hidden = _first_k(scores, k)[:, :, None, None].expand(B, T, H, W)
    else:
        gh, gw = -(-H // patch_size), -(-W // patch_size)
        n = gh * gw
        k = torch.full((B,), min(max(1, round(mask_ratio * n)), max(1, n - 1)), dtype=torch.long)
        patches = _first_k(torch.rand(B, n, generator=generator), k).reshape(B, gh, gw)
        cells = patches.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)[:, :H, :W]
        hidden = cells[:, None].expand(B, T, H, W)
    return hidden.to(signals.device)


def masked_target(signals: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel reconstruction target and its weight.

    Args:
        signals: [B, T, H, W] dB of the ORIGINAL (unmasked) input, NaN = missing.
        hidden: [B, T, H, W] bool, the hidden cells.

    Returns:
        target [B, H, W]: mean over hidden, valid frames of ``norm_db`` (0 where there is none) and
        weight [B, H, W] float: 1 where at least one hidden cell was originally valid, else 0.
    """
    norm_db = frame_features(signals)[0][:, :, 0]  # [B, T, H, W], normalised by each frame's own valid cells
    used = (hidden & torch.isfinite(signals)).float()
    count = used.sum(dim=1)
    target = (norm_db * used).sum(dim=1) / count.clamp(min=1)
    return target, (count > 0).float()


class ReconstructionHead(nn.Module):
    """Encoder tokens [B, N, D] on the padded patch grid -> one value per pixel [B, H, W] (linear + pixel shuffle)."""

    def __init__(self, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(embed_dim, patch_size**2)
        self.shuffle = nn.PixelShuffle(patch_size)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        H, W = size
        p = self.patch_size
        gh, gw = -(-H // p), -(-W // p)
        x = self.proj(tokens).transpose(1, 2).reshape(tokens.shape[0], p * p, gh, gw)
        return self.shuffle(x)[:, 0, :H, :W].float()


class MaskedSignalTask(BaseTask):
    """Masked signal modelling on a TomoFormer backbone; AdamW with warm-up and cosine decay as in MappingTask."""

    def __init__(
        self,
        model: str = "tomoformer_tiny",
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        mask_ratio: float = 0.5,
        mask_mode: str = "frames",
        data_attrs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__("full")
        if mask_mode not in MASK_MODES:
            raise ConfigError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {mask_mode!r}")
        if not 0 < mask_ratio < 1:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        # Plain values only, so that checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters()
        backbone = create_model(model, **(model_kwargs or {}))
        if not isinstance(backbone, TomoFormer):
            raise ConfigError(f"masked pretraining needs a TomoFormer model, not {model!r}")
        self.model: TomoFormer = backbone
        self.recon = ReconstructionHead(backbone.embed_dim, backbone.patch_size)

    def forward(self, signals: torch.Tensor, tx_pos: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
        """``signals [B, T, H, W]`` dB with ``hidden [B, T, H, W]`` cells set to NaN -> prediction ``[B, H, W]``."""
        masked = signals.float().masked_fill(hidden, float("nan"))
        tokens = self.model.forward_features(masked, tx_pos)
        return self.recon(tokens, signals.shape[-2:])

    def masked_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """The reconstruction MSE of one batch (``signals``, optional ``tx_pos``; no labels needed)."""
        signals = batch["signals"]
        p = self.model.patch_size
        hidden = mask_cells(signals, self.hparams.mask_ratio, self.hparams.mask_mode, p, generator)
        prediction = self(signals, batch.get("tx_pos"), hidden)
        target, weight = masked_target(signals, hidden)
        error = F.mse_loss(prediction, target, reduction="none")
        return (error * weight).sum() / weight.sum().clamp(min=1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.masked_loss(batch)
        size = batch["signals"].shape[0]
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # The same masks every epoch, so val_loss is comparable across epochs.
        loss = self.masked_loss(batch, torch.Generator().manual_seed(batch_idx))
        size = batch["signals"].shape[0]
        self.log("val_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)

    def extra_parameters(self) -> list[nn.Parameter]:
        """The reconstruction head trains beside the backbone (same decay rule)."""
        return list(self.recon.parameters())


def run_masked_pretraining(
    config: TrainConfig, mask_ratio: float | None = None, mask_mode: str | None = None
) -> TrainResult:
    """Masked signal modelling of ``config.model`` (a TomoFormer) on ``config.data``, which needs no labels; the
    run folder is like ``train``'s and the best checkpoint has the lowest ``val_loss``. ``mask_ratio`` and
    ``mask_mode`` default to those of a :class:`~tomoformer.tasks.config.PretrainConfig` (else 0.5, frames)."""
    mask_ratio = mask_ratio if mask_ratio is not None else getattr(config, "mask_ratio", 0.5)
    mask_mode = mask_mode if mask_mode is not None else getattr(config, "mask_mode", "frames")
    options = {k: getattr(config, k) for k in ("model", "model_kwargs", "lr", "weight_decay", "warmup_fraction")}
    MaskedSignalTask(**options, mask_ratio=mask_ratio, mask_mode=mask_mode)  # refuse bad options before any data
    record = {**config.to_dict(), "objective": "masked", "mask_ratio": mask_ratio, "mask_mode": mask_mode}

    def make_task(datamodule: Any) -> MaskedSignalTask:
        data_attrs = task_options(config, datamodule.attrs)["data_attrs"]
        return MaskedSignalTask(**options, mask_ratio=mask_ratio, mask_mode=mask_mode, data_attrs=data_attrs)

    return run_job(
        config,
        lambda: datamodule_for(config, require_labels=False),
        make_task,
        record=record,
        command="pretrain",
        monitor=("val_loss", "min"),
    )
