"""``ExpertsModel``: sub-models per cluster (or per output region) and their combination, as one registry model.

Registered as ``experts``, so ``tomoformer predict``, ``evaluate`` and ``export`` load it from a checkpoint like
any other model: its options (``model_kwargs``) name the sub-models and the sizes of the clusterer, and the
fitted clusterer lives in buffers (scaler mean/scale, centres, core points, GMM parameters).

Partition ``cluster`` (one expert per cluster), combined by ``combine``:

* ``hard``: each sample goes to the expert of its cluster only (the others do not run);
* ``soft``: average of the experts' logits weighted by the cluster memberships;
* ``gate``: weights softmax(log membership + MLP(features)), the MLP's last layer zero-initialised, so it starts
  as ``soft`` and learns during the global fine-tuning;
* ``fusion``: ``soft`` plus a small CNN over all expert logits, per-pixel statistics and memberships
  (zero-initialised output, so it too starts as ``soft``);
* ``attention``: per-pixel attention over the experts' features (the input of each expert's head, projected to a
  common width); the query comes from the per-pixel statistics and the sample's features.

Keeping the differences within a cluster: ``film`` conditions every expert's head input on the sample's offset
from its cluster centre (FiLM, zero-initialised); ``aux`` adds a head that predicts the membership and the offset
from the (combined) expert features, trained as auxiliary targets (see :meth:`ExpertsModel.aux_loss`).

Partition ``region``: a grid of ``regions`` experts, each sees its part of the map plus a ``halo`` of context and
predicts it; the cores are stitched back together.

``shared_lora=R``: the experts (all the same model) share one frozen backbone and differ by a LoRA adapter of
rank R and a head each (:mod:`tomoformer.models.experts.shared`), instead of being K full copies.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tomoformer.errors import ConfigError
from tomoformer.models.experts.features import FeatureExtractor
from tomoformer.models.experts.router import Router
from tomoformer.models.experts.shared import SharedLoRABackbone
from tomoformer.models.features import NUM_PIXEL_STATISTICS, pixel_statistics
from tomoformer.models.registry import create_model, register_model
from tomoformer.models.tracing import is_exporting

__all__ = ["COMBINES", "ExpertsModel", "experts", "region_boxes"]

COMBINES = ("hard", "soft", "gate", "fusion", "attention")
DEFAULT_EXPERT = {"model": "unet", "model_kwargs": {"base_channels": 8, "depth": 2}}


def region_boxes(
    H: int, W: int, regions: tuple[int, int], halo: int
) -> list[tuple[tuple[slice, slice], tuple[slice, slice], tuple[slice, slice]]]:
    """Per region (row-major): the crop with halo, the core inside the crop, and the core in the full map.

    Region boundaries are ``round(i * H / rows)``; regions with an empty core (maps smaller than the grid) are
    left out, so the cores always tile the map exactly.
    """
    rows = [round(i * H / regions[0]) for i in range(regions[0] + 1)]
    cols = [round(j * W / regions[1]) for j in range(regions[1] + 1)]
    boxes = []
    for i in range(regions[0]):
        for j in range(regions[1]):
            r0, r1, c0, c1 = rows[i], rows[i + 1], cols[j], cols[j + 1]
            if r1 <= r0 or c1 <= c0:
                boxes.append(None)
                continue
            a0, a1, b0, b1 = max(0, r0 - halo), min(H, r1 + halo), max(0, c0 - halo), min(W, c1 + halo)
            boxes.append(
                (
                    (slice(a0, a1), slice(b0, b1)),
                    (slice(r0 - a0, r1 - a0), slice(c0 - b0, c1 - b0)),
                    (slice(r0, r1), slice(c0, c1)),
                )
            )
    return boxes


def shift_tx(tx_pos: Tensor | None, row: int, col: int) -> Tensor | None:
    """Transmitter positions in the frame of a crop whose top-left cell is (row, col)."""
    if tx_pos is None:
        return None
    return tx_pos - torch.tensor([row, col, 0.0], device=tx_pos.device, dtype=tx_pos.dtype)


def _head_pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # A module-level function (not a closure over the ExpertsModel) so that deepcopy / pickling of the model
    # keep working; the per-call FiLM parameters and the feature list are set as plain attributes of the head.
    x = args[0]
    film = module.__dict__.get("_film")
    if film is not None:
        gamma, beta = film
        x = x * (1 + gamma[:, :, None, None].to(x.dtype)) + beta[:, :, None, None].to(x.dtype)
    caught = module.__dict__.get("_caught")
    if caught is not None:
        caught.append(x)
    return (x, *args[1:])


class ExpertsModel(nn.Module):
    """Signals [B, T, H, W] dB (+ tx_pos [B, T, 3] | None) -> building logits [B, H, W] from several sub-models.

    Args:
        experts: sub-model specs ``{"model": name, "model_kwargs": {...}}``; one per cluster (``partition=
            "cluster"``) or per region (row-major, ``partition="region"``).
        partition: ``"cluster"`` or ``"region"``.
        combine: one of ``COMBINES`` (cluster partition).
        regions, halo: region grid (rows, cols) and context margin in cells (region partition).
        features, encoder, num_features: clustering features (see ``models.experts.features.FeatureExtractor``).
        clusterer, num_clusters, num_points: the :class:`Router` (K defaults to the number of experts).
        film, aux: the within-cluster options (see the module docstring).
        hidden: width of the gate, fusion, attention and auxiliary networks.
        shared_lora: 0 for separate experts; R >= 1 for experts sharing one backbone with rank-R LoRA adapters.
    """

    requires_fit = False

    def __init__(
        self,
        experts: list[dict[str, Any]] | None = None,
        partition: str = "cluster",
        combine: str = "soft",
        regions: tuple[int, int] | list[int] = (2, 2),
        halo: int = 4,
        features: str = "stats",
        encoder: dict[str, Any] | None = None,
        num_features: int | None = None,
        clusterer: str = "kmeans",
        num_clusters: int | None = None,
        num_points: int = 0,
        film: bool = False,
        aux: bool = False,
        hidden: int = 16,
        shared_lora: int = 0,
    ) -> None:
        super().__init__()
        specs = [dict(s) for s in (experts or [DEFAULT_EXPERT, DEFAULT_EXPERT])]
        if partition not in ("cluster", "region"):
            raise ConfigError(f"partition must be 'cluster' or 'region', got {partition!r}")
        if combine not in COMBINES:
            raise ConfigError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        self.partition, self.combine = partition, combine
        self.regions, self.halo = (int(regions[0]), int(regions[1])), int(halo)
        if partition == "region" and len(specs) != self.regions[0] * self.regions[1]:
            raise ConfigError(f"region partition {self.regions} needs {self.regions[0] * self.regions[1]} experts")
        K = int(num_clusters or (len(specs) if partition == "cluster" else 2))
        if partition == "cluster" and len(specs) != K:
            raise ConfigError(f"{K} clusters but {len(specs)} experts: give one expert per cluster")
        self.shared_lora = int(shared_lora)
        self.backbone: SharedLoRABackbone | None = None
        if self.shared_lora:
            if any(spec != specs[0] for spec in specs):
                raise ConfigError("shared_lora: every expert must be the same model with the same options")
            self.backbone = SharedLoRABackbone(specs[0], len(specs), self.shared_lora)
            self.experts = nn.ModuleList(self.backbone.views())
        else:
            self.experts = nn.ModuleList(create_model(s["model"], **dict(s.get("model_kwargs") or {})) for s in specs)
        enc = None if encoder is None else create_model(encoder["model"], **dict(encoder.get("model_kwargs") or {}))
        self.features = FeatureExtractor(features, enc, num_features)
        Fdim = self.features.num_features
        self.router = Router(clusterer, K, Fdim, num_points)
        self.use_film, self.use_aux = bool(film), bool(aux)
        needs_heads = self.use_film or self.use_aux or combine == "attention"
        widths = [self._head_width(e) if needs_heads else 0 for e in self.experts]
        if needs_heads:
            for e in self.experts:
                e.get_classifier().register_forward_pre_hook(_head_pre_hook)
        self.film = nn.ModuleList(_zero_linear(Fdim, 2 * w) for w in widths) if self.use_film else None
        self.proj = nn.ModuleList(nn.Conv2d(w, hidden, 1) for w in widths) if (aux or combine == "attention") else None
        self.gate = (
            nn.Sequential(nn.Linear(Fdim, hidden), nn.GELU(), _zero_linear(hidden, K)) if combine == "gate" else None
        )
        self.fusion = None
        if combine == "fusion":
            self.fusion = nn.Sequential(
                nn.Conv2d(2 * K + NUM_PIXEL_STATISTICS, hidden, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(hidden, hidden, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(hidden, 1, 1),
            )
            nn.init.zeros_(self.fusion[-1].weight)
            nn.init.zeros_(self.fusion[-1].bias)
        if combine == "attention":
            self.query_pixels = nn.Conv2d(NUM_PIXEL_STATISTICS, hidden, 1)
            self.query_sample = nn.Linear(Fdim, hidden)
        self.aux_head = nn.Linear(hidden, K + Fdim) if aux else None

    @staticmethod
    def _head_width(expert: nn.Module) -> int:
        head = expert.get_classifier() if hasattr(expert, "get_classifier") else None
        if not isinstance(head, nn.Conv2d):
            raise ConfigError(f"film, aux and attention need experts with a Conv2d head, not {type(expert).__name__}")
        return head.in_channels

    @property
    def num_clusters(self) -> int:
        return self.router.num_clusters

    def get_classifier(self) -> nn.Module:
        # A linear probe of the combined model trains the combination (gate/fusion/attention) and the experts' heads.
        parts = [e.get_classifier() for e in self.experts if hasattr(e, "get_classifier")]
        parts += [m for m in (self.gate, self.fusion, self.film, self.proj, self.aux_head) if m is not None]
        return nn.ModuleList(parts)

    def load_expert_state(self, k: int, state_dict: dict[str, Tensor]) -> None:
        """Load expert k's weights: a plain registry state dict, or for a shared-LoRA expert the unmerged state of
        a ``lora:R`` run (its adapter and head; the backbone stays as it is). Reading them from a trained run's
        checkpoint is the pipeline's job (:func:`tomoformer.experts.build.load_expert`)."""
        if self.backbone is None:
            self.experts[k].load_state_dict(state_dict)
            return
        self.backbone.load_expert(k, self.experts[k].get_classifier(), state_dict)

    def route(self, signals: Tensor, tx_pos: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Standardised features z [B, F] and log memberships [B, K] of each sample."""
        # Routing in float32 even under bf16 autocast: GMM log-densities and distances need the precision.
        with torch.autocast(device_type=signals.device.type, enabled=False):
            z = self.features(signals.float(), None if tx_pos is None else tx_pos.float())
            return z, self.router.log_memberships(z)

    def forward(self, signals: Tensor, tx_pos: Tensor | None = None) -> Tensor:
        """signals [B, T, H, W] dB (NaN = missing), tx_pos [B, T, 3] cells | None -> logits [B, H, W]."""
        return self.forward_all(signals, tx_pos)["logits"]

    def forward_all(self, signals: Tensor, tx_pos: Tensor | None = None) -> dict[str, Tensor]:
        """Logits [B, H, W] plus ``log_member`` [B, K], ``assign`` [B], ``offset`` [B, F] and, with ``aux``,
        ``aux_member`` [B, K] (logits) and ``aux_offset`` [B, F]."""
        z, log_member = self.route(signals, tx_pos)
        assign = log_member.argmax(1)
        offset = self.router.offsets(z, assign)
        out = {"log_member": log_member, "assign": assign, "offset": offset, "z": z}
        if self.partition == "region":
            out["logits"] = self._regions(signals, tx_pos)
            return out
        if self.combine == "hard":
            logits, pooled = self._hard(signals, tx_pos, assign, offset)
        else:
            logits, pooled = self._mixed(signals, tx_pos, z, log_member, offset)
        out["logits"] = logits
        if self.aux_head is not None:
            aux = self.aux_head(pooled)
            out["aux_member"], out["aux_offset"] = aux[:, : self.num_clusters], aux[:, self.num_clusters :]
        return out

    def aux_loss(self, out: dict[str, Tensor]) -> Tensor:
        """Cross-entropy of the predicted cluster plus MSE of the predicted offset (0 without ``aux``)."""
        if "aux_member" not in out:
            return out["logits"].new_zeros(())
        return F.cross_entropy(out["aux_member"], out["assign"]) + F.mse_loss(out["aux_offset"], out["offset"])

    # ----- combinations -------------------------------------------------------------------------------------
    def _run_expert(
        self, k: int, signals: Tensor, tx_pos: Tensor | None, offset: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Expert k's logits [b, H, W] and its head input [b, C, H, W] (None when nobody needs it)."""
        expert = self.experts[k]
        head = expert.get_classifier() if self.proj is not None or self.film is not None else None
        caught: list[Tensor] = []
        if head is not None:
            head.__dict__["_caught"] = caught
            head.__dict__["_film"] = self.film[k](offset).chunk(2, dim=1) if self.film is not None else None
        try:
            logits = expert(signals, tx_pos)
        finally:
            if head is not None:
                head.__dict__["_caught"] = head.__dict__["_film"] = None
        H, W = signals.shape[-2:]
        # Models pad bottom/right internally: the head input's top-left H x W is the map.
        feats = caught[-1][..., :H, :W] if caught else None
        return logits, feats

    def _hard(
        self, signals: Tensor, tx_pos: Tensor | None, assign: Tensor, offset: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        if is_exporting():
            return self._hard_traceable(signals, tx_pos, assign, offset)
        B, _, H, W = signals.shape
        logits = signals.new_zeros(B, H, W, dtype=torch.float32)
        pooled = signals.new_zeros(B, self.aux_head.in_features, dtype=torch.float32) if self.aux_head else None
        for k in range(len(self.experts)):
            idx = (assign == k).nonzero().flatten()
            if idx.numel() == 0:
                continue
            tx = None if tx_pos is None else tx_pos[idx]
            lk, fk = self._run_expert(k, signals[idx], tx, offset[idx])
            logits = logits.index_copy(0, idx, lk.float())
            if pooled is not None and fk is not None:
                pooled = pooled.index_copy(0, idx, self.proj[k](fk).float().mean((2, 3)))
        return logits, pooled

    def _hard_traceable(
        self, signals: Tensor, tx_pos: Tensor | None, assign: Tensor, offset: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        # Sub-batches of data-dependent size cannot be traced with a dynamic batch: every expert runs on the
        # whole batch and each sample keeps its own expert's output (torch.where, so another expert's NaN or inf
        # cannot leak in). Same numbers as _hard, K times the work; used for export only.
        logits = pooled = None
        for k in range(len(self.experts)):
            lk, fk = self._run_expert(k, signals, tx_pos, offset)
            pick = assign == k
            logits = lk.float() if logits is None else torch.where(pick[:, None, None], lk.float(), logits)
            if self.aux_head is not None and fk is not None:
                pk = self.proj[k](fk).float().mean((2, 3))
                pooled = pk if pooled is None else torch.where(pick[:, None], pk, pooled)
        assert logits is not None
        return logits, pooled

    def _mixed(
        self, signals: Tensor, tx_pos: Tensor | None, z: Tensor, log_member: Tensor, offset: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        runs = [self._run_expert(k, signals, tx_pos, offset) for k in range(len(self.experts))]
        logits = torch.stack([r[0].float() for r in runs], 1)  # [B, K, H, W]
        member = log_member.exp()
        if self.combine == "gate":
            weights = torch.softmax(log_member + self.gate(z), dim=1)[:, :, None, None].expand_as(logits)
        elif self.combine == "attention":
            keys = torch.stack([p(r[1]).float() for p, r in zip(self.proj, runs, strict=True)], 1)  # [B, K, d, H, W]
            stats = pixel_statistics(signals, tx_pos)
            query = self.query_pixels(stats) + self.query_sample(z)[:, :, None, None]  # [B, d, H, W]
            scores = (keys * query[:, None]).sum(2) / math.sqrt(query.shape[1])
            weights = torch.softmax(scores + log_member[:, :, None, None], dim=1)
        else:
            weights = member[:, :, None, None].expand_as(logits)
        combined = (weights * logits).sum(1)
        if self.combine == "fusion":
            stats = pixel_statistics(signals, tx_pos)
            member_map = member[:, :, None, None].expand_as(logits)
            combined = combined + self.fusion(torch.cat([logits, stats, member_map], 1))[:, 0]
        pooled = None
        if self.aux_head is not None:
            feats = torch.stack([p(r[1]).float() for p, r in zip(self.proj, runs, strict=True)], 1)
            pooled = (weights[:, :, None] * feats).sum(1).mean((2, 3))
        return combined, pooled

    def _regions(self, signals: Tensor, tx_pos: Tensor | None) -> Tensor:
        B, _, H, W = signals.shape
        out = signals.new_zeros(B, H, W, dtype=torch.float32)
        for expert, box in zip(self.experts, region_boxes(H, W, self.regions, self.halo), strict=True):
            if box is None:
                continue
            (rows, cols), (core_r, core_c), (full_r, full_c) = box
            crop = expert(signals[..., rows, cols], shift_tx(tx_pos, rows.start, cols.start))
            out[:, full_r, full_c] = crop[:, core_r, core_c].float()
        return out


def _zero_linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


@register_model
def experts(**kwargs: Any) -> ExpertsModel:
    """Sub-models per cluster or region and their combination (fitted by ``tomoformer experts fit``)."""
    return ExpertsModel(**kwargs)
