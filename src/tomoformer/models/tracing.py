"""Whether the forward pass is being traced by ``torch.export`` (and so by the ONNX exporter).

Models take another, export-friendly path while exporting: a ``scan`` over frames instead of a Python loop
(which ``torch.export`` unrolls for the traced T only), every expert on the whole batch instead of
data-dependent sub-batches.
"""

from __future__ import annotations

import torch

__all__ = ["is_exporting"]


def is_exporting() -> bool:
    """True inside ``torch.export.export`` / ``torch.onnx.export(dynamo=True)`` (False on torch without the API)."""
    check = getattr(torch.compiler, "is_exporting", None)
    return bool(check is not None and check())
