"""Measurement primitives: synthetic batches on the device, train/inference steps, FLOP counts, peak memory.

Timing rule: the device is synchronised only at measurement boundaries (before the first and after the last
timed step), never inside a step, so the numbers include any host-device synchronisation the model itself
causes but none that the benchmark adds.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tomoformer.errors import ConfigError
from tomoformer.models.protocol import forward_train_of
from tomoformer.tasks.losses import dice_loss

Batch = dict[str, Tensor]
Step = Callable[[Batch], Any]


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """ "bf16" or "32"; ``None``/"auto" picks bf16 on CUDA and float32 elsewhere (like ``tomoformer train``)."""
    if precision in (None, "auto"):
        return "bf16" if device.type == "cuda" else "32"
    aliases = {"bf16": "bf16", "bf16-mixed": "bf16", "32": "32", "32-true": "32", "fp32": "32"}
    if precision not in aliases:
        raise ConfigError(f"precision must be bf16 or 32, got {precision!r}")
    return aliases[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision == "bf16"`` (the dtype training uses on CUDA), else a no-op."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for queued device work; only ever called at measurement boundaries."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(batch_size: int, frames: int, size: int, device: torch.device, seed: int = 0) -> Batch:
    """Random inputs drawn directly on ``device`` (no host copy): signals ``[B, T, H, W]`` dB in -140..-60 with
    10 % of the cells missing (NaN), tx_pos ``[B, T, 3]`` cells, buildings ``[B, H, W]`` in {0, 1}."""
    g = torch.Generator(device=device).manual_seed(seed)
    shape = (batch_size, frames, size, size)
    signals = -140.0 + 80.0 * torch.rand(shape, generator=g, device=device)
    signals = signals.masked_fill(torch.rand(shape, generator=g, device=device) < 0.1, float("nan"))
    tx_pos = torch.rand((batch_size, frames, 3), generator=g, device=device) * size
    buildings = (torch.rand((batch_size, size, size), generator=g, device=device) < 0.3).float()
    return {"signals": signals, "tx_pos": tx_pos, "buildings": buildings}


def mapping_loss(logits: Tensor, buildings: Tensor) -> Tensor:
    """The training loss of :class:`~tomoformer.tasks.mapping.MappingTask` (BCE + Dice), in float32."""
    return F.binary_cross_entropy_with_logits(logits.float(), buildings.float()) + dice_loss(logits, buildings)


def training_forward(model: nn.Module) -> Callable[..., tuple[Tensor, list[tuple[float, Tensor]]]]:
    """``model.forward_train`` (logits and weighted auxiliary logits, as MappingTask trains), else ``model`` with
    no auxiliary outputs."""
    forward_train = forward_train_of(model)
    if forward_train is not None:
        return forward_train
    return lambda signals, tx_pos=None: (model(signals, tx_pos), [])


def train_step(model: nn.Module, device: torch.device, precision: str, forward: Callable | None = None) -> Step:
    """One optimiser step per call (AdamW, fused on CUDA) on MappingTask's loss; returns the detached loss.

    ``forward`` (default :func:`training_forward`) runs the model, e.g. a ``torch.compile``-d version of it.
    Nothing in the step reads a value back to the host.
    """
    run = forward if forward is not None else training_forward(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step(batch: Batch) -> Tensor:
        with autocast(device, precision):
            logits, auxiliary = run(batch["signals"], batch.get("tx_pos"))
        loss = mapping_loss(logits, batch["buildings"])
        for weight, aux_logits in auxiliary:
            loss = loss + weight * mapping_loss(aux_logits, batch["buildings"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def inference_step(model: nn.Module, device: torch.device, precision: str, forward: Callable | None = None) -> Step:
    """One forward pass without autograd per call; returns the logits ``[B, H, W]``.

    ``no_grad`` rather than ``inference_mode``: FlopCounterMode's module tracker fails under the latter, and
    for these models the two run at the same speed.
    """
    run = forward if forward is not None else model

    def step(batch: Batch) -> Tensor:
        with torch.no_grad(), autocast(device, precision):
            return run(batch["signals"], batch.get("tx_pos"))

    return step


def time_steps(step: Step, batch: Batch, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``step`` on the same batch, synchronised only before and after."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    synchronize(device)
    return time.perf_counter() - start


def _sdpa_cpu_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for the CPU flash-attention kernels, which ``torch.utils.flop_counter`` does not count
    (it knows the CUDA ones); without them attention would be missing from CPU figures."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    formulas: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        # Formulas receive shapes (FlopCounterMode wraps them), like torch's own.
        def forward(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
            return fc.sdpa_flop_count(query, key, value)

        formulas[aten._scaled_dot_product_flash_attention_for_cpu] = forward
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):

        def backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
            return fc.sdpa_backward_flop_count(grad_out, query, key, value)

        formulas[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward
    return formulas


def count_flops(step: Step, batch: Batch) -> tuple[int, dict[str, int]]:
    """Run ``step(batch)`` once under :class:`FlopCounterMode`; returns (total FLOPs, FLOPs per module).

    Counts matrix products, convolutions and attention (the work tensor cores do), not element-wise ops, so the
    achieved TFLOP/s compare with the hardware's matmul peak. Must run on an eager (not compiled) model.
    """
    with FlopCounterMode(display=False, custom_mapping=_sdpa_cpu_formulas()) as counter:
        step(batch)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


class PeakMemory:
    """Peak memory of the code inside the ``with`` block, in bytes (``.peak``) and how it was measured (``.method``).

    CUDA: ``torch.cuda.max_memory_allocated`` (reset on entry), all tensors alive at the peak, parameters and
    optimiser state included. CPU: the resident set size sampled every 2 ms by a thread, minus the size on entry
    (after returning freed memory to the OS); a rough figure that leaves out what was resident before (e.g. the
    parameters), ``None`` where /proc is missing.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None
        self.method = "cuda_max_allocated" if device.type == "cuda" else "rss_sampled"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = 0
        self._max = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _release_freed_memory()
        self._base = self._max = _rss_bytes() or 0
        if self._base:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self.method = "unavailable"
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._max = max(self._max, _rss_bytes() or 0)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, _rss_bytes() or 0)
            self.peak = self._max - self._base


def _release_freed_memory() -> None:
    """Hand memory freed by earlier measurements back to the OS (glibc ``malloc_trim``), so that the resident
    size grows again when this measurement needs it; a no-op where glibc is missing."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(name).malloc_trim(0)


def _rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def free_device_memory(device: torch.device) -> Iterator[None]:
    """Release cached blocks after a measurement so the next model starts from the same state."""
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
