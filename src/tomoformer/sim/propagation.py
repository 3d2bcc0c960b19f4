"""2.5D multi-wall propagation in O(H*W) per map via polar resampling around each transmitter.

Deterministic part (``path_gain_db``), in dB path gain (negative numbers):

    gain = -FSPL(d_3D, f) - wall_loss_db * (#entries through a wall) - roof_loss_db * (#entries through a roof)
           - indoor_loss_db_per_m * (metres indoors)

with the losses of each map's own physics draw (``tomoformer.sim.physics``); street-canyon light is added on top
(``tomoformer.sim.canyon``).
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

Frames are processed in cache-sized chunks of frames with similar ray lengths; the sampling geometry
(ray offsets, the Cartesian lookup table) lives in ``tomoformer.sim.polar``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from scipy.fft import next_fast_len

from tomoformer.sim.config import SimConfig
from tomoformer.sim.physics import Physics, fixed_physics, frame_values
from tomoformer.sim.polar import outside_extent, polar_heights, radii_needed, resample_to_grid, table_extent
from tomoformer.sim.terrain import ground_at, terrain_loss_db

SPEED_OF_LIGHT = 299_792_458.0
# Polar elements per chunk of frames: small chunks stay in cache, which is faster on CPU; on a GPU a chunk
# (~330 frames of a 100 x 100 grid, ~0.5 GB of temporaries) is ~1 ms of work, long against its launches.
_MAX_POLAR_ELEMENTS = 1 << 18
_MAX_POLAR_ELEMENTS_DEVICE = 1 << 24


def fspl_db(distance_m: torch.Tensor, frequency_hz: float) -> torch.Tensor:
    """Friis free-space path loss 20 log10(4 pi d f / c) in dB (positive)."""
    return 20.0 * torch.log10(distance_m) + 20.0 * math.log10(4 * math.pi * frequency_hz / SPEED_OF_LIGHT)


def path_gain_db(
    heights: torch.Tensor, tx_pos: torch.Tensor, config: SimConfig, physics: Sequence[Physics] | None = None
) -> torch.Tensor:
    """Deterministic path gain float32 [B, T, H, W] dB (``path_gain_and_loss_db`` without the loss)."""
    return path_gain_and_loss_db(heights, tx_pos, config, physics, with_loss=False)[0]


def path_gain_and_loss_db(
    heights: torch.Tensor,
    tx_pos: torch.Tensor,
    config: SimConfig,
    physics: Sequence[Physics] | None = None,
    with_loss: bool = True,
    terrain: tuple[torch.Tensor, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Deterministic path gain of every cell for every transmitter (no canyon light: ``tomoformer.sim.canyon``).

    heights: [B, H, W] building heights in metres (0 = open); tx_pos: [B, T, 3] (row, col in cells,
    height in metres; may lie outside the grid), best given on the CPU: the chunk plan is made from a host
    copy, so a CPU tx_pos never makes the device queue wait. ``physics``: one draw per map (wall, roof and
    indoor loss; ``tomoformer.sim.physics``), default ``fixed_physics(config)`` for all. Returns float32
    [B, T, H, W] dB (<= 0 far from tx) on heights' device, and (``with_loss``, else None) the part of its
    loss due to buildings, [B, T, H, W] dB >= 0 (0 = line of sight). Also uses config.cell_size_m,
    frequency_hz, rx_height_m, n_angles, radial_step_cells and min_distance_m.

    ``terrain`` (ground [B, H + 2 m, W + 2 m] metres, margin m; ``tomoformer.sim.terrain``): heights are above the
    local ground, the free-space distance includes the ground's rise between transmitter and cell, and the gain
    loses the knife-edge diffraction over the terrain (not part of the returned building loss).
    """
    B, H, W = heights.shape
    T = tx_pos.shape[1]
    A, step = config.n_angles, config.radial_step_cells
    device = heights.device
    physics = [fixed_physics(config)] * B if physics is None else list(physics)
    if len(physics) != B:
        raise ValueError(f"physics has {len(physics)} entries for {B} maps")
    heights = heights.float()
    tx_host = tx_pos.detach().to("cpu", torch.float32).reshape(B * T, 3)
    # Rays start at the transmitter's cell centre; FSPL below uses the exact position.
    origin_host = torch.round(tx_host[:, :2]).long()
    need = radii_needed(origin_host, H, W, step)
    # Frames sorted by ray length share chunks with frames of similar length: rays are only as long as the
    # chunk needs (the loss at a radius only depends on the samples before it, so this changes nothing).
    order_host = torch.argsort(need, stable=True)
    need_sorted = need[order_host].tolist()
    tx_host, origin_host = tx_host[order_host], origin_host[order_host]
    below = (tx_host[:, 2] < config.rx_height_m).tolist()
    # Per-frame losses in the sorted order: wall, indoor per polar step, roof minus wall (0: roofs are walls).
    cell_step = step * config.cell_size_m
    losses_host = torch.stack(
        [
            frame_values(physics, T, "wall_loss_db", torch.device("cpu")),
            frame_values(physics, T, "indoor_loss_db_per_m", torch.device("cpu")) * cell_step,
            frame_values(physics, T, "roof_loss_db", torch.device("cpu"))
            - frame_values(physics, T, "wall_loss_db", torch.device("cpu")),
        ]
    )[:, order_host]
    roofs = (losses_host[2] != 0).tolist()
    order, tx, origin, losses = (to_device(t, device) for t in (order_host, tx_host, origin_host, losses_host))
    owner = order // T  # which map each sorted frame looks at
    # GPUs want few large launches; CPUs want chunks that stay in cache.
    limit = _MAX_POLAR_ELEMENTS if device.type == "cpu" else _MAX_POLAR_ELEMENTS_DEVICE
    frames = max(1, limit // (A * need_sorted[-1]))
    extra = torch.empty(B * T, H, W, device=device)
    ground = None
    if terrain is not None:
        ground, margin = terrain[0].float().to(device), terrain[1]
        over_terrain = torch.empty(B * T, H, W, device=device)
        wavelength = SPEED_OF_LIGHT / config.frequency_hz
    for i in range(0, B * T, frames):
        sl = slice(i, i + frames)
        n_radii = need_sorted[min(i + frames, B * T) - 1]
        far = outside_extent(origin_host[sl], H, W)
        b = polar_heights(heights, owner[sl], origin[sl], n_radii, A, step, far=far)
        wall, indoor, roof = (v[sl, None, None] for v in losses)
        if all(below[sl]) or (any(below[sl]) and not any(roofs[sl])):
            loss = _loss_general(b, tx[sl, 2], config, wall, indoor)
        elif any(below[sl]):
            # Mixed chunk with roofs: only the tx-above kernel knows roofs, only the general one low transmitters.
            low = torch.tensor([j for j, v in enumerate(below[sl]) if v], device=device)
            general = _loss_general(b[low], tx[sl, 2][low], config, wall[low], indoor[low])
            loss = _loss_tx_above(b, tx[sl, 2], config, wall, indoor, roof).index_copy_(0, low, general)
        else:
            loss = _loss_tx_above(b, tx[sl, 2], config, wall, indoor, roof if any(roofs[sl]) else None)
        resample_to_grid(loss, origin[sl], extra[sl], step, ext=table_extent(origin_host[sl], H, W))
        if ground is not None:
            over_terrain[sl] = terrain_loss_db(
                ground, owner[sl], origin[sl], tx[sl, 2], margin, (H, W), n_radii, A, step,
                config.cell_size_m, config.rx_height_m, wavelength, table_extent(origin_host[sl], H, W),
            )  # fmt: skip

    # Free-space loss from the exact position; squared distances are separable in rows and columns.
    cs2 = config.cell_size_m**2
    dy2 = (torch.arange(H, device=device) - tx[:, 0, None]).square_().mul_(cs2)[:, :, None]
    dx2 = (torch.arange(W, device=device) - tx[:, 1, None]).square_().mul_(cs2)[:, None, :]
    if ground is None:
        dh2 = (tx[:, 2] - config.rx_height_m).square_()[:, None, None]
        d2 = (dy2 + dh2) + dx2
    else:  # absolute heights: the transmitter over its ground, every cell's receiver over its own
        z_tx = ground_at(ground, owner, origin, margin) + tx[:, 2]
        cells = ground[:, margin : margin + H, margin : margin + W].index_select(0, owner)
        dh2 = (z_tx[:, None, None] - config.rx_height_m - cells).square_()
        d2 = (dy2 + dx2) + dh2
    fspl_1m = 20.0 * math.log10(4 * math.pi * config.frequency_hz / SPEED_OF_LIGHT)
    sorted_gain = d2.clamp_min_(config.min_distance_m**2).log10_().mul_(-10.0).sub_(fspl_1m).sub_(extra)
    if ground is not None:
        sorted_gain.sub_(over_terrain)
    # Back to the input order: a gather by the inverse permutation copies whole frames (cheaper than index_copy_).
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=device))
    gain = sorted_gain.index_select(0, inverse).reshape(B, T, H, W)
    if not with_loss:
        return gain, None
    return gain, extra.index_select(0, inverse).reshape(B, T, H, W)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to ``device``; to a GPU through pinned memory without waiting for the device's queue."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _loss_tx_above(
    b: torch.Tensor,
    h_tx: torch.Tensor,
    config: SimConfig,
    wall: torch.Tensor,
    indoor: torch.Tensor,
    roof: torch.Tensor | None = None,
) -> torch.Tensor:
    """Polar loss [F, n_radii + 1, A] for h_tx >= h_rx (the usual case): I_k = [k, e_k), one entry interval.

    b: polar heights [F, n_radii, A] (overwritten); h_tx: [F] metres; wall, indoor (dB per polar step) and
    roof (roof minus wall loss, dB; None = 0) [F, 1, 1]. Row n_radii of the result is junk.
    e_k = ceil(R_c / step) with R_c = r_k (h_tx - h_rx) / (h_tx - b) (inf when b >= h_tx); it is <= k,
    i.e. the interval is empty, exactly when b <= h_rx, so no case analysis is needed.

    With u_k = [e_k > k] (sample k blocks some receiver) and g_k = [e_(k+1) > e_k], the entry interval
    I_k minus I_(k-1) = [max(k, e_(k-1)), e_k) is non-empty iff u_k g_(k-1), and it starts at k when
    u_(k-1) = 0, else at e_(k-1), where sample k-1's interval ends. So a wall entered behind sample k-1 is
    added at e_(k-1) together with the removal of k-1's own losses, and one scatter does everything:

        loss = cumsum(dense_k at k + scatter_k at e_k)
        dense_k = u_k (indoor + wall (1 - u_(k-1))),  scatter_k = u_k (wall (g_k - g_(k-1)) - indoor)

    with u_(-1) = 0, g_(-1) = 1 and g_(n-1) = 0. All indicators are 0/1 floats computed by clamping
    differences of the integer-valued e, which is cheaper than boolean masks.

    Roofs: the entry at e_k (sample k + 1 entered right after the ray passed over sample k) goes through a roof
    when b_(k+1) <= b_k (a flat roof, or a step down), else through a wall (a step up). It costs
    wall + q_k with q_k = roof [b_(k+1) <= b_k], so scatter_k gains u_k (q_k g_k - u_(k-1) q_(k-1) g_(k-1));
    entries at k itself (u_(k-1) = 0: from open ground) are always walls.
    """
    F, n_radii, A = b.shape
    k = torch.arange(n_radii, device=b.device, dtype=torch.float32)[:, None]
    cost = None
    if roof is not None:
        # cost[:, k + 1] = wall + q_k, the price of the entry charged at e_k (k = -1 and n - 1: walls, unused)
        cost = torch.empty(F, n_radii + 1, A, device=b.device)
        cost[:, 0::n_radii] = wall
        torch.where(b[:, 1:] <= b[:, :-1], wall + roof, wall, out=cost[:, 1:n_radii])
    h_tx = h_tx[:, None, None]
    # A positive numerator even when h_tx == h_rx, so that b >= h_tx (denominator clamped to 1e-30) gives a
    # huge e (clamped to n_radii) while b < h_tx (a float32 difference >> 1e-18) still gives e <= k as a
    # zero numerator would; row k = 0 (numerator 0) is fixed below.
    c = (h_tx - config.rx_height_m).clamp_min(1e-20)
    denom = torch.sub(h_tx, b, out=b)
    row0 = denom[:, 0] <= 0
    e = torch.div(c * k, denom.clamp_min_(1e-30), out=denom).ceil_().clamp_max_(n_radii)
    torch.maximum(e, k, out=e)
    e[:, 0] = row0 * float(n_radii)

    u = torch.zeros(F, n_radii + 1, A, device=b.device)  # u[:, k + 1] = u_k
    torch.sub(e, k, out=u[:, 1:]).clamp_max_(1.0)
    g = torch.empty(F, n_radii + 1, A, device=b.device)  # g[:, k + 1] = g_k
    g[:, 0] = 1.0
    g[:, n_radii] = 0.0
    torch.sub(e[:, 1:], e[:, :-1], out=g[:, 1:n_radii]).clamp_(0.0, 1.0)
    uk = u[:, 1:]
    if cost is None:
        scatter = torch.sub(g[:, 1:], g[:, :-1]).mul_(wall)
    else:
        # (wall + q_k) g_k - (wall + q_(k-1)) g_(k-1): the u_(k-1) factor of the docstring can go, since
        # u_k = 1 and u_(k-1) = 0 mean b_k > h_rx >= b_(k-1), so q_(k-1) = 0 anyway.
        cg = cost.mul_(g)
        scatter = torch.sub(cg[:, 1:], cg[:, :-1])
    scatter.sub_(indoor).mul_(uk)
    hist = torch.empty(F, n_radii + 1, A, device=b.device)
    hist[:, n_radii] = 0.0
    torch.mul(u[:, :-1], -wall, out=hist[:, :n_radii]).add_(indoor + wall).mul_(uk)
    hist.scatter_add_(1, e.long(), scatter)
    return hist.cumsum_(1)


def _loss_general(
    b: torch.Tensor, h_tx: torch.Tensor, config: SimConfig, wall: torch.Tensor, indoor: torch.Tensor
) -> torch.Tensor:
    """Polar loss [F, n_radii + 1, A] for any sign of h_tx - h_rx; intervals I_k = [s_k, e_k) (module docstring).

    wall, indoor (dB per polar step): [F, 1, 1]. Roofs cost as walls here: this path runs for chunks with a
    transmitter below the receivers, whose rays climb and so never enter a building through its roof.
    """
    F, n_radii, A = b.shape
    step, h_rx = config.radial_step_cells, config.rx_height_m
    k = torch.arange(n_radii, device=b.device)[:, None].expand(b.shape)
    radius = k.float() * step
    h_tx = h_tx[:, None, None]
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
    prev_s = torch.nn.functional.pad(start[:, :-1], (0, 0, 1, 0))
    prev_e = torch.nn.functional.pad(end[:, :-1], (0, 0, 1, 0))
    e1 = torch.minimum(end, prev_s).clamp_min(start)
    s2 = torch.maximum(start, prev_e).clamp_max(end)
    inside = (end > start).float()
    first = (e1 > start).float()
    second = (end > s2).float()
    index = torch.cat([start, end, e1, s2], dim=1)
    value = torch.cat(
        [inside * indoor + first * wall, -(inside * indoor + second * wall), -first * wall, second * wall],
        dim=1,
    )
    hist = torch.zeros(F, n_radii + 1, A, device=b.device)
    hist.scatter_add_(1, index, value)
    return hist.cumsum_(1)


def _embedding_size(H: int, W: int, corr_cells: float) -> tuple[int, int]:
    """Size (L1, L2) of the periodic grid the shadowing fields are drawn on."""
    # Padding by ~5 correlation lengths makes the wrap-around correlation negligible (< e^-5).
    pad = math.ceil(5 * corr_cells)
    return next_fast_len(min(2 * H, H + pad)), next_fast_len(min(2 * W, W + pad))


@lru_cache(maxsize=16)
def _spectrum_sqrt(H: int, W: int, corr_cells: float, device: str) -> torch.Tensor:
    """sqrt of the circulant-embedding eigenvalues (scaled by 1/N) of exp(-d / corr_cells), unit variance."""
    L1, L2 = _embedding_size(H, W, corr_cells)
    i = torch.arange(L1, dtype=torch.float64)
    j = torch.arange(L2, dtype=torch.float64)
    di = torch.minimum(i, L1 - i)[:, None]
    dj = torch.minimum(j, L2 - j)[None, :]
    cov = torch.exp(-torch.hypot(di, dj) / corr_cells)
    lam = torch.fft.fft2(cov).real.clamp_min(0)
    lam = lam / lam.mean()  # marginal variance exactly 1 after clipping negative eigenvalues
    return torch.sqrt(lam / (L1 * L2)).to(device=device, dtype=torch.float32)


def shadowing_noise_shape(n: int, H: int, W: int, decorrelation_cells: float) -> tuple[int, int, int, int]:
    """Shape (ceil(n / 2), 2, L1, L2) of the standard normal draws behind n shadowing fields."""
    return ((n + 1) // 2, 2, *_embedding_size(H, W, float(decorrelation_cells)))


def shadowing_db(
    n: int,
    H: int,
    W: int,
    std_db: float,
    decorrelation_cells: float,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """n independent zero-mean Gaussian fields [n, H, W] in dB with covariance std^2 exp(-d / decorrelation)."""
    shape = shadowing_noise_shape(n, H, W, decorrelation_cells)
    noise = torch.randn(shape, generator=generator, device=torch.device(device))
    return shadowing_from_noise(noise, H, W, std_db, decorrelation_cells)[:n]


def shadowing_from_noise(
    noise: torch.Tensor, H: int, W: int, std_db: float | torch.Tensor, decorrelation_cells: float
) -> torch.Tensor:
    """Fields [2 M, H, W] dB from standard normal draws [M, 2, L1, L2] (``shadowing_noise_shape``).

    std_db: one std for all, or [M, 1, 1] (one per pair of fields).

    Circulant embedding: one complex FFT gives two independent fields (real and imaginary parts).
    """
    sqrt_lam = _spectrum_sqrt(H, W, float(decorrelation_cells), str(noise.device))
    noise = torch.complex(noise[:, 0], noise[:, 1]).mul_(sqrt_lam * std_db)
    # fft2 then crop, but the second transform only runs over the W columns that are kept.
    z = torch.fft.fft(torch.fft.fft(noise, dim=-1)[..., :W], dim=-2)[:, :H]
    return torch.view_as_real(z).movedim(-1, 1).reshape(-1, H, W)
