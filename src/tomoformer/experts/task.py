"""Lightning pieces of the experts pipeline: the global fine-tuning task and the per-expert data."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tomoformer.data.datamodule import SignalMapDataset, SplitDataModule
from tomoformer.evaluation.metrics import evaluate_predictions
from tomoformer.models.experts.model import ExpertsModel, shift_tx
from tomoformer.tasks.mapping import MappingTask
from tomoformer.tasks.policy import Policy, apply_policy, require_kind


class ExpertsTask(MappingTask):
    """A :class:`MappingTask` over an :class:`ExpertsModel`: BCE + Dice on the combined logits, plus
    ``aux_weight`` x the auxiliary membership/offset loss; ``global_policy`` (full | head | freeze:K) is applied
    to every expert, so the combination can be trained with the experts frozen or partly frozen."""

    def __init__(self, aux_weight: float = 0.1, global_policy: str = "full", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.model, ExpertsModel):
            raise TypeError("ExpertsTask needs model='experts'")
        if self.model.backbone is not None:
            # The shared backbone is frozen already; "head" also freezes the LoRA adapters.
            policy = require_kind(global_policy, ("full", "head"), "global_policy", " with a shared backbone")
            for param in self.model.backbone.adapter_parameters():
                param.requires_grad_(param.requires_grad and policy == Policy("full"))
        else:
            for expert in self.model.experts:
                apply_policy(expert, global_policy)  # "full" leaves everything trainable

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        out = self.model.forward_all(batch["signals"], batch.get("tx_pos"))
        logits = out["logits"]
        loss = self.loss(logits, batch["buildings"])
        if self.model.use_aux:
            aux = self.model.aux_loss(out)
            loss = loss + self.hparams.aux_weight * aux
            self.log(f"{stage}_aux_loss", aux, on_step=False, on_epoch=True, batch_size=logits.shape[0])
        return self._log_step(loss, logits, batch, stage)


class RegionCrops(Dataset):
    """The items of ``base`` cut to one region's crop (signals, buildings, tx_pos shifted into the crop)."""

    def __init__(self, base: SignalMapDataset, rows: slice, cols: slice) -> None:
        self.base, self.rows, self.cols = base, rows, cols

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = dict(self.base[i])
        item["signals"] = item["signals"][:, self.rows, self.cols]
        if "buildings" in item:
            item["buildings"] = item["buildings"][self.rows, self.cols]
        if "tx_pos" in item:
            item["tx_pos"] = shift_tx(item["tx_pos"], self.rows.start, self.cols.start)
        return item


class SubsetDataModule(SplitDataModule):
    """Loaders over given datasets (one expert's samples or crops), with ``num_workers`` loader processes."""

    def __init__(self, train_set: Dataset, val_set: Dataset, batch_size: int, seed: int, num_workers: int = 0) -> None:
        super().__init__(batch_size, num_workers, None, seed)
        self.train_set, self.val_set = train_set, val_set


@torch.no_grad()
def predict_with_clusters(
    model: ExpertsModel, dataset: SignalMapDataset, batch_size: int = 8, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities [N, H, W], cluster index [N] and memberships [N, K] for every sample of ``dataset``."""
    from torch.utils.data import DataLoader

    from tomoformer.data.datamodule import collate

    model = model.to(device).eval()
    probs, assign, member = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        tx = batch["tx_pos"].to(device) if "tx_pos" in batch else None
        out = model.forward_all(batch["signals"].to(device), tx)
        probs.append(torch.sigmoid(out["logits"]).cpu().numpy())
        assign.append(out["assign"].cpu().numpy())
        member.append(out["log_member"].exp().cpu().numpy())
    return np.concatenate(probs), np.concatenate(assign), np.concatenate(member)


def cluster_metrics(probabilities: np.ndarray, truth: np.ndarray, clusters: np.ndarray) -> dict[str, Any]:
    """IoU & co. overall and per cluster (``per_cluster: {k: {...}}``); probabilities/truth [N, H, W], clusters [N]."""
    scores = evaluate_predictions(probabilities, truth, groups=clusters)
    scores["per_cluster"] = {int(k): v for k, v in scores.pop("per_group", {}).items()}
    return scores


def metrics_rows(scores: dict[str, Any]) -> str:
    """A CSV (scope, n_samples, iou, f1, precision, recall, accuracy) of :func:`cluster_metrics`' result."""
    keys = ("n_samples", "iou", "f1", "precision", "recall", "accuracy")
    lines = ["scope," + ",".join(keys)]
    lines.append("overall," + ",".join(f"{scores[k]:.6g}" for k in keys))
    for k, s in sorted(scores["per_cluster"].items()):
        lines.append(f"cluster_{k}," + ",".join(f"{s[key]:.6g}" for key in keys))
    return "\n".join(lines) + "\n"
