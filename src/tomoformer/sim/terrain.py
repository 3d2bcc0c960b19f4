"""Smooth random terrain and the diffraction loss over it (fast simulator).

A sample's terrain is a smooth Gaussian random field (spectrum exp(-k^2 L^2 / 2), correlation length
``terrain_scale_m``) scaled so that its lowest point is 0 m and its highest ``terrain_max_m``, drawn on the tile
plus a margin that covers every transmitter outside it. Building heights, transmitter and receiver heights stay
relative to the local ground; terrain adds

* the vertical offset of transmitter and receiver to the free-space distance, and
* a single knife-edge diffraction loss over the terrain profile (the dominant edge: the terrain sample that rises
  highest above the straight transmitter -> receiver line, found for every receiver of a ray at once with one
  running maximum of the elevation slope seen from the transmitter; ITU-R P.526 J(v)).

Buildings are not part of the terrain profile: their loss is the 2.5D multi-wall model's, computed with heights
relative to the local ground (an approximation that holds where slopes are gentle over one street).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tomoformer.sim.polar import polar_heights, resample_to_grid, table_extent


def terrain_margin(size: int, outside_max_cells: float) -> int:
    """Cells of terrain drawn around the tile: enough for transmitters up to ``outside_max_cells`` beyond its
    circumscribed circle (the ring layout), hence also for those in the band around the tile."""
    return math.ceil((math.sqrt(2) - 1) / 2 * size + outside_max_cells) + 2


def make_terrain(size: int, margin: int, max_m: float, scale_cells: float, rng: np.random.Generator) -> np.ndarray:
    """Terrain float32 [size + 2 margin, size + 2 margin] metres in [0, max_m] (cell (margin, margin) is the
    tile's cell (0, 0)); a smooth random field with correlation length ``scale_cells``."""
    n = size + 2 * margin
    noise = rng.standard_normal((n, n))
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    k2 = (2 * math.pi) ** 2 * (ky**2 + kx**2)
    field = np.fft.irfft2(np.fft.rfft2(noise) * np.exp(-k2 * scale_cells**2 / 2), s=(n, n))
    span = field.max() - field.min()
    if max_m <= 0 or span <= 0:
        return np.zeros((n, n), np.float32)
    return ((field - field.min()) * (max_m / span)).astype(np.float32)


def knife_edge_db(v: torch.Tensor) -> torch.Tensor:
    """ITU-R P.526 knife-edge loss J(v) in dB (positive) for the Fresnel-Kirchhoff parameter v; 0 for v <= -0.78."""
    w = v - 0.1
    loss = 6.9 + 20.0 * torch.log10(torch.sqrt(w * w + 1) + w)
    return torch.where(v > -0.78, loss.clamp_min(0.0), torch.zeros_like(v))


def terrain_loss_db(
    terrain: torch.Tensor,
    owner: torch.Tensor,
    origin: torch.Tensor,
    h_tx: torch.Tensor,
    margin: int,
    size: tuple[int, int],
    n_radii: int,
    A: int,
    step: float,
    cell_m: float,
    rx_height_m: float,
    wavelength_m: float,
    ext: int | None = None,
) -> torch.Tensor:
    """Knife-edge loss over terrain float32 [F, H, W] dB >= 0 for F frames.

    terrain: [B, H + 2 margin, W + 2 margin] metres; owner: [F] map of each frame; origin: [F, 2] integer tile
    cells of the transmitters (may lie outside the tile, within the margin); h_tx: [F] metres above the ground;
    n_radii rays of ``step`` cells reach every tile cell from its origin. ``ext``: ``table_extent`` of the origins
    (pass it, computed from a host copy, to spare a device-to-host sync).
    """
    H, W = size
    padded_origin = origin + margin
    g = polar_heights(terrain, owner, padded_origin, n_radii, A, step, far=0)  # [F, n_radii, A]
    r = torch.arange(n_radii, device=g.device, dtype=torch.float32)[None, :, None] * (step * cell_m)
    z0 = g[:, :1, :1] + h_tx[:, None, None]  # transmitter's absolute height
    rr = r.clamp_min(1e-3)
    slope = (g - z0) / rr
    slope[:, 0] = -math.inf
    best, where = torch.cummax(slope, dim=1)
    # The dominant edge of receiver k is the best of samples 0 .. k-1.
    best = torch.cat([best[:, :1], best[:, :-1]], dim=1)
    where = torch.cat([where[:, :1], where[:, :-1]], dim=1)
    rx_slope = (g + rx_height_m - z0) / rr
    d1 = where.float() * (step * cell_m)
    d2 = (r - d1).clamp_min(1e-3)
    excess = (best - rx_slope) * d1  # metres the edge rises above the line (negative: clearance)
    v = excess * torch.sqrt(2 * (d1 + d2) / (wavelength_m * d1.clamp_min(1e-3) * d2))
    loss = torch.where(d1 > 0, knife_edge_db(v), torch.zeros_like(v))
    loss = torch.cat([loss, loss[:, -1:]], dim=1)  # resample_to_grid reads one row past n_radii
    out = torch.empty(loss.shape[0], H, W, device=loss.device)
    ext = table_extent(origin.cpu(), H, W) if ext is None else ext
    return resample_to_grid(loss, origin, out, step, ext=ext)


def ground_at(terrain: torch.Tensor, owner: torch.Tensor, cells: torch.Tensor, margin: int) -> torch.Tensor:
    """Terrain height [F] metres at the integer tile cells [F, 2] (clamped into the drawn area) of map owner [F]."""
    n = terrain.shape[-1]
    rc = (cells + margin).clamp(0, n - 1)
    return terrain[owner, rc[:, 0], rc[:, 1]]
