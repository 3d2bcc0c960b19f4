"""Polar sampling geometry of the propagation model: ray offsets and the Cartesian lookup table.

Polar arrays are radius-major, [.., n_radii, n_angles], so that the flat index ``radius * A + angle`` of a
polar sample does not depend on how many radii a chunk of frames needs. Both tables depend only on the
grid geometry, never on the transmitter, so they are built once and cached: a frame only adds the
offset of its (integer) origin.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def ray_offsets(A: int, n_radii: int, step: float, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer (row, col) offsets [n_radii, A] of the nearest cell to every polar sample."""
    theta = torch.arange(A, dtype=torch.float64) * (2 * math.pi / A)
    radius = torch.arange(n_radii, dtype=torch.float64)[:, None] * step
    drow = torch.round(torch.sin(theta) * radius).long()
    dcol = torch.round(torch.cos(theta) * radius).long()
    return drow.to(device), dcol.to(device)


@lru_cache(maxsize=8)
def cartesian_table(ext: int, A: int, step: float, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a cell at offset (dy, dx), |dy|, |dx| <= ext, from the ray origin reads the polar grid.

    Returns flat polar indices i0, i1 (int64) of the nearest radius on the two rays around the cell's
    angle and the interpolation weight w (float32) of ray i1, each [(2 ext + 1)^2] indexed by
    (dy + ext) * (2 ext + 1) + dx + ext.
    """
    d = torch.arange(-ext, ext + 1, dtype=torch.float32)
    dy, dx = d[:, None], d[None, :]
    a = torch.remainder(torch.atan2(dy, dx) * (A / (2 * math.pi)), A)
    a0 = a.floor().clamp_max(A - 1)
    w = a - a0
    rbin = torch.round(torch.hypot(dy, dx) / step).long()
    a0 = a0.long()
    i0 = rbin * A + a0
    i1 = rbin * A + torch.remainder(a0 + 1, A)
    return i0.flatten().to(device), i1.flatten().to(device), w.flatten().to(device)


def radii_needed(origin: torch.Tensor, H: int, W: int, step: float) -> torch.Tensor:
    """Polar radii [..] each ray origin [.., 2] needs to reach its farthest grid corner (+1 for rounding)."""
    o = origin.double()
    rows = torch.maximum(o[..., 0].abs(), (H - 1 - o[..., 0]).abs())
    cols = torch.maximum(o[..., 1].abs(), (W - 1 - o[..., 1]).abs())
    return torch.ceil(torch.hypot(rows, cols) / step).long() + 1


def outside_extent(origin: torch.Tensor, H: int, W: int) -> int:
    """How far (cells) the farthest origin [F, 2] lies outside the grid (<= 0 when all are inside)."""
    return int(torch.cat([-origin, origin - origin.new_tensor([H - 1, W - 1])], -1).max())


def table_extent(origin: torch.Tensor, H: int, W: int) -> int:
    """Half-size of the Cartesian table that covers every cell seen from origins [F, 2] (a multiple of 32)."""
    ext = int(torch.cat([origin, origin.new_tensor([H - 1, W - 1]) - origin], -1).abs().max())
    return -(-ext // 32) * 32  # round up so that few distinct tables get cached


def polar_heights(
    heights: torch.Tensor,
    owner: torch.Tensor,
    origin: torch.Tensor,
    n_radii: int,
    A: int,
    step: float,
    far: int | None = None,
) -> torch.Tensor:
    """Building height [F, n_radii, A] under each polar sample around integer origins [F, 2].

    heights: [B, H, W] metres; owner: [F] which map of the batch each frame looks at. Samples off the
    grid read 0 (open ground, which never blocks). ``far`` is ``outside_extent(origin)``; passing it
    (computed from a host copy of the origins) spares a device-to-host sync.
    """
    _, H, W = heights.shape
    # Chunks need many different ray lengths: cache a few long tables and use their first rows.
    drow, dcol = (t[:n_radii] for t in ray_offsets(A, -(-n_radii // 64) * 64, step, str(heights.device)))
    # Zero-pad so that every sample lands inside the array: one add and one gather, no bounds checks.
    far = outside_extent(origin, H, W) if far is None else far
    pad = n_radii + max(far, 0) + 1
    Hp, Wp = H + 2 * pad, W + 2 * pad
    padded = torch.nn.functional.pad(heights, (pad, pad, pad, pad)).flatten()
    base = owner * (Hp * Wp) + (origin[:, 0] + pad) * Wp + origin[:, 1] + pad  # [F]
    # int32 indices halve the memory traffic of the biggest gather (index_select accepts them, take does not).
    dtype = torch.int32 if padded.numel() < 2**31 else torch.int64
    index = (base.to(dtype)[:, None, None] + (drow * Wp + dcol).to(dtype)).flatten()
    return padded.index_select(0, index).reshape(-1, n_radii, A)


def resample_to_grid(
    loss: torch.Tensor,
    origin: torch.Tensor,
    out: torch.Tensor,
    step: float,
    ext: int | None = None,
    gather: bool | None = None,
) -> torch.Tensor:
    """Polar loss [F, >= n_radii, A] back to the grid, written to out [F, H, W] and returned.

    Nearest radius, linear interpolation between the two rays around each cell's angle. ``ext`` is
    ``table_extent(origin)`` (pass it to spare a sync); ``gather`` reads the table windows with one
    gather instead of one slice per frame (default: on every device but the CPU).
    """
    F, _, A = loss.shape
    H, W = out.shape[-2:]
    ext = table_extent(origin, H, W) if ext is None else ext
    S = 2 * ext + 1
    tables = cartesian_table(ext, A, float(step), str(loss.device))
    if gather if gather is not None else loss.device.type != "cpu":
        # A GPU wants one launch, not F slices (and F host-side views); the origins stay on the device.
        window = torch.arange(H, device=origin.device)[:, None] * S + torch.arange(W, device=origin.device)
        index = ((ext - origin[:, 0]) * S + (ext - origin[:, 1]))[:, None] + window.flatten()
        i0, i1, w = (t.index_select(0, index.flatten()).view(F, -1) for t in tables)
    else:
        # On a CPU each frame's [H, W] window is a plain copy, much cheaper than a gather.
        corner = (ext - origin).tolist()
        views = (t.view(S, S) for t in tables)
        i0, i1, w = (torch.stack([t[r : r + H, c : c + W] for r, c in corner]).view(F, -1) for t in views)
    flat = loss.reshape(F, -1)
    return torch.lerp(flat.gather(1, i0), flat.gather(1, i1), w, out=out.view(F, -1)).view(F, H, W)
