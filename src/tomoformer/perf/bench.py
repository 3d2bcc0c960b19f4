"""``tomoformer bench`` end to end: throughput of each model at each T, optionally fed by a real data path, printed
as a table and written as JSON."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from tomoformer.perf.throughput import BenchOptions


def run_bench(
    models: list[str],
    frames: list[int],
    device: torch.device,
    options: BenchOptions,
    peak_tflops: float | None = None,
    data: str | None = None,
    num_workers: int = 0,
    data_on_device: bool = False,
    out: str | os.PathLike[str] | None = None,
) -> list[Any]:
    """Measure ``models`` at every T in ``frames`` on ``device``; with ``data`` (a store or ``sim``) also each
    model's training step fed by that loader (its T and H replace ``frames`` and ``options.size``). Prints the
    table, writes the results and environment to ``out`` (JSON) if given, and returns the results."""
    from tomoformer.perf.report import environment, format_table, write_results
    from tomoformer.perf.throughput import bf16_peak_tflops, run_benchmarks

    meta = environment(device)
    print(
        f"bench on {meta['device_name']} ({device}, {meta['threads']} threads), precision {options.precision}"
        f"{', compiled' if options.compile else ''}: T={frames}, {options.size}x{options.size}, "
        f"batch {options.batch_size}, {options.steps} timed steps"
    )
    peak = peak_tflops or bf16_peak_tflops(device)
    loader = None
    if data:
        from tomoformer.perf.datapath import open_loader

        loader, t, h = open_loader(
            data, device, options.batch_size, num_workers, data_on_device, frames[0], options.size
        )
        frames, options = [t], dataclasses.replace(options, size=h)
    results = run_benchmarks(models, frames, device, options, peak)
    if loader is not None:
        source = f"{data}{' (on device)' if data_on_device else f', {num_workers} workers'}"
        _add_data_path(results, loader, device, options, source)
    print()
    print(format_table(results))
    if out:
        meta.update(precision=options.precision, compiled=options.compile, peak_tflops=peak)
        print(f"wrote {write_results(out, results, meta)}")
    return results


def _add_data_path(results: list, loader: Any, device: torch.device, options: BenchOptions, source: str) -> None:
    """Each model's training step fed by the real loader: samples/s, host wait and stall fractions."""
    from tomoformer.perf.datapath import measure_data_path
    from tomoformer.perf.measure import train_step
    from tomoformer.perf.throughput import prepare_model

    for result in results:
        if result.error:
            continue
        model = prepare_model(result.model, device, options).train()
        step = train_step(model, device, options.precision)
        data = measure_data_path(step, loader, device, options.steps, options.warmup, source)
        result.extra.update(
            data_source=data.source,
            data_samples_per_s=data.samples_per_s,
            host_wait_fraction=data.host_wait_fraction,
            stall_fraction=data.stall_fraction,
        )
