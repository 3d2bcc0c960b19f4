"""The whole job on the CPU in minutes (``tomoformer demo``): simulate, train TomoFormer and the baselines, compare.

It lives in tasks/ because everything it runs is a task-layer call (simulate a dataset, ``run_training``,
``evaluate_models``); the classify/experts pipelines play no part in it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tomoformer.errors import ConfigError
from tomoformer.io import write_text_atomic
from tomoformer.outputs import claim_output

# The learned models; every one gets the same epochs and learning rate (a fair comparison). ``seednet_small`` is
# the per-frame CNN + Transformer design with one dense layer to every cell, at its CPU widths, its dense head sized
# to the demo's maps. Fitted baselines need no epochs.
DEMO_MODELS: tuple[str, ...] = ("tomoformer_tiny", "unet", "seednet_small")
DEMO_LR = 1e-3
DEMO_FITTED = ("threshold", "rti")


@dataclass(frozen=True)
class DemoOptions:
    """What ``tomoformer demo`` runs: sizes of the simulated data and which models, for how long.

    The defaults are the quick demo (a few minutes on 2 CPU cores: two learned models and the fitted threshold;
    ``rti``, whose fit alone takes minutes, is left to :data:`FULL_DEMO`, the longer run of ``tomoformer demo
    --full``)."""

    out: str = "runs/demo"
    n_train: int = 128  # simulated training areas (10% of them validate)
    n_test: int = 64  # held-out test areas, from another seed
    size: int = 32  # map side in cells of 2 m
    frames: int = 8  # T: signal maps per area
    base_epochs: int = 4  # epochs of every learned model, before the ``epochs`` scale
    batch_size: int = 8
    epochs: float = 1.0  # scales every learned model's epoch budget
    models: tuple[str, ...] = ("tomoformer_tiny", "unet", "threshold")
    seed: int = 0
    progress: bool = True
    overwrite: bool = False


# The longer demo: every model, more areas, T = 16 and 20 epochs (about 23 minutes alone on 2 CPU cores).
FULL_DEMO = DemoOptions(
    n_train=320, n_test=64, size=48, frames=16, base_epochs=20, batch_size=16, models=(*DEMO_MODELS, *DEMO_FITTED)
)


def run_demo(options: DemoOptions) -> dict[str, dict[str, Any]]:
    """Simulate, train and compare; writes ``out/report.html``, ``out/summary.json`` (returned: metrics and training
    seconds per model), ``out/summary.md`` (the table), ``out/checkpoints/<model>.ckpt`` and the data and run
    folders under ``out``."""
    with claim_output(options.out, overwrite=options.overwrite, command="demo", folder=True):
        return _run(options)


def _run(options: DemoOptions) -> dict[str, dict[str, Any]]:
    from tomoformer.checkpoint import load_checkpoint
    from tomoformer.data.simulated import simulate_dataset
    from tomoformer.sim.config import SimConfig
    from tomoformer.tasks.evaluate import evaluate_models, print_table
    from tomoformer.tasks.train import TrainConfig, run_training

    start = time.perf_counter()
    out = Path(options.out)
    names = list(options.models)
    unknown = sorted(set(names) - set(DEMO_MODELS) - set(DEMO_FITTED))
    if unknown:
        raise ConfigError(f"--models: not a demo model: {', '.join(unknown)}")
    config = SimConfig.from_dict({"size": options.size, "frames": options.frames, "style": "mixed"})
    data = out / "data"
    paths = {}
    for split, n, seed in (("train", options.n_train, options.seed), ("test", options.n_test, options.seed + 10_000)):
        paths[split] = data / f"{split}.zarr"
        print(f"simulating {n} {split} samples ({options.frames} maps of {options.size}x{options.size} cells)")
        simulate_dataset(
            paths[split], n=n, config=config, seed=seed, progress=options.progress, overwrite=options.overwrite
        )

    models = {}
    timings: dict[str, float] = {}
    epochs_run: dict[str, int] = {}
    for name in names:
        epochs = max(1, round(options.base_epochs * options.epochs))
        print(f"training {name}" + ("" if name in DEMO_FITTED else f" for {epochs} epochs"))
        if name not in DEMO_FITTED:
            epochs_run[name] = epochs
        train = TrainConfig(
            data=str(paths["train"]),
            out=str(out / "runs" / name),
            model=name,
            max_epochs=epochs,
            batch_size=options.batch_size,
            model_kwargs={"img_size": options.size} if name.startswith("seednet") else {},
            lr=DEMO_LR,
            seed=options.seed,
            accelerator="cpu",
            progress=options.progress,
            overwrite=options.overwrite,
        )
        result = run_training(train)
        timings[name] = round(result.seconds, 1)  # one rounding for the notes, the table and summary.json
        checkpoint = out / "checkpoints" / f"{name}.ckpt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.best_checkpoint, checkpoint)
        models[name] = load_checkpoint(checkpoint).model

    results = evaluate_models(
        models,
        paths["test"],
        out,
        batch_size=16,
        device="cpu",
        title="TomoFormer demo: held-out simulated cities",
        notes=_notes(options, timings, epochs_run),
    )
    summary: dict[str, Any] = {
        name: {
            **{k: v for k, v in metrics.items() if k != "per_group"},
            "train_seconds": round(timings[name], 1),
        }
        for name, metrics in results.items()
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
    seconds = time.perf_counter() - start
    write_text_atomic(out / "summary.md", results_markdown(summary, _notes(options, timings, epochs_run), seconds))
    print_table(results)
    print(f"report: {out / 'report.html'}  summary: {out / 'summary.json'}, {out / 'summary.md'}  ({seconds:.0f} s)")
    return summary


def results_markdown(summary: dict[str, dict[str, Any]], notes: str, seconds: float) -> str:
    """The demo's table as Markdown, best IoU first: model, IoU, F1, precision, recall and training seconds."""
    columns = ("iou", "f1", "precision", "recall")
    lines = [
        "# tomoformer demo: held-out simulated cities",
        "",
        notes + f" Whole command: {seconds:.0f} s.",
        "",
        "| model | " + " | ".join(columns) + " | train s |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for name, metrics in sorted(summary.items(), key=lambda kv: -kv[1]["iou"]):
        values = " | ".join(f"{metrics[c]:.3f}" for c in columns)
        lines.append(f"| `{name}` | {values} | {metrics['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _notes(options: DemoOptions, timings: dict[str, float], epochs: dict[str, int]) -> str:
    times = ", ".join(f"{k} {v:.0f} s" + (f" ({epochs[k]} epochs)" if k in epochs else "") for k, v in timings.items())
    return (
        f"Simulated mixed-style cities, {options.size}x{options.size} cells of 2 m, T={options.frames} maps per area; "
        f"{options.n_train} training areas (10% of them for validation), {options.n_test} held-out test areas; "
        f"every learned model trained with batch {options.batch_size} at learning rate {DEMO_LR:g}. "
        f"Training time on the CPU: {times}."
    )
