"""Street-canyon light: what the 2.5D straight-ray model misses in shadowed streets.

Behind a building corner the multi-wall model leaves a street dark (every wall on the straight ray costs
wall loss), while real streets are lit by reflections off the facades and diffraction at the corners. The cheap
model here is the "recursive street" picture (Berg's street-microcell model): light travels along the street
it is in, and turning into a cross street costs a corner loss, then a loss per metre travelled:

    canyon(x) = max over outdoor cells y joined to x along streets of  gain(y) - corner_db - per_m * d(x, y)

with d the length of a path of row and column segments that stays outdoors (at most two turns: rows, columns,
rows), and the received gain becomes max(gain, canyon) on shadowed outdoor cells (the dominant path; cells in line
of sight and indoor cells keep the direct path, so the free-space decay along a lit street is unchanged). One scan
along a row is a segmented running maximum:

    max over j <= i in i's run of (g_j - a (i - j)) = cummax_j (g_j + a j) - a i

and adding M * (run index) to every value makes one ``torch.cummax`` restart at each building cell, so a pass
over all frames is a few whole-array ops: O(H W) per map, no loop over cells.
"""

from __future__ import annotations

import math

import torch

# Building cells read gain - _SINK (and blocked cells -_SINK after each scan): far below any gain (path gains
# are > -500 dB), so they never act as sources.
_SINK = 2000.0


def canyon_light(
    gain: torch.Tensor,
    outdoor: torch.Tensor,
    corner_db: torch.Tensor,
    per_cell_db: torch.Tensor,
    shadowed: torch.Tensor | None = None,
    coarse: int = 1,
) -> torch.Tensor:
    """Gain with street-canyon light, [S, T, H, W] dB (a new tensor; ``gain`` is left alone).

    gain: [S, T, H, W] dB path gain; outdoor: bool [S, H, W] (cells light may travel through); corner_db and
    per_cell_db: float [S] per sample (dB; per_cell_db = dB per metre x cell size); shadowed: bool
    [S, T, H, W], the cells that may receive canyon light (default: every outdoor cell). ``coarse`` > 1 runs the
    scans on blocks of coarse x coarse cells (the brightest outdoor cell of a block stands for it; a block is open
    when any of its cells is), coarse^2 times less work for light that varies over metres, not cells. A sample
    with an infinite corner_db keeps its gain exactly.
    """
    S, _, H, W = gain.shape
    on = torch.isfinite(corner_db)
    if not bool(on.any()):
        return gain.clone()
    per_cell = torch.where(on, per_cell_db, 0.0).to(gain.device, torch.float32) * coarse
    outdoor = outdoor[:, None].to(gain.device)
    # Building cells sink far below any gain, so that they never stand for a block or act as a source.
    x = gain + torch.where(outdoor, 0.0, -_SINK)
    blocked = ~outdoor
    if coarse > 1:
        Hc, Wc = -(-H // coarse), -(-W // coarse)
        pad = (0, Wc * coarse - W, 0, Hc * coarse - H)
        full_x, full_b = x, blocked
        if any(pad):
            full_x = torch.nn.functional.pad(x, pad, value=-_SINK)
            full_b = torch.nn.functional.pad(blocked, pad, value=True)
        # Max (and "all blocked") of a block as a running max over its coarse^2 strided views: cheaper than amax
        # over a 6-d view, which reduces along strided axes.
        x, blocked = full_x[..., 0::coarse, 0::coarse].clone(), full_b[..., 0::coarse, 0::coarse].clone()
        for i in range(coarse):
            for j in range(coarse):
                if i or j:
                    torch.maximum(x, full_x[..., i::coarse, j::coarse], out=x)
                    blocked &= full_b[..., i::coarse, j::coarse]
    n = max(x.shape[-2:])
    # M above the spread of (value + ramp) within a run, so that each run's values exceed all earlier runs'.
    big = float(2 ** math.ceil(math.log2(2 * _SINK + float(per_cell.max()) * n + 1.0)))
    a = per_cell.view(S, 1, 1, 1)
    # Column scans run on the transposed maps: a running max along the contiguous axis is ~2x faster.
    blocked_t = blocked.transpose(-1, -2).contiguous()
    row_runs, col_runs = _run_index(blocked).mul_(big), _run_index(blocked_t).mul_(big)
    # Rows, columns, rows: light turns at most twice (a cross street, and back into a parallel one).
    x = _scan(x, row_runs, a).masked_fill_(blocked, -_SINK)  # buildings never pass light on
    x = _scan(x.transpose(-1, -2).contiguous(), col_runs, a).masked_fill_(blocked_t, -_SINK)
    x = _scan(x.transpose(-1, -2).contiguous(), row_runs, a)
    x -= corner_db.to(gain.device, torch.float32).view(S, 1, 1, 1)
    if coarse > 1:
        Hc, Wc = x.shape[-2:]
        x = x[..., :, None, :, None].expand(*x.shape[:2], Hc, coarse, Wc, coarse)
        x = x.reshape(S, -1, Hc * coarse, Wc * coarse)[..., :H, :W]
    # Only shadowed outdoor cells receive canyon light (x is a fresh tensor here: filled in place).
    dark = ~outdoor if shadowed is None else ~shadowed.to(gain.device) | ~outdoor
    return torch.maximum(gain, x.masked_fill_(dark, -math.inf))


def _run_index(blocked: torch.Tensor) -> torch.Tensor:
    """Float index of the run of cells each cell belongs to along the last axis: +1 at every run of blocked cells."""
    starts = blocked.clone()
    starts[..., 1:] &= ~blocked[..., :-1]
    return starts.cumsum(-1, dtype=torch.float32)


def _scan(x: torch.Tensor, runs: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Both directions of the segmented running maximum with decay ``a`` dB per cell along the last axis."""
    n = x.shape[-1]
    ramp = torch.arange(n, device=x.device, dtype=torch.float32) * a  # [S, 1, 1, n]
    offset = ramp + runs
    forward = torch.cummax(x + offset, -1).values.sub_(offset)
    # Backward: max over j >= i of (x_j - a j - M run_j) + a i + M run_i; later runs are lower, so it restarts too.
    backward = torch.cummax((x - offset).flip(-1), -1).values.flip(-1).add_(offset)
    return torch.maximum(forward, backward)
