"""2.5D multi-wall propagation in O(H*W) per map via polar resampling around each transmitter.

Deterministic part (``path_gain_db``), in dB path gain (negative numbers):

    gain = -FSPL(d_3D, f) - wall_loss_db * (#buildings entered) - indoor_loss_db_per_m * (metres indoors)

A building sample blocks the straight tx->rx ray only where it is taller than the ray there (2.5D).
Per map, the building heights are resampled on ``n_angles`` rays x ``n_radii`` radii (step
``radial_step_cells``). Whether a sample at radius r' with height b is "inside" depends on the receiver
distance R (the ray height at r' is h_tx + (h_rx - h_tx) r'/R), but always on ONE interval of R:

* b > max(h_tx, h_rx): blocks every receiver behind it, R >= r';
* b <= min(h_tx, h_rx): never blocks;
* h_tx > b > h_rx (tx above): blocks r' <= R < R_c = r' (h_tx - h_rx) / (h_tx - b) (near receivers only);
* h_rx > b > h_tx (tx below): blocks R > R_c = r' (h_rx - h_tx) / (b - h_tx) (far receivers only).

A wall is crossed on entering a building: sample k is inside and k-1 is not, i.e. R in I_k minus
I_(k-1), which is at most two intervals. Each interval adds its loss to a difference array over R bins
(scatter_add of +v at its start, -v at its end) and one cumsum gives the loss for every receiver
distance on the ray: O(n_radii) per ray. Receivers pick their bin (nearest radius, angle interpolated).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from scipy.fft import next_fast_len

from tomoformer.sim.config import SimConfig

SPEED_OF_LIGHT = 299_792_458.0
# Bound on polar elements processed at once (frames are chunked): ~4 int64 index tensors of this size.
_MAX_POLAR_ELEMENTS = 1 << 21


def fspl_db(distance_m: torch.Tensor, frequency_hz: float) -> torch.Tensor:
    """Friis free-space path loss 20 log10(4 pi d f / c) in dB (positive)."""
    return 20.0 * torch.log10(distance_m) + 20.0 * math.log10(4 * math.pi * frequency_hz / SPEED_OF_LIGHT)


def path_gain_db(heights: torch.Tensor, tx_pos: torch.Tensor, config: SimConfig) -> torch.Tensor:
    """Deterministic path gain of every cell for every transmitter.

    heights: [B, H, W] building heights in metres (0 = open); tx_pos: [B, T, 3] (row, col in cells,
    height in metres; may lie outside the grid). Returns float32 [B, T, H, W] dB (<= 0 far from tx).
    Uses config.cell_size_m, frequency_hz, rx_height_m, wall_loss_db, indoor_loss_db_per_m,
    n_angles, radial_step_cells and min_distance_m.
    """
    B, H, W = heights.shape
    T = tx_pos.shape[1]
    heights = heights.float()
    tx_pos = tx_pos.to(device=heights.device, dtype=torch.float32)
    n_radii = _n_radii(tx_pos, H, W, config.radial_step_cells)
    frames = max(1, _MAX_POLAR_ELEMENTS // (B * config.n_angles * n_radii))
    out = [_path_gain_chunk(heights, tx_pos[:, t : t + frames], config, n_radii) for t in range(0, T, frames)]
    return torch.cat(out, dim=1)


def _n_radii(tx_pos: torch.Tensor, H: int, W: int, step: float) -> int:
    """Radial samples needed to reach the farthest grid corner from every transmitter."""
    rows = torch.maximum(tx_pos[..., 0].abs(), (H - 1 - tx_pos[..., 0]).abs())
    cols = torch.maximum(tx_pos[..., 1].abs(), (W - 1 - tx_pos[..., 1]).abs())
    return math.ceil(float(torch.hypot(rows, cols).max()) / step) + 2


@lru_cache(maxsize=8)
def _ray_offsets(A: int, n_radii: int, step: float, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer (row, col) offsets [A, n_radii] of the nearest cell to every polar sample."""
    theta = torch.arange(A, dtype=torch.float64) * (2 * math.pi / A)
    radius = torch.arange(n_radii, dtype=torch.float64) * step
    drow = torch.round(torch.sin(theta)[:, None] * radius).long()
    dcol = torch.round(torch.cos(theta)[:, None] * radius).long()
    return drow.to(device), dcol.to(device)


def _polar_heights(heights: torch.Tensor, origin: torch.Tensor, A: int, n_radii: int, step: float):
    """Building height [B, T, A, n_radii] under each polar sample around integer origins [B, T, 2]."""
    B, H, W = heights.shape
    drow, dcol = _ray_offsets(A, n_radii, step, str(heights.device))
    # Zero-pad so that every sample lands inside the array: one add and one gather, no bounds checks.
    far = int(torch.cat([-origin, origin - torch.tensor([H - 1, W - 1], device=origin.device)], -1).max())
    pad = n_radii + max(far, 0) + 1
    Wp = W + 2 * pad
    padded = torch.nn.functional.pad(heights, (pad, pad, pad, pad)).reshape(B, -1)
    table = drow * Wp + dcol
    base = (origin[..., 0] + pad) * Wp + origin[..., 1] + pad  # [B, T]
    flat = (base[..., None, None] + table).reshape(B, -1)
    return torch.gather(padded, 1, flat).reshape(B, -1, A, n_radii)


def _loss_tx_above(b: torch.Tensor, h_tx: torch.Tensor, h_rx: float, config: SimConfig) -> torch.Tensor:
    """Polar loss [.., A, n_radii] for h_tx >= h_rx (the usual case): I_k = [k, e_k), one entry interval.

    e_k = ceil(R_c / step) with R_c = r_k (h_tx - h_rx) / (h_tx - b) (inf when b >= h_tx); it is <= k,
    i.e. the interval is empty, exactly when b <= h_rx, so no case analysis is needed.
    """
    n_radii = b.shape[-1]
    k = torch.arange(n_radii, device=b.device, dtype=torch.float32)
    denom = h_tx - b
    e = torch.ceil((h_tx - h_rx) * k / denom)
    e = torch.maximum(torch.where(denom > 0, e, float(n_radii)).clamp_(max=n_radii), k)
    # Entry interval I_k minus I_(k-1) = [max(k, e_(k-1)), e_k).
    w_start = e.clone()
    w_start[..., 1:] = torch.maximum(e[..., :-1], k[1:])
    w_start[..., 0] = 0.0
    w_start = torch.minimum(w_start, e)
    indoor = config.indoor_loss_db_per_m * config.radial_step_cells * config.cell_size_m
    inside = (e > k).float()
    hist = torch.zeros(*b.shape[:-1], n_radii + 1, device=b.device)
    hist[..., :n_radii] = inside * indoor
    index = torch.cat([e, w_start], dim=-1).long()
    entry = (e > w_start).float() * config.wall_loss_db
    value = torch.cat([-(inside * indoor + entry), entry], dim=-1)
    hist.scatter_add_(-1, index, value)
    return hist[..., :n_radii].cumsum(-1)


def _loss_general(b: torch.Tensor, h_tx: torch.Tensor, h_rx: float, config: SimConfig) -> torch.Tensor:
    """Polar loss for any sign of h_tx - h_rx; intervals I_k = [s_k, e_k) (see module docstring)."""
    n_radii = b.shape[-1]
    step = config.radial_step_cells
    k = torch.arange(n_radii, device=b.device).expand(b.shape)
    radius = k.float() * step
    h_rx_t = torch.full_like(h_tx, h_rx)
    always = b > torch.maximum(h_tx, h_rx_t)
    between = (b > torch.minimum(h_tx, h_rx_t)) & ~always
    r_c = (h_tx - h_rx).abs() * radius / (h_tx - b).abs().clamp_min(1e-6)
    c_bin = torch.ceil(r_c.clamp(max=n_radii * step) / step).long().clamp(max=n_radii)
    tx_above = h_tx > h_rx
    start = torch.where(between & ~tx_above, torch.maximum(k, c_bin), k)
    end = torch.where(between & tx_above, c_bin, n_radii)
    end = torch.where(always | between, end, k)  # empty, placed at k so that k+1 sees it as "before"
    end = torch.maximum(end, start)
    # Entering a building: I_k minus I_(k-1) = [s, min(e, s_prev)) U [max(s, e_prev), e).
    prev_s = torch.nn.functional.pad(start[..., :-1], (1, 0))
    prev_e = torch.nn.functional.pad(end[..., :-1], (1, 0))
    e1 = torch.minimum(end, prev_s).clamp_min(start)
    s2 = torch.maximum(start, prev_e).clamp_max(end)
    indoor = config.indoor_loss_db_per_m * step * config.cell_size_m
    wall = config.wall_loss_db
    inside = (end > start).float()
    first = (e1 > start).float()
    second = (end > s2).float()
    index = torch.cat([start, end, e1, s2], dim=-1)
    value = torch.cat(
        [inside * indoor + first * wall, -(inside * indoor + second * wall), -first * wall, second * wall],
        dim=-1,
    )
    hist = torch.zeros(*b.shape[:-1], n_radii + 1, device=b.device)
    hist.scatter_add_(-1, index, value)
    return hist[..., :n_radii].cumsum(-1)


def _path_gain_chunk(heights: torch.Tensor, tx_pos: torch.Tensor, config: SimConfig, n_radii: int):
    B, H, W = heights.shape
    T = tx_pos.shape[1]
    A = config.n_angles
    device = heights.device
    step = config.radial_step_cells
    h_rx = config.rx_height_m
    # Rays start at the transmitter's cell centre; FSPL below uses the exact position.
    origin = torch.round(tx_pos[..., :2]).long()
    b = _polar_heights(heights, origin, A, n_radii, step)
    h_tx = tx_pos[..., 2, None, None]
    if bool((tx_pos[..., 2] >= h_rx).all()):
        loss = _loss_tx_above(b, h_tx, h_rx, config)
    else:
        loss = _loss_general(b, h_tx, h_rx, config)
    loss = loss.reshape(B, T, A * n_radii)

    # Back to the Cartesian grid: nearest radius bin, linear interpolation between the two nearest rays.
    gi = torch.arange(H, device=device, dtype=torch.float32)[:, None]
    gj = torch.arange(W, device=device, dtype=torch.float32)[None, :]
    oy, ox = (origin[..., i, None, None].float() for i in range(2))
    dy, dx = gi - oy, gj - ox  # [B, T, H, W]
    a = torch.remainder(torch.atan2(dy, dx) * (A / (2 * math.pi)), A)
    a0 = a.floor().clamp_max(A - 1)
    w = (a - a0).reshape(B, T, -1)
    rbin = torch.round(torch.hypot(dy, dx) / step).long().clamp_max(n_radii - 1)
    i0 = (a0.long() * n_radii + rbin).reshape(B, T, -1)
    i1 = (torch.remainder(a0.long() + 1, A) * n_radii + rbin).reshape(B, T, -1)
    extra = torch.lerp(torch.gather(loss, 2, i0), torch.gather(loss, 2, i1), w).reshape(B, T, H, W)

    ty, tx = tx_pos[..., 0, None, None], tx_pos[..., 1, None, None]
    dist_m = torch.hypot(gi - ty, gj - tx) * config.cell_size_m
    d3 = torch.sqrt(dist_m**2 + (h_tx - h_rx) ** 2).clamp_min(config.min_distance_m)
    return -fspl_db(d3, config.frequency_hz) - extra


@lru_cache(maxsize=16)
def _spectrum_sqrt(H: int, W: int, corr_cells: float, device: str) -> torch.Tensor:
    """sqrt of the circulant-embedding eigenvalues (scaled by 1/N) of exp(-d / corr_cells), unit variance."""
    # Padding by ~5 correlation lengths makes the wrap-around correlation negligible (< e^-5).
    pad = math.ceil(5 * corr_cells)
    L1 = next_fast_len(min(2 * H, H + pad))
    L2 = next_fast_len(min(2 * W, W + pad))
    i = torch.arange(L1, dtype=torch.float64)
    j = torch.arange(L2, dtype=torch.float64)
    di = torch.minimum(i, L1 - i)[:, None]
    dj = torch.minimum(j, L2 - j)[None, :]
    cov = torch.exp(-torch.hypot(di, dj) / corr_cells)
    lam = torch.fft.fft2(cov).real.clamp_min(0)
    lam = lam / lam.mean()  # marginal variance exactly 1 after clipping negative eigenvalues
    return torch.sqrt(lam / (L1 * L2)).to(device=device, dtype=torch.float32)


def shadowing_db(
    n: int,
    H: int,
    W: int,
    std_db: float,
    decorrelation_cells: float,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """n independent zero-mean Gaussian fields [n, H, W] in dB with covariance std^2 exp(-d / decorrelation).

    Circulant embedding: one complex FFT gives two independent fields (real and imaginary parts).
    """
    device = torch.device(device)
    sqrt_lam = _spectrum_sqrt(H, W, float(decorrelation_cells), str(device))
    L1, L2 = sqrt_lam.shape
    m = (n + 1) // 2
    noise = torch.randn((m, 2, L1, L2), generator=generator, device=device)
    z = torch.fft.fft2(torch.complex(noise[:, 0], noise[:, 1]) * sqrt_lam)
    fields = torch.stack([z.real, z.imag], dim=1).reshape(2 * m, L1, L2)
    return fields[:n, :H, :W] * std_db
