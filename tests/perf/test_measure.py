"""FLOP counting, synthetic batches, timing and memory helpers of the benchmark."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tomoformer.errors import ConfigError
from tomoformer.perf.measure import (
    PeakMemory,
    count_flops,
    resolve_precision,
    synthetic_batch,
    time_steps,
    train_step,
)
from tomoformer.validation import resolve_device

CPU = torch.device("cpu")


def test_flops_of_a_linear_training_step_are_three_forwards() -> None:
    layer = nn.Linear(8, 4)
    x = torch.randn(5, 8)
    total, per_module = count_flops(lambda batch: layer(batch["x"]).sum().backward(), {"x": x})
    # forward 2*B*in*out; backward: weight gradient and input-free (x needs no grad) -> one more matmul.
    assert total == 2 * 5 * 8 * 4 * 2
    assert per_module["Global"] == total


def test_cpu_attention_is_counted() -> None:
    q = torch.randn(2, 3, 10, 8)
    total, _ = count_flops(lambda batch: F.scaled_dot_product_attention(batch["q"], batch["q"], batch["q"]), {"q": q})
    assert total == 4 * 2 * 3 * 10 * 10 * 8  # QK^T and AV, 2 FLOPs per multiply-add


def test_synthetic_batch_is_seeded_and_has_missing_cells() -> None:
    a, b = synthetic_batch(2, 5, 12, CPU, seed=1), synthetic_batch(2, 5, 12, CPU, seed=1)
    assert a["signals"].shape == (2, 5, 12, 12) and a["tx_pos"].shape == (2, 5, 3)
    assert a["buildings"].shape == (2, 12, 12) and set(a["buildings"].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(a["signals"], b["signals"], equal_nan=True)
    missing = torch.isnan(a["signals"]).float().mean().item()
    assert 0.03 < missing < 0.2
    valid = a["signals"][~torch.isnan(a["signals"])]
    assert valid.min() >= -140 and valid.max() <= -60


def test_train_step_learns_and_time_steps_counts_calls() -> None:
    class Pixel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(()))

        def forward(self, signals: torch.Tensor, tx_pos: torch.Tensor | None = None) -> torch.Tensor:
            return self.bias.expand(signals.shape[0], *signals.shape[-2:])

    model = Pixel()
    batch = synthetic_batch(2, 2, 4, CPU)
    batch["buildings"] = torch.ones(2, 4, 4)
    step = train_step(model, CPU, "32")
    calls = []
    seconds = time_steps(lambda b: calls.append(step(b)), batch, 3, CPU)
    assert len(calls) == 3 and seconds > 0
    assert calls[-1] < calls[0] and model.bias.item() > 0  # all-building target: the logit rises


def test_resolve_device_and_precision() -> None:
    assert resolve_precision("auto", CPU) == "32" and resolve_precision("bf16-mixed", CPU) == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp8", CPU)
    assert resolve_device("cpu") == CPU
    with pytest.raises(ConfigError):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            resolve_device("cuda")


def test_peak_memory_sees_a_large_allocation_on_cpu() -> None:
    with PeakMemory(CPU) as memory:
        x = torch.ones(16 * 2**20)  # 64 MiB, touched, so resident
        del x
    if memory.method == "unavailable":
        pytest.skip("no /proc/self/statm here")
    assert memory.peak is not None and memory.peak > 40 * 2**20
