"""Per-model throughput rows: measured figures, FLOP accounting, ratios to unet, compile."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tomoformer.perf.throughput import BenchOptions, BenchResult, add_ratios, bench_model, run_benchmarks

CPU = torch.device("cpu")
TINY = BenchOptions(frames=4, size=16, batch_size=2, steps=1, warmup=1)


def test_tomoformer_blocks_share_of_peak() -> None:
    tiny = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}
    r = bench_model("tomoformer_tiny", CPU, dataclasses.replace(TINY, inference=False), 1.0, tiny)
    assert r.infer_samples_per_s is None and r.train_samples_per_s > 0
    assert r.blocks_tflops > 0 and r.blocks_peak_fraction == pytest.approx(r.blocks_tflops)


def test_compiled_model_runs() -> None:
    options = dataclasses.replace(TINY, compile=True, compile_backend="eager", train=False)
    r = bench_model("unet", CPU, options, model_kwargs={"base_channels": 4, "depth": 1})
    assert r.compiled and r.infer_samples_per_s > 0 and r.infer_gflop_per_sample > 0


def row(model: str, frames: int, train: float | None, infer: float | None) -> BenchResult:
    return BenchResult(model, frames, 16, 2, "cpu", "32", False, 1, train, infer)


def test_ratios_relate_to_unet_at_the_same_shape() -> None:
    rows = [row("unet", 4, 10.0, 20.0), row("a", 4, 5.0, 40.0), row("a", 8, 5.0, 5.0), row("unet", 8, None, 10.0)]
    add_ratios(rows)
    assert rows[0].train_vs_unet == 1.0 and rows[1].train_vs_unet == 0.5 and rows[1].infer_vs_unet == 2.0
    assert rows[2].train_vs_unet is None and rows[2].infer_vs_unet == 0.5


def test_run_benchmarks_measures_the_unet_baseline_with_rates_flops_and_memory() -> None:
    lines: list[str] = []
    results = run_benchmarks([], [3], CPU, TINY, progress=lines.append)
    assert [r.model for r in results] == ["unet"] and len(lines) == 1  # the baseline is always measured
    r = results[0]
    assert r.error is None and r.params > 0 and r.train_vs_unet == 1.0 and r.infer_vs_unet == 1.0
    assert r.train_samples_per_s > 0 and r.infer_samples_per_s > 0 and r.train_tflops > 0
    # Backward costs about twice the forward: a training step is ~3 forwards of matmul/conv work.
    assert 2.0 < r.train_gflop_per_sample / r.infer_gflop_per_sample < 3.5
    assert r.memory_method in ("rss_sampled", "unavailable") and r.blocks_tflops is None  # no Transformer blocks
