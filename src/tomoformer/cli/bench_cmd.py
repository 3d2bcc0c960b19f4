"""``tomoformer bench``: training / inference samples/s, TFLOP/s and peak memory per model and T, with ratios to
``unet`` from the same run; optionally how much of a training step waits for the data path."""

from __future__ import annotations

import argparse
from typing import Any

from tomoformer.cli.common import device_name, non_negative_int, positive_float, positive_int, seed_value

# Without flags, a CUDA machine measures the GPU target grid; a CPU one a small grid that finishes in < 1 min.
GPU_DEFAULTS: dict[str, Any] = {
    "models": "tomoformer_tiny,tomoformer_small,tomoformer_base,unet,seednet",
    "frames": [64, 256, 1000],
    "size": 100,
    "batch_size": 32,
    "steps": 20,
    "warmup": 3,
}
CPU_DEFAULTS: dict[str, Any] = {
    "models": "tomoformer_tiny,unet,seednet",
    "frames": [64],
    "size": 48,
    "batch_size": 2,
    "steps": 3,
    "warmup": 1,
}


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "bench",
        help="measure training/inference throughput, TFLOP/s, memory and data-path stalls",
        description="Synthetic random inputs made on the device unless --data is given. Without flags: the "
        "GPU target grid on CUDA (5 models, T=64/256/1000, 100x100, batch 32), a small one on CPU.",
    )
    s = argparse.SUPPRESS
    p.add_argument("--models", default=s, help="comma-separated registry names (unet is always added as baseline)")
    p.add_argument("--frames", type=positive_int, nargs="+", default=s, help="values of T")
    p.add_argument("--size", type=positive_int, default=s, help="grid side H = W in cells")
    p.add_argument("--batch-size", type=positive_int, default=s)
    p.add_argument("--steps", type=positive_int, default=s, help="timed steps per measurement")
    p.add_argument(
        "--warmup", type=non_negative_int, default=s, help="untimed steps first (allocations, autotuning, compile)"
    )
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", help="bf16 or 32 (default: bf16 on CUDA, 32 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models (timed after warm-up)")
    p.add_argument("--compile-backend", default="inductor", help=argparse.SUPPRESS)
    p.add_argument("--channels-last", action="store_true", help="channels-last conv weights (NHWC kernels)")
    p.add_argument("--no-train", dest="train", action="store_false", help="skip the training measurement")
    p.add_argument("--no-inference", dest="inference", action="store_false", help="skip the inference measurement")
    p.add_argument(
        "--check-sync",
        action="store_true",
        help="CUDA: count host-device syncs in one MappingTask training step (sync debug mode)",
    )
    p.add_argument("--peak-tflops", type=positive_float, help="bf16 peak for the blocks' share (known GPUs: automatic)")
    p.add_argument("--threads", type=positive_int, help="torch intra-op threads (CPU figures are usually given at 1)")
    p.add_argument("--data", help="measure the data path too: a dataset (.zarr/.npz/.h5) or 'sim' (simulator)")
    p.add_argument(
        "--data-on-device",
        action="store_true",
        help="with --data: the store held in device memory, or the simulator run on the device",
    )
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="with --data: loader worker processes")
    p.add_argument("--out", help="write every figure to this .csv or .json file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--seed", type=seed_value, default=0)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from tomoformer.errors import ConfigError
    from tomoformer.models.registry import list_models
    from tomoformer.perf.bench import run_bench
    from tomoformer.perf.measure import resolve_precision
    from tomoformer.perf.throughput import BenchOptions
    from tomoformer.validation import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    defaults = GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    values = {key: getattr(args, key, default) for key, default in defaults.items()}
    models = [m.strip() for m in values["models"].split(",") if m.strip()]
    unknown = sorted(set(models) - set(list_models()))
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; see `tomoformer models`")
    for key in ("size", "batch_size", "steps"):
        if values[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1")
    if min(values["frames"]) < 1:
        raise ConfigError("--frames must be >= 1")
    if args.data_on_device and not args.data:
        raise ConfigError("--data-on-device needs --data PATH or --data sim")
    options = BenchOptions(
        size=values["size"],
        batch_size=values["batch_size"],
        steps=values["steps"],
        warmup=values["warmup"],
        precision=resolve_precision(args.precision, device),
        compile=args.compile,
        compile_backend=args.compile_backend,
        channels_last=args.channels_last,
        train=args.train,
        inference=args.inference,
        check_sync=args.check_sync,
        seed=args.seed,
    )
    from tomoformer.outputs import claim_output

    inputs = (args.data,) if args.data else ()
    with claim_output(args.out, overwrite=args.overwrite, command="bench", inputs=inputs):
        run_bench(
            models,
            values["frames"],
            device,
            options,
            peak_tflops=args.peak_tflops,
            data=args.data,
            num_workers=args.num_workers,
            data_on_device=args.data_on_device,
            out=args.out,
        )
    return 0
