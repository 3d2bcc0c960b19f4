"""Model throughput: training and inference samples/s, achieved TFLOP/s and peak memory on synthetic batches.

One :class:`BenchResult` per (model, T); :func:`add_ratios` relates every row to the ``unet`` row of the same
(T, size, batch) measured in the same run, so ratios never mix machines or load conditions.
"""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tomoformer.models.protocol import requires_fit
from tomoformer.models.registry import create_model
from tomoformer.perf.measure import (
    Batch,
    PeakMemory,
    count_flops,
    free_device_memory,
    inference_step,
    synchronize,
    synthetic_batch,
    time_steps,
    train_step,
    training_forward,
)

BASELINE = "unet"

# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets), matched against the device name in this order.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("L40S", 362.0))


@dataclass
class BenchOptions:
    """What to measure and how; ``warmup`` steps run before timing (the first one also counts the FLOPs)."""

    frames: int = 64
    size: int = 100
    batch_size: int = 8
    steps: int = 10
    warmup: int = 2
    precision: str = "32"
    compile: bool = False
    compile_backend: str = "inductor"
    channels_last: bool = False
    train: bool = True
    inference: bool = True
    check_sync: bool = False
    seed: int = 0


@dataclass
class BenchResult:
    """One row of the table; rates in samples/s, FLOPs per sample, memory in MiB; None = not measured."""

    model: str
    frames: int
    size: int
    batch_size: int
    device: str
    precision: str
    compiled: bool
    params: int
    train_samples_per_s: float | None = None
    infer_samples_per_s: float | None = None
    train_gflop_per_sample: float | None = None
    infer_gflop_per_sample: float | None = None
    train_tflops: float | None = None
    infer_tflops: float | None = None
    blocks_tflops: float | None = None
    blocks_peak_fraction: float | None = None
    syncs_per_step: int | None = None
    train_peak_mib: float | None = None
    infer_peak_mib: float | None = None
    memory_method: str = ""
    train_vs_unet: float | None = None
    infer_vs_unet: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """Flat dict for CSV/JSON (``extra`` merged in, e.g. data-path figures)."""
        values = dataclasses.asdict(self)
        values.update(values.pop("extra"))
        return values


def bf16_peak_tflops(device: torch.device) -> float | None:
    """The bf16 dense peak of a known GPU (None for CPUs and unknown cards: pass ``--peak-tflops`` then)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def prepare_model(name: str, device: torch.device, options: BenchOptions, **kwargs: Any) -> nn.Module:
    """The registry model on ``device`` (seeded init), channels-last when asked (conv weights: cuDNN then runs
    NHWC kernels; the activations follow the weights)."""
    torch.manual_seed(options.seed)
    model = create_model(name, **kwargs).to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _compiled(fn: Any, options: BenchOptions) -> Any:
    # dynamic=False: the benchmark shapes are fixed, and static shapes give the fastest kernels.
    return torch.compile(fn, backend=options.compile_backend, dynamic=False) if options.compile else None


def bench_model(
    name: str,
    device: torch.device,
    options: BenchOptions,
    peak_tflops: float | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> BenchResult:
    """Measure one model at ``options.frames`` x ``options.size``²; an out-of-memory error becomes ``error``."""
    model = prepare_model(name, device, options, **(model_kwargs or {}))
    result = BenchResult(
        model=name,
        frames=options.frames,
        size=options.size,
        batch_size=options.batch_size,
        device=str(device),
        precision=options.precision,
        compiled=options.compile,
        params=sum(p.numel() for p in model.parameters()),
    )
    batch = synthetic_batch(options.batch_size, options.frames, options.size, device, options.seed)
    try:
        with free_device_memory(device):
            # Fitted models (threshold, rti) have no gradient step; they are measured at inference only.
            if options.train and not requires_fit(model):
                _bench_train(model, batch, device, options, result)
            if options.inference:
                _bench_inference(model, batch, device, options, result)
            if options.train and hasattr(model, "blocks"):
                _bench_blocks(model, device, options, result, peak_tflops)
            if options.check_sync:
                result.syncs_per_step = count_step_syncs(name, device, options)
    except torch.OutOfMemoryError:
        result.error = "out of memory"
    finally:
        del model, batch
        gc.collect()
    return result


def _bench_train(model: nn.Module, batch: Batch, device: torch.device, o: BenchOptions, r: BenchResult) -> None:
    model.train()
    compiled = _compiled(training_forward(model), o)
    # Counting runs the eager model: FlopCounterMode cannot see inside a compiled graph.
    flops, _ = count_flops(train_step(model, device, o.precision), batch)
    step = train_step(model, device, o.precision, compiled)
    with PeakMemory(device) as memory:
        for _ in range(max(o.warmup, 1)):
            step(batch)
        seconds = time_steps(step, batch, o.steps, device)
    r.memory_method = memory.method
    r.train_samples_per_s = o.steps * o.batch_size / seconds
    r.train_gflop_per_sample = flops / o.batch_size / 1e9
    r.train_tflops = flops * o.steps / seconds / 1e12
    r.train_peak_mib = None if memory.peak is None else memory.peak / 2**20


def _bench_inference(model: nn.Module, batch: Batch, device: torch.device, o: BenchOptions, r: BenchResult) -> None:
    model.eval()
    compiled = _compiled(model, o)
    flops, _ = count_flops(inference_step(model, device, o.precision), batch)
    step = inference_step(model, device, o.precision, compiled)
    with PeakMemory(device) as memory:
        for _ in range(max(o.warmup, 1)):
            step(batch)
        seconds = time_steps(step, batch, o.steps, device)
    r.infer_samples_per_s = o.steps * o.batch_size / seconds
    r.infer_gflop_per_sample = flops / o.batch_size / 1e9
    r.infer_tflops = flops * o.steps / seconds / 1e12
    r.infer_peak_mib = None if memory.peak is None else memory.peak / 2**20


def _bench_blocks(
    model: nn.Module, device: torch.device, o: BenchOptions, r: BenchResult, peak_tflops: float | None
) -> None:
    """The Transformer blocks alone (forward + backward on random tokens of the model's grid): how close the
    dense part of the model gets to the matmul peak, without the per-frame and convolutional parts."""
    blocks: nn.Module = model.blocks
    patch = int(getattr(model, "patch_size", 1))
    n_tokens = (-(-o.size // patch)) ** 2
    dim = int(getattr(model, "embed_dim", 0))
    g = torch.Generator(device=device).manual_seed(o.seed)
    tokens = torch.randn((o.batch_size, n_tokens, dim), generator=g, device=device, requires_grad=True)
    blocks.train()
    batch = {"tokens": tokens}
    # Counting runs the eager blocks: FlopCounterMode cannot see inside a compiled graph.
    flops, _ = count_flops(_blocks_step(blocks, device, o.precision), batch)
    step = _blocks_step(_compiled(blocks, o) or blocks, device, o.precision)
    for _ in range(max(o.warmup, 1)):
        step(batch)
    seconds = time_steps(step, batch, o.steps, device)
    blocks.zero_grad(set_to_none=True)
    r.blocks_tflops = flops * o.steps / seconds / 1e12
    if peak_tflops:
        r.blocks_peak_fraction = r.blocks_tflops / peak_tflops


def _blocks_step(blocks: nn.Module, device: torch.device, precision: str) -> Any:
    """Forward and backward of ``blocks`` on ``batch["tokens"]`` (gradients accumulate; no optimiser)."""

    def step(batch: Batch) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = blocks(batch["tokens"])
        out.float().square().mean().backward()

    return step


def count_step_syncs(name: str, device: torch.device, options: BenchOptions) -> int | None:
    """Host-device synchronisations in one :class:`~tomoformer.tasks.mapping.MappingTask` training step
    (forward, loss, metric update, logging, backward, AdamW), counted by CUDA's sync debug mode after one
    warm-up step; None off CUDA, where there is nothing to wait for."""
    if device.type != "cuda":
        return None
    import warnings

    from tomoformer.perf.measure import autocast
    from tomoformer.tasks.mapping import MappingTask

    task = MappingTask(model=name).to(device)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4, fused=True)
    batch = synthetic_batch(options.batch_size, options.frames, options.size, device, options.seed)

    def step() -> None:
        with autocast(device, options.precision):
            loss = task.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer warns; that is not a sync
        step()
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def add_ratios(results: list[BenchResult]) -> None:
    """Set ``train_vs_unet`` / ``infer_vs_unet`` = samples/s of the row over that of ``unet`` at the same
    (frames, size, batch); rows without such a baseline keep None."""
    base = {(r.frames, r.size, r.batch_size): r for r in results if r.model == BASELINE and r.error is None}
    for r in results:
        ref = base.get((r.frames, r.size, r.batch_size))
        if ref is None:
            continue
        if r.train_samples_per_s and ref.train_samples_per_s:
            r.train_vs_unet = r.train_samples_per_s / ref.train_samples_per_s
        if r.infer_samples_per_s and ref.infer_samples_per_s:
            r.infer_vs_unet = r.infer_samples_per_s / ref.infer_samples_per_s


def run_benchmarks(
    models: list[str],
    frames: list[int],
    device: torch.device,
    options: BenchOptions,
    peak_tflops: float | None = None,
    progress: Any = print,
) -> list[BenchResult]:
    """Every model at every T (``unet`` first, as the baseline of the ratios), ratios filled in."""
    ordered = [BASELINE, *[m for m in models if m != BASELINE]]
    results = []
    for t in frames:
        for name in ordered:
            opts = dataclasses.replace(options, frames=t)
            result = bench_model(name, device, opts, peak_tflops)
            synchronize(device)
            results.append(result)
            if progress is not None:
                progress(_progress_line(result))
    add_ratios(results)
    return results


def _progress_line(r: BenchResult) -> str:
    if r.error:
        return f"{r.model} T={r.frames}: {r.error}"
    parts = [f"{r.model} T={r.frames}:"]
    if r.train_samples_per_s is not None:
        parts.append(f"train {r.train_samples_per_s:.1f}/s")
    if r.infer_samples_per_s is not None:
        parts.append(f"infer {r.infer_samples_per_s:.1f}/s")
    return " ".join(parts)
