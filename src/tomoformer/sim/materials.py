"""Building materials from ITU-R P.2040 (Table 3): wall loss of a slab of a given material and thickness.

Used by the fast simulator (``wall_material: itu``: each map draws a material and a wall thickness, its wall loss
is that slab's) and by the ray-tracer scene writer (``tomoformer.sim.scenes``: a material and a thickness per
building, roofs metal or concrete). The slab loss is two air/material interfaces at normal incidence plus the
attenuation inside the material:

    loss_db = 2 * 10 log10(1 / (1 - |G|^2)) + 8.686 * alpha * thickness,  G = (1 - sqrt(eps_r)) / (1 + sqrt(eps_r))

with eps_r = a f^b (f in GHz), sigma = c f^d (S/m) and alpha ~ sigma / 2 * sqrt(mu0 / (eps0 eps_r)) Np/m (the
low-loss limit; metal is capped at METAL_LOSS_DB, a slab of metal passes nothing worth tracing).
"""

from __future__ import annotations

import math

import numpy as np

# name: (a, b, c, d) of ITU-R P.2040-3 Table 3 (eps_r = a f^b, sigma = c f^d S/m, f in GHz).
ITU_PARAMS: dict[str, tuple[float, float, float, float]] = {
    "glass": (6.31, 0.0, 0.0036, 1.3394),
    "brick": (3.91, 0.0, 0.0238, 0.16),
    "concrete": (5.24, 0.0, 0.0462, 0.7822),
    "marble": (7.074, 0.0, 0.0055, 0.9262),
    "metal": (1.0, 0.0, 1e7, 0.0),
}
# Wall materials of buildings, the probability of each and the range of wall thickness in metres
# (glazing 1-2 cm; brick 0.1-0.4 m; concrete 0.15-0.4 m; marble cladding over masonry 0.2-0.4 m; metal sheet).
WALL_MATERIALS: tuple[str, ...] = ("glass", "brick", "concrete", "marble", "metal")
WALL_PROBS: tuple[float, ...] = (0.15, 0.3, 0.35, 0.12, 0.08)
WALL_THICKNESS_M: dict[str, tuple[float, float]] = {
    "glass": (0.01, 0.02),
    "brick": (0.1, 0.4),
    "concrete": (0.15, 0.4),
    "marble": (0.2, 0.4),
    "metal": (0.002, 0.01),
}
# Roofs: metal sheet or a concrete slab.
ROOF_MATERIALS: tuple[str, ...] = ("metal", "concrete")
ROOF_THICKNESS_M: dict[str, tuple[float, float]] = {"metal": (0.002, 0.01), "concrete": (0.15, 0.3)}
METAL_LOSS_DB = 40.0
_Z0 = 376.730313668  # impedance of free space, ohm


def slab_loss_db(material: str, thickness_m: float, frequency_hz: float) -> float:
    """Loss in dB (positive) of a slab of ``material`` (ITU_PARAMS) ``thickness_m`` thick at ``frequency_hz``."""
    if material not in ITU_PARAMS:
        raise ValueError(f"unknown material {material!r}: expected one of {', '.join(ITU_PARAMS)}")
    if material == "metal":
        return METAL_LOSS_DB
    a, b, c, d = ITU_PARAMS[material]
    f_ghz = frequency_hz / 1e9
    eps, sigma = a * f_ghz**b, c * f_ghz**d
    gamma = (1 - math.sqrt(eps)) / (1 + math.sqrt(eps))
    interfaces = -20.0 * math.log10(1 - gamma**2)
    alpha = sigma / 2 * _Z0 / math.sqrt(eps)  # Np/m
    return min(METAL_LOSS_DB, interfaces + 8.686 * alpha * thickness_m)


def draw_wall(rng: np.random.Generator) -> tuple[str, float]:
    """One building's wall material and thickness (metres)."""
    material = WALL_MATERIALS[int(rng.choice(len(WALL_MATERIALS), p=WALL_PROBS))]
    return material, float(rng.uniform(*WALL_THICKNESS_M[material]))


def draw_roof(rng: np.random.Generator, metal_probability: float) -> tuple[str, float]:
    """One building's roof: metal with ``metal_probability``, else concrete, and its thickness (metres)."""
    material = "metal" if rng.random() < metal_probability else "concrete"
    return material, float(rng.uniform(*ROOF_THICKNESS_M[material]))
