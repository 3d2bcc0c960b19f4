"""Fine-tuning study: validation IoU against downstream training-set size, one curve per fine-tuning policy.

For every size, a seeded random subset of the downstream data (nested: the subset of size 16 is contained in the
one of size 64) is fine-tuned from the checkpoint under every policy, and the same architecture is trained from
random initialisation (``scratch``), all under the same budget (``max_epochs`` / ``max_steps``). Validation uses
``val_data`` or a fixed held-out part of ``data`` that no subset touches. Each run is a normal run folder under
``out/runs``; subsets are written as small temporary ``.npz`` files that are removed at the end.

``out/results.csv`` (size, policy, val_iou, trainable_params, total_params, seconds, test_iou) is rewritten
atomically after every run, so an interrupted study is usable, and ``resume=True`` skips the runs already in it
(``out/config.yaml`` holds the shared settings; a resume with other ones is refused).
``val_iou`` is the best validation IoU over the run's epochs (the one of ``best.ckpt``); ``test_iou`` is that
checkpoint's IoU on ``test_data`` when one is given (e.g. another domain: real-city tiles). The pretrained model
as it is, without fine-tuning, is the row of size 0, policy ``none``. ``out/iou_vs_size.png`` (and
``test_iou_vs_size.png``) and ``out/summary.md`` are written at the end.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tomoformer.checkpoint import load_checkpoint
from tomoformer.data.datamodule import split_indices
from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.errors import ConfigError
from tomoformer.io import write_text_atomic
from tomoformer.models.adapt import count_parameters
from tomoformer.models.registry import create_model
from tomoformer.outputs import claim_output, differing_keys, read_run_config
from tomoformer.tasks.policy import apply_policy, parse_policy
from tomoformer.tasks.train import TrainConfig

SCRATCH = "scratch"
NONE = "none"
# TrainConfig fields the study sets per run, and those that may change between a study and its --resume.
_SET_PER_RUN = frozenset({"data", "val_data", "out", "model", "model_kwargs", "resume", "overwrite"})
# Besides these options, an input's path may change when its fingerprint does not (the same file, spelt another way).
_MAY_CHANGE = frozenset(
    {"train.progress", "train.num_workers", *(f"{key}.path" for key in ("from", "data", "val_data", "test_data"))}
)
COLUMNS = ("size", "policy", "val_iou", "trainable_params", "total_params", "seconds", "test_iou")


@dataclass
class StudyRow:
    """One run of the study."""

    size: int
    policy: str
    val_iou: float
    trainable_params: int
    total_params: int
    seconds: float
    test_iou: float = float("nan")


def run_study(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    sizes: Sequence[int],
    policies: Sequence[str],
    config: TrainConfig | None = None,
    val_data: str | Path | None = None,
    scratch: bool = True,
    resume: bool = False,
    test_data: str | Path | None = None,
    overwrite: bool = False,
) -> list[StudyRow]:
    """Run every (size, policy) pair plus ``scratch`` per size; write results.csv, iou_vs_size.png, summary.md.

    ``config`` gives the shared budget and optimiser settings (its ``data``, ``val_data``, ``out``, ``model`` and
    ``model_kwargs`` are set per run); ``config.val_fraction`` is the held-out part of ``data`` without
    ``val_data``, and ``config.seed`` seeds both the split and the subsets. ``test_data``, when given, is scored
    by every run's best checkpoint and by the pretrained model as it is.

    ``out`` follows the output policy (tomoformer.outputs): an existing study folder needs ``resume`` (skip the
    runs already in results.csv) or ``overwrite`` (run everything again).
    """
    inputs = (str(checkpoint), str(data), val_data, test_data)
    with claim_output(out, overwrite=overwrite or resume, command="finetune-study", inputs=inputs, folder=True):
        return _run_study(checkpoint, data, Path(out), sizes, policies, config, val_data, scratch, resume, test_data)


def _run_study(
    checkpoint: str | Path,
    data: str | Path,
    out: Path,
    sizes: Sequence[int],
    policies: Sequence[str],
    config: TrainConfig | None,
    val_data: str | Path | None,
    scratch: bool,
    resume: bool,
    test_data: str | Path | None,
) -> list[StudyRow]:
    from tomoformer.tasks.finetune import run_finetune
    from tomoformer.tasks.train import run_training

    config = config or TrainConfig()
    out = Path(out)
    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] < 1:
        raise ConfigError("study sizes must be positive integers")
    names = [str(parse_policy(p)) for p in policies]  # a bad policy fails before anything runs
    loaded = load_checkpoint(checkpoint)
    for name in names:  # e.g. freeze:K deeper than the model: fail now, not hours into the study
        apply_policy(create_model(loaded.name, **loaded.model_kwargs), name)
    names = list(dict.fromkeys(names + ([SCRATCH] if scratch else [])))
    for path in (data, val_data, test_data):  # bad data fails before the study folder is touched
        if path is not None:
            with open_dataset(path, require_buildings=True):
                pass
    out.mkdir(parents=True, exist_ok=True)
    _claim_settings(out, study_record(checkpoint, data, val_data, test_data, config), resume)
    done = _read_rows(out / "results.csv") if resume else []
    rows = list(done)
    with tempfile.TemporaryDirectory(dir=out, prefix=".subsets-") as tmp:
        subsets, val_path = _write_subsets(Path(data), val_data, sizes, config, Path(tmp))
        if not any(r.policy == NONE for r in done):
            start = time.perf_counter()
            val_iou = _iou(loaded.model, val_path, config)
            test_iou = _iou(loaded.model, test_data, config) if test_data else float("nan")
            total = count_parameters(loaded.model)[1]
            rows.append(StudyRow(0, NONE, val_iou, 0, total, time.perf_counter() - start, test_iou))
            print(f"study: no fine-tuning: val IoU {val_iou:.4f}" + (f", test IoU {test_iou:.4f}" if test_data else ""))
            write_results(rows, out / "results.csv")
        for size in sizes:
            for name in names:
                if any(r.size == size and r.policy == name for r in done):
                    continue
                run_config = dataclasses.replace(
                    config,
                    data=str(subsets[size]),
                    val_data=str(val_path),
                    out=str(out / "runs" / f"n{size}-{name.replace(':', '-')}"),
                    model=loaded.name,
                    model_kwargs=dict(loaded.model_kwargs),
                    resume=False,
                    overwrite=True,  # inside the study folder claimed above: a killed earlier try is ours
                )
                print(f"study: size {size}, policy {name}")
                if name == SCRATCH:
                    result = run_training(run_config)
                    trainable, total = count_parameters(create_model(loaded.name, **loaded.model_kwargs))
                else:
                    tuned = run_finetune(checkpoint, name, run_config)
                    result, trainable, total = tuned.train, tuned.trainable, tuned.total
                iou = result.metrics.get("best_val_iou", result.metrics.get("val_iou", float("nan")))
                test_iou = float("nan")
                if test_data and result.best_checkpoint:
                    test_iou = _iou(load_checkpoint(result.best_checkpoint).model, test_data, config)
                rows.append(StudyRow(size, name, float(iou), trainable, total, result.seconds, test_iou))
                write_results(rows, out / "results.csv")
    write_summary(rows, out)
    return rows


def study_record(
    checkpoint: str | Path,
    data: str | Path,
    val_data: str | Path | None,
    test_data: str | Path | None,
    config: TrainConfig,
) -> dict[str, Any]:
    """What every run of a study shares, stored as the study's ``config.yaml``: the checkpoint and the data by
    their fingerprints (so the same files by any spelling resume, and other files are refused), a shipped model by
    its name, and the training options."""
    from tomoformer.data.identity import input_identity

    def identity(path: str | Path | None) -> dict[str, Any] | str | None:
        return input_identity(path) if path is None or os.path.exists(path) else str(path)

    return {
        "from": identity(checkpoint),
        "data": identity(data),
        "val_data": identity(val_data),
        "test_data": identity(test_data),
        "train": {k: v for k, v in config.to_dict().items() if k not in _SET_PER_RUN},
    }


def _claim_settings(out: Path, record: dict[str, Any], resume: bool) -> None:
    """Refuse to add runs made with other settings to the study in ``out``; then store ``record`` there.

    A resumed study may add sizes and policies (they are rows of their own); anything that changes a run's numbers
    (data, checkpoint, seed, budget, optimiser, augmentation) must match what the study's earlier runs used.
    """
    stored = read_run_config(out)
    if resume and stored is not None:
        differing = differing_keys(stored, record, set(_MAY_CHANGE))
        if differing:
            raise ConfigError(
                f"{out}: --resume with other settings than the study there ({', '.join(differing)}); give the same "
                "options, or another --out"
            )
    write_text_atomic(out / "config.yaml", yaml.safe_dump(record, sort_keys=False))


def _iou(model: torch.nn.Module, data: str | Path, config: TrainConfig) -> float:
    """IoU of ``model`` over the whole of ``data``."""
    from tomoformer.data.datamodule import SignalMapDataset
    from tomoformer.evaluation.metrics import evaluate_predictions
    from tomoformer.tasks.inference import predict_probabilities

    device = "cpu" if config.accelerator == "cpu" else None
    with open_dataset(data, require_buildings=True) as source:
        dataset = SignalMapDataset(source)
        probabilities = predict_probabilities(model, dataset, batch_size=config.batch_size, device=device)
        return float(evaluate_predictions(probabilities, source.read("buildings", slice(None)))["iou"])


def _write_subsets(
    data: Path, val_data: str | Path | None, sizes: list[int], config: TrainConfig, tmp: Path
) -> tuple[dict[int, Path], Path]:
    """Nested seeded subsets of the training pool as ``.npz`` files, and the validation file to use."""
    with open_dataset(data, require_buildings=True) as source:
        n = len(source)
        if val_data is None:
            pool, val_idx = split_indices(n, config.val_fraction, config.seed)
        else:
            pool, val_idx = np.arange(n), None
        if sizes[-1] > len(pool):
            held = "" if val_data is not None else f" after holding out {n - len(pool)} for validation"
            raise ConfigError(f"{data}: size {sizes[-1]} is more than the {len(pool)} training samples{held}")
        order = np.random.default_rng(config.seed).permutation(pool)
        attrs = dict(source.attrs)

        def subset(indices: np.ndarray, path: Path) -> Path:
            indices = np.sort(indices)
            return write_dataset(path, {key: source.read(key, indices) for key in source.arrays}, attrs)

        subsets = {size: subset(order[:size], tmp / f"train-{size}.npz") for size in sizes}
        val_path = Path(val_data) if val_idx is None else subset(val_idx, tmp / "val.npz")
    return subsets, val_path


def write_results(rows: Sequence[StudyRow], path: Path) -> None:
    """``results.csv`` with one row per run, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        test = "" if math.isnan(r.test_iou) else f"{r.test_iou:.6f}"
        writer.writerow(
            [r.size, r.policy, f"{r.val_iou:.6f}", r.trainable_params, r.total_params, f"{r.seconds:.2f}", test]
        )
    write_text_atomic(path, buffer.getvalue())


def _read_rows(path: Path) -> list[StudyRow]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [
            StudyRow(
                int(r["size"]),
                r["policy"],
                float(r["val_iou"]),
                int(r["trainable_params"]),
                int(r["total_params"]),
                float(r["seconds"]),
                float(r.get("test_iou") or "nan"),
            )
            for r in csv.DictReader(f)
        ]


def write_summary(rows: Sequence[StudyRow], out: Path) -> None:
    """``iou_vs_size.png`` (IoU against set size, log x, one line per policy; ``test_iou_vs_size.png`` too when
    there is test data) and ``summary.md`` (the IoU tables)."""
    from tomoformer.evaluation.figures import save_figure

    baseline = next((r for r in rows if r.policy == NONE), None)
    runs = [r for r in rows if r.policy != NONE]
    has_test = any(not math.isnan(r.test_iou) for r in rows)
    lines = ["# Fine-tuning study", ""]
    for key, what in (("val_iou", "Best validation IoU"), ("test_iou", "Test IoU of the best-validation checkpoint")):
        if key == "test_iou" and not has_test:
            continue
        save_figure(
            _figure(runs, key, baseline), out / ("iou_vs_size.png" if key == "val_iou" else f"{key}_vs_size.png")
        )
        lines += [f"{what} per downstream training-set size.", "", *_table(runs, key), ""]
        if baseline is not None:
            lines += [f"No fine-tuning (the pretrained model as it is): {getattr(baseline, key):.4f}", ""]
    write_text_atomic(out / "summary.md", "\n".join(lines))


def _table(rows: Sequence[StudyRow], key: str) -> list[str]:
    policies = list(dict.fromkeys(r.policy for r in rows))
    sizes = sorted({r.size for r in rows})
    by_key = {(r.size, r.policy): r for r in rows}
    lines = ["| policy | trainable params | " + " | ".join(f"n={s}" for s in sizes) + " |"]
    lines.append("|" + "---|" * (len(sizes) + 2))
    for policy in policies:
        first = next(r for r in rows if r.policy == policy)
        cells = [f"{getattr(by_key[s, policy], key):.4f}" if (s, policy) in by_key else "" for s in sizes]
        share = 100 * first.trainable_params / max(first.total_params, 1)
        lines.append(f"| {policy} | {first.trainable_params:,} ({share:.1f}%) | " + " | ".join(cells) + " |")
    return lines


def _figure(rows: Sequence[StudyRow], key: str, baseline: StudyRow | None):  # -> matplotlib Figure
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for policy in dict.fromkeys(r.policy for r in rows):
        points = sorted((r.size, getattr(r, key)) for r in rows if r.policy == policy)
        style = "--" if policy == SCRATCH else "-"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=policy)
    if baseline is not None and not math.isnan(getattr(baseline, key)):
        ax.axhline(getattr(baseline, key), color="grey", linestyle=":", label="no fine-tuning")
    ax.set_xscale("log")
    # Ticks at the studied sizes, written as plain integers (log axes default to 4x10^0 style labels).
    sizes = sorted({r.size for r in rows})
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("downstream training samples")
    ax.set_ylabel("validation IoU" if key == "val_iou" else "test IoU")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
