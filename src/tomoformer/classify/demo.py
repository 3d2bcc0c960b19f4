"""``classify demo``: pretrain a small ViT on generated strokes, fine-tune it on scikit-learn's digits under every
policy, and compare with training from scratch; offline, a few minutes on a CPU.

The downstream task is deliberately small: ``train_size`` digits to train on, ``val_size`` to pick the best
epoch, and the remaining ~1,500 digits to report top-1 on (``test``). Every run has the same budget (epochs,
batch size, learning rate). Outputs in ``out``: ``data/*.npz`` (the generated and digit sets, usable with the
``classify`` commands), ``pretrain/`` and ``runs/<policy>/`` run folders, each with ``test/metrics.json``, and
``results.csv`` / ``summary.md`` with the table.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tomoformer.classify.data import load_images
from tomoformer.classify.evaluate import evaluate_checkpoint
from tomoformer.classify.models import create_classifier, resolve_model_kwargs
from tomoformer.classify.run import ClassifyConfig, run_classify
from tomoformer.classify.synthetic import SHAPES, stroke_images
from tomoformer.errors import ConfigError
from tomoformer.io import atomic_path, write_text_atomic
from tomoformer.tasks.policy import apply_policy, parse_policy

SCRATCH = "scratch"
DEMO_MODEL = "vit_tiny_patch16_224"
DEMO_MODEL_KWARGS = {"embed_dim": 64, "depth": 4, "num_heads": 4}
DEMO_POLICIES = ("full", "head", "freeze:2", "llrd:0.75", "lora:4", "lp-ft")
COLUMNS = ("policy", "test_top1", "test_top5", "val_top1", "trainable_params", "total_params", "seconds")


@dataclass
class DemoOptions:
    """Sizes and budgets of the demo; the defaults run in a few minutes on one CPU thread."""

    out: str = "runs/classify_demo"
    policies: tuple[str, ...] = DEMO_POLICIES
    pretrain_size: int = 4000
    pretrain_epochs: int = 8
    train_size: int = 100
    val_size: int = 100
    finetune_epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    model: str = DEMO_MODEL
    model_kwargs: dict = field(default_factory=lambda: dict(DEMO_MODEL_KWARGS))
    progress: bool = False


@dataclass
class DemoRow:
    """One downstream run: its policy, test/validation top-1 (and top-5), parameter counts and wall time."""

    policy: str
    test_top1: float
    test_top5: float
    val_top1: float
    trainable_params: int
    total_params: int
    seconds: float


def _save_npz(path: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=images, labels=labels, class_names=np.asarray(class_names))
    return path


def write_demo_data(out: Path, options: DemoOptions) -> dict[str, Path]:
    """``strokes.npz`` (pretraining) and the digits split into ``digits_{train,val,test}.npz`` (seeded,
    stratified so that every digit appears in the small training set)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = stroke_images(options.pretrain_size, seed=options.seed)
    paths = {"strokes": _save_npz(out / "strokes.npz", images, labels, list(SHAPES))}
    digits = load_digits()
    pixels = (digits.images[:, None] / 16.0).astype(np.float32)  # counts 0-16 of 4x4 blocks → [0, 1]
    target = digits.target.astype(np.int64)
    names = [str(d) for d in digits.target_names]
    index = np.arange(len(target))
    train, rest = train_test_split(index, train_size=options.train_size, stratify=target, random_state=options.seed)
    val, test = train_test_split(rest, train_size=options.val_size, stratify=target[rest], random_state=options.seed)
    for name, part in (("train", train), ("val", val), ("test", test)):
        part = np.sort(part)
        paths[name] = _save_npz(out / f"digits_{name}.npz", pixels[part], target[part], names)
    return paths


def run_demo(options: DemoOptions) -> list[DemoRow]:
    """Pretrain, fine-tune under every policy and from scratch; write results.csv and summary.md."""
    out = Path(options.out)
    policies = [str(parse_policy(p)) for p in options.policies]  # bad policies fail before any training
    if min(options.train_size, options.val_size) < 10:
        raise ConfigError("the digits splits need at least 10 images (one per digit)")
    probe_kwargs = resolve_model_kwargs(options.model, 10, 1, (8, 8), None, options.model_kwargs)
    for policy in policies:  # e.g. freeze:K deeper than the model: fail now, not after pretraining
        apply_policy(create_classifier(options.model, probe_kwargs), policy)
    paths = write_demo_data(out / "data", options)
    common = {"batch_size": options.batch_size, "lr": options.lr, "seed": options.seed, "progress": options.progress}
    # The runs live inside the demo folder, which the caller claimed (tomoformer.outputs): replace earlier ones.
    common |= {"accelerator": "cpu", "overwrite": True}
    print(f"pretraining {options.model} on {options.pretrain_size} generated stroke images ({len(SHAPES)} shapes)")
    pre = run_classify(
        ClassifyConfig(
            data=str(paths["strokes"]),
            out=str(out / "pretrain"),
            model=options.model,
            model_kwargs=dict(options.model_kwargs),
            max_epochs=options.pretrain_epochs,
            **common,
        )
    )
    print(f"pretraining: validation top-1 {pre.val_top1:.3f} in {pre.seconds:.0f} s")
    test = load_images(paths["test"])
    rows = []
    for policy in [*policies, SCRATCH]:
        config = ClassifyConfig(
            data=str(paths["train"]),
            val_data=str(paths["val"]),
            out=str(out / "runs" / policy.replace(":", "-")),
            model=options.model,
            model_kwargs=dict(options.model_kwargs),
            policy="full" if policy == SCRATCH else policy,
            max_epochs=options.finetune_epochs,
            **common,
        )
        print(f"--- {policy}: {options.train_size} digits, {options.finetune_epochs} epochs")
        result = run_classify(config, source=None if policy == SCRATCH else pre.best_checkpoint)
        scores = evaluate_checkpoint(result.best_checkpoint, test, result.out / "test", what="digits test set")
        rows.append(
            DemoRow(
                policy,
                float(scores["top1"]),
                float(scores["top5"]),
                result.val_top1,
                result.trainable,
                result.total,
                result.seconds,
            )
        )
        write_results(rows, out / "results.csv")
    text = summary_markdown(rows, options, pre.val_top1, len(test.labels), probe_kwargs.get("patch_size"))
    write_text_atomic(out / "summary.md", text)
    print(text)
    return rows


def write_results(rows: list[DemoRow], path: Path) -> None:
    """``results.csv``: one row per downstream run, rewritten atomically after each run."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.policy, f"{r.test_top1:.4f}", f"{r.test_top5:.4f}", f"{r.val_top1:.4f}", *_counts(r)])
    write_text_atomic(path, buffer.getvalue())


def _counts(r: DemoRow) -> list[int | str]:
    return [r.trainable_params, r.total_params, f"{r.seconds:.1f}"]


def summary_markdown(
    rows: list[DemoRow], options: DemoOptions, pretrain_top1: float, n_test: int, patch: int | None = None
) -> str:
    """The results table as Markdown, with what was run."""
    lines = [
        "# ViT classification: pretrain on strokes, fine-tune on digits",
        "",
        f"Model `{options.model}` with {options.model_kwargs}, 8x8 images, {patch}x{patch} patches. Pretrained on "
        f"{options.pretrain_size} generated stroke images ({len(SHAPES)} shapes, {options.pretrain_epochs} epochs; "
        f"validation top-1 {pretrain_top1:.3f}), then trained on {options.train_size} digits for "
        f"{options.finetune_epochs} epochs (best epoch on {options.val_size} validation digits) and tested on the "
        f"other {n_test} digits of scikit-learn's set. `scratch`: the same model from random initialisation.",
        "",
        "| policy | trainable params | test top-1 | test top-5 | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        share = 100 * r.trainable_params / max(r.total_params, 1)
        trainable = f"{r.trainable_params:,} ({share:.1f}%)"
        if r.policy != SCRATCH and parse_policy(r.policy).phased:
            trainable += f", then {r.total_params:,}"
        lines.append(f"| {r.policy} | {trainable} | {r.test_top1:.3f} | {r.test_top5:.3f} | {r.seconds:.0f} |")
    return "\n".join(lines) + "\n"
