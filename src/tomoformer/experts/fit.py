"""The pipeline behind ``tomoformer experts fit``: features -> clusters -> one sub-model per cluster (or region)
-> combined :class:`ExpertsModel` -> optional global fine-tuning -> per-cluster evaluation.

Run folder ``out``::

    config.yaml          resolved options
    clusters.npz         the fitted clusterer as plain arrays (read with allow_pickle=False)
    experts/<i>/         one training run per sub-model (checkpoints, metrics.csv, figures); done.json when finished
    stage1.ckpt          the combined model before the global stage
    global/              the global fine-tuning run (if global_epochs > 0); done.json when finished
    model.ckpt           the final model (loads with tomoformer.checkpoint.load_checkpoint, model "experts")
    metrics.csv/.json    IoU & co. on the validation samples, overall and per cluster
    figures/clusters.png validation samples' features in 2D by cluster, and the IoU per cluster

Every file is written atomically. ``resume``: finished stages (clusters.npz, experts with done.json, global with
done.json) are skipped; an unfinished stage continues from its ``last.ckpt`` (Lightning restores optimiser and
epoch), so a run killed at any point and resumed ends with the same sub-models as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from tomoformer.checkpoint import load_checkpoint, save_checkpoint
from tomoformer.data.datamodule import SignalMapDataset, make_loader
from tomoformer.errors import ConfigError
from tomoformer.experts.build import load_expert
from tomoformer.experts.clustering import ClusterFit, fit_clusters
from tomoformer.experts.config import ExpertsConfig
from tomoformer.experts.task import (
    ExpertsTask,
    RegionCrops,
    SubsetDataModule,
    cluster_metrics,
    metrics_rows,
    predict_with_clusters,
)
from tomoformer.io import atomic_path, write_text_atomic
from tomoformer.models.experts.model import ExpertsModel, region_boxes
from tomoformer.models.registry import create_model
from tomoformer.outputs import RunFolder, run_folder
from tomoformer.tasks.finetune import FinetuneTask
from tomoformer.tasks.policy import parse_policy
from tomoformer.tasks.train import datamodule_for, fit_task, plain_attrs, task_options


@dataclass
class ExpertsResult:
    """What ``experts fit`` produced."""

    out: Path
    model_path: Path
    metrics: dict[str, Any]
    seconds: float


# Options an ``experts fit --resume`` may change; any other difference (k, clusterer, data, seed ...) is refused.
RESUME_MAY_CHANGE = frozenset({"out", "resume", "overwrite", "progress"})


def run_experts_fit(config: ExpertsConfig) -> ExpertsResult:
    """Run the whole pipeline for ``config``; see the module docstring for the run folder.

    The run folder follows the output policy (:func:`tomoformer.outputs.run_folder`): ``resume`` continues only
    a run of the same options, and a finished run is reported, not fitted again.
    """
    from tomoformer.data.identity import IDENTITY_KEY, IDENTITY_MAY_CHANGE, data_identity

    record = config.to_dict()
    record.pop("overwrite", None)
    record[IDENTITY_KEY] = data_identity(config.data, config.val_data)  # --resume compares data by identity
    inputs = (config.data, config.val_data, config.init_checkpoint, config.encoder_checkpoint)
    with run_folder(
        config.out,
        record=record,
        command="experts fit",
        resume=config.resume,
        overwrite=config.overwrite,
        inputs=inputs,
        may_change=RESUME_MAY_CHANGE | IDENTITY_MAY_CHANGE,
    ) as run:
        if run.resumed and run.finished and (run.path / "model.ckpt").is_file():
            print(f"{run.path}: this experts run has already finished; nothing to do")
            metrics = json.loads((run.path / "metrics.json").read_text())
            return ExpertsResult(out=run.path, model_path=run.path / "model.ckpt", metrics=metrics, seconds=0.0)
        result = _fit(config, run)
        run.finish()
        return result


def _fit(config: ExpertsConfig, run: RunFolder) -> ExpertsResult:
    start = time.perf_counter()
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = datamodule_for(config)  # the shared data path (num_workers, augmentation, split)
    train_set, val_set = datamodule.train_set, datamodule.val_set
    assert isinstance(train_set, SignalMapDataset) and isinstance(val_set, SignalMapDataset)
    attrs = plain_attrs(datamodule.attrs)
    init = load_checkpoint(config.init_checkpoint) if config.init_checkpoint else None
    encoder = load_checkpoint(config.encoder_checkpoint) if config.features == "encoder" else None
    out = run.begin()

    # 1. Features and clusters (on un-augmented training samples).
    spec = model_spec(config, init, encoder)
    probe = create_model("experts", **{**spec, "num_clusters": 2, "clusterer": "kmeans"})
    if encoder is not None:
        probe.features.encoder.model.load_state_dict(encoder.model.state_dict())
    clusters_path = out / "clusters.npz"
    if config.resume and clusters_path.exists():
        fit = ClusterFit.from_arrays(dict(np.load(clusters_path, allow_pickle=False)))
    else:
        plain = SignalMapDataset(train_set.source, train_set.indices, augment=None)
        raw = raw_features(probe, plain, config.batch_size)
        fit = fit_clusters(
            raw, config.clusterer, config.k, config.k_max, config.dbscan_eps, config.dbscan_min_samples, config.seed
        )
        with atomic_path(clusters_path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **fit.arrays())
    print(f"{config.clusterer}: {fit.k} clusters of sizes {np.bincount(fit.labels, minlength=fit.k).tolist()}")
    spec = model_spec(config, init, encoder, fit)
    # Reseeded: the combination layers are initialised here, and reading data above drew from the torch RNG
    # (DataLoader seeds), which a resumed run that skips the clustering does not do.
    L.seed_everything(config.seed, workers=True, verbose=False)
    model = create_model("experts", **spec)
    assert isinstance(model, ExpertsModel)
    if encoder is not None:
        model.features.encoder.model.load_state_dict(encoder.model.state_dict())
    if model.backbone is not None:
        assert init is not None
        model.backbone.load_base(init.model.state_dict())
        separate = len(model.experts) * sum(p.numel() for p in init.model.parameters())
        shared = sum(p.numel() for p in model.backbone.parameters()) + sum(
            p.numel() for e in model.experts for p in e.parameters()
        )
        print(f"{len(model.experts)} LoRA experts on one backbone: {shared:,} parameters ({separate:,} as copies)")
    model.features.set_scaler(fit.mean, fit.scale)
    model.router.load_fit(fit)
    val_clusters = predict_with_clusters(model, val_set, config.batch_size)[1]

    # 2. One sub-model per cluster (or region), each a normal training run.
    for i, expert_spec in enumerate(spec["experts"]):
        folder = out / "experts" / str(i)
        if not (config.resume and (folder / "done.json").exists()):
            train_expert(config, i, expert_spec, init, train_set, val_set, fit.labels, val_clusters, attrs, folder)
        done = json.loads((folder / "done.json").read_text())
        load_expert(model, i, folder / done["checkpoint"])
    hparams = {"model": "experts", "model_kwargs": spec, "data_attrs": attrs}
    save_checkpoint(out / "stage1.ckpt", model, hparams)

    # 3. Global fine-tuning of the combined model, end to end.
    if config.global_epochs > 0:
        folder = out / "global"
        if not (config.resume and (folder / "done.json").exists()):
            L.seed_everything(config.seed + 1000, workers=True, verbose=False)
            tc = config.train_config(str(folder), config.global_epochs, config.global_lr)
            task = ExpertsTask(
                aux_weight=config.aux_weight,
                global_policy=config.global_policy,
                **{**task_options(tc, attrs), "model": "experts", "model_kwargs": spec},
            )
            task.model.load_state_dict(model.state_dict())
            result = fit_task(task, datamodule, tc, folder)
            write_text_atomic(
                folder / "done.json", json.dumps({"checkpoint": _relative(result.best_checkpoint, folder)})
            )
        done = json.loads((folder / "done.json").read_text())
        model.load_state_dict(load_checkpoint(folder / done["checkpoint"]).model.state_dict())
    model_path = save_checkpoint(out / "model.ckpt", model, hparams)

    # 4. Evaluation on the validation samples, overall and per cluster.
    metrics = evaluate_into(model, val_set, out, config.batch_size)
    write_figures(out, raw_features(model, SignalMapDataset(val_set.source, val_set.indices), config.batch_size), model)
    return ExpertsResult(out=out, model_path=model_path, metrics=metrics, seconds=time.perf_counter() - start)


def model_spec(
    config: ExpertsConfig, init: Any | None, encoder: Any | None, fit: ClusterFit | None = None
) -> dict[str, Any]:
    """The ``experts`` model options (plain values; they travel in the checkpoint)."""
    k = fit.k if fit is not None else 2
    n = k if config.partition == "cluster" else config.regions[0] * config.regions[1]
    experts = []
    for i in range(n):
        entry = config.expert_models[i % len(config.expert_models)]
        if entry["model"] == "init":
            assert init is not None
            entry = {"model": init.name, "model_kwargs": dict(init.model_kwargs)}
        experts.append({"model": entry["model"], "model_kwargs": dict(entry.get("model_kwargs") or {})})
    spec: dict[str, Any] = {
        "experts": experts,
        "partition": config.partition,
        "combine": config.combine,
        "regions": list(config.regions),
        "halo": config.halo,
        "features": config.features,
        "clusterer": config.clusterer,
        "num_clusters": k,
        "film": config.film,
        "aux": config.aux,
        "hidden": config.hidden,
        "shared_lora": int(parse_policy(config.policy).value or 0) if config.share_backbone else 0,
    }
    if fit is not None:
        spec["num_points"] = len(fit.points)
        spec["num_features"] = int(fit.centres.shape[1])
    if encoder is not None:
        from tomoformer.models.experts.features import embedding_width

        spec["encoder"] = {"model": encoder.name, "model_kwargs": dict(encoder.model_kwargs)}
        spec.setdefault("num_features", embedding_width(encoder.model))
    return spec


@torch.no_grad()
def raw_features(model: ExpertsModel, dataset: SignalMapDataset, batch_size: int) -> np.ndarray:
    """Unstandardised clustering features [N, F] of every sample of ``dataset``."""
    model.eval()
    chunks = []
    for batch in make_loader(dataset, batch_size):
        chunks.append(model.features.raw(batch["signals"], batch.get("tx_pos")).cpu().numpy())
    return np.concatenate(chunks).astype(np.float64)


def train_expert(
    config: ExpertsConfig,
    i: int,
    spec: dict[str, Any],
    init: Any | None,
    train_set: SignalMapDataset,
    val_set: SignalMapDataset,
    train_clusters: np.ndarray,
    val_clusters: np.ndarray,
    attrs: dict[str, Any],
    folder: Path,
) -> None:
    """Train sub-model ``i`` on its cluster's samples (or its region's crops of all samples) into ``folder``."""
    if config.partition == "cluster":
        train_idx = train_set.indices[train_clusters == i]
        val_idx = val_set.indices[val_clusters == i]
        if len(val_idx) == 0:  # no validation sample fell into this cluster: judge it on all of them
            val_idx = val_set.indices
        train = SignalMapDataset(train_set.source, train_idx, augment=train_set.augment, seed=config.seed)
        val: Any = SignalMapDataset(val_set.source, val_idx, augment=None, seed=config.seed)
    else:
        H, W = train_set.source.shape[-2:]
        box = region_boxes(H, W, tuple(config.regions), config.halo)[i]
        if box is None:
            raise ConfigError(f"region {i} is empty: the {H}x{W} maps are smaller than the {config.regions} grid")
        rows, cols = box[0]
        train = RegionCrops(train_set, rows, cols)
        val = RegionCrops(val_set, rows, cols)
    print(f"expert {i} ({spec['model']}): {len(train)} training samples")
    L.seed_everything(config.seed + i, workers=True, verbose=False)
    tc = config.train_config(str(folder), config.epochs, config.lr, model=spec["model"])
    options = {**task_options(tc, attrs), "model": spec["model"], "model_kwargs": spec["model_kwargs"]}
    pretrained = init is not None and init.name == spec["model"] and init.model_kwargs == spec["model_kwargs"]
    task = FinetuneTask(policy=config.policy if pretrained else "full", **options)
    if pretrained:
        task.load_pretrained(init.model.state_dict())
    loaders = SubsetDataModule(train, val, config.batch_size, config.seed + i, config.num_workers)
    result = fit_task(task, loaders, tc, folder)
    done = {"checkpoint": _relative(result.best_checkpoint, folder), "n_train": len(train), "metrics": result.metrics}
    write_text_atomic(folder / "done.json", json.dumps(done, indent=1))


def _relative(path: Path, folder: Path) -> str:
    # Paths inside the run folder are stored relative to it, so a moved run folder still resumes.
    return str(Path(path).resolve().relative_to(folder.resolve()))


def evaluate_into(
    model: ExpertsModel, dataset: SignalMapDataset, out: Path, batch_size: int, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Score ``model`` on ``dataset`` overall and per cluster; write metrics.csv and metrics.json into ``out``."""
    probabilities, clusters, _ = predict_with_clusters(model, dataset, batch_size, device)
    truth = dataset.cache["buildings"] if dataset.cache else dataset.source.read("buildings", dataset.indices)
    scores = cluster_metrics(probabilities, truth, clusters)
    write_text_atomic(out / "metrics.csv", metrics_rows(scores))
    write_text_atomic(out / "metrics.json", json.dumps(scores, indent=1))
    return scores


def write_figures(out: Path, raw: np.ndarray, model: ExpertsModel) -> None:
    """figures/clusters.png: standardised features on their two principal axes by cluster, and the IoU per
    cluster from metrics.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tomoformer.evaluation.figures import save_figure

    z = torch.as_tensor(raw, dtype=torch.float32)
    z = (z - model.features.mean) / model.features.scale
    clusters = model.router(z).argmax(1).numpy()
    zc = (z - z.mean(0)).numpy()
    axes = np.linalg.svd(zc, full_matrices=False)[2][:2] if len(zc) > 1 else np.eye(2, zc.shape[1])
    xy = zc @ axes.T
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    ax1.scatter(xy[:, 0], xy[:, 1], c=clusters, cmap="tab10", s=12, vmin=0, vmax=9)
    ax1.set(title="validation samples by cluster", xlabel="PC 1", ylabel="PC 2")
    scores = json.loads((out / "metrics.json").read_text())
    names = ["all", *(f"c{k}" for k in scores["per_cluster"])]
    ax2.bar(names, [scores["iou"], *(v["iou"] for v in scores["per_cluster"].values())], color="#4477aa")
    ax2.set(title="IoU", ylim=(0, 1))
    save_figure(fig, out / "figures" / "clusters.png")
    plt.close(fig)
