"""Per-sample radio physics: one draw of the SimConfig ranges (wall, roof and indoor loss, canyon light, shadowing,
noise) for each simulated area.

Each sample draws its physics from its own NumPy generator (``draw_physics``), independent of the generator
that draws its city and transmitters, so adding or widening a range never changes a sample's layout. A range
of width 0 returns its value exactly (no log/exp round trip), so ``wall_loss_db: 12`` and
``wall_loss_db: [12, 12]`` give bit-identical maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tomoformer.sim.config import RANGE_FIELDS, SimConfig
from tomoformer.sim.materials import draw_roof, draw_wall, slab_loss_db


@dataclass(frozen=True)
class Physics:
    """One sample's physics, in dB (losses positive) and metres.

    ``roof_loss_db`` is what entering a building through its roof costs (== wall_loss_db reproduces the model
    before roofs had their own loss); ``canyon_corner_loss_db`` is inf when the sample has no canyon light.
    """

    wall_loss_db: float
    indoor_loss_db_per_m: float
    roof_loss_db: float
    canyon_corner_loss_db: float
    canyon_loss_db_per_m: float
    shadowing_std_db: float
    noise_std_db: float
    floor_fraction: float = 0.0

    @property
    def canyon(self) -> bool:
        """Whether this sample adds street-canyon light."""
        return math.isfinite(self.canyon_corner_loss_db)


def draw_value(config: SimConfig, name: str, rng: np.random.Generator) -> float:
    """One draw of range field ``name``: its value when the range has width 0 (no draw is consumed then)."""
    lo, hi = config.span(name)
    if lo == hi:
        return lo
    if RANGE_FIELDS[name] and lo > 0:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def draw_physics(config: SimConfig, rng: np.random.Generator) -> Physics:
    """Draw one sample's physics from ``config``'s ranges (a fixed order of draws, so the same rng state gives
    the same physics)."""
    if config.wall_material == "itu":
        return _draw_itu_physics(config, rng)
    wall = draw_value(config, "wall_loss_db", rng)
    indoor = draw_value(config, "indoor_loss_db_per_m", rng)
    if config.roof_loss_db is None:
        roof = wall
    elif config.roof_opaque_probability > 0 and rng.random() < config.roof_opaque_probability:
        roof = config.roof_opaque_loss_db
    else:
        roof = draw_value(config, "roof_loss_db", rng)
    return _with_the_rest(config, rng, wall, indoor, roof)


def _draw_itu_physics(config: SimConfig, rng: np.random.Generator) -> Physics:
    """``wall_material: itu``: the wall loss is that of a wall material and thickness drawn from real ranges
    (``tomoformer.sim.materials``); the roof is metal (roof_opaque_loss_db: light gets in by other paths) with
    probability roof_opaque_probability, else a concrete slab. The other fields are drawn as in ``draw_physics``."""
    material, thickness = draw_wall(rng)
    wall = slab_loss_db(material, thickness, config.frequency_hz)
    indoor = draw_value(config, "indoor_loss_db_per_m", rng)
    roof_material, roof_thickness = draw_roof(rng, config.roof_opaque_probability)
    if roof_material == "metal":
        roof = config.roof_opaque_loss_db
    else:
        roof = slab_loss_db(roof_material, roof_thickness, config.frequency_hz)
    return _with_the_rest(config, rng, wall, indoor, roof)


def fixed_physics(config: SimConfig) -> Physics:
    """The physics of a config whose ranges all have width 0 (ValueError naming the first range otherwise).

    Probabilities strictly between 0 and 1 need a draw too; 0 or 1 are fixed.
    """
    if config.wall_material == "itu":
        raise ValueError("wall_material 'itu' draws a wall material per sample: draw the physics per sample instead")
    unused = set()  # ranges that are never drawn
    if config.canyon_probability == 0:
        unused |= {"canyon_corner_loss_db", "canyon_loss_db_per_m"}
    if config.roof_opaque_probability == 1:
        unused.add("roof_loss_db")
    for name in RANGE_FIELDS:
        if name in unused or getattr(config, name) is None:
            continue
        if config.span(name)[0] != config.span(name)[1]:
            raise ValueError(f"{name} is a range {list(config.span(name))}: draw the physics per sample instead")
    for name in ("roof_opaque_probability", "canyon_probability"):
        if name == "roof_opaque_probability" and config.roof_loss_db is None:
            continue  # roofs cost as walls: nothing to draw
        if 0 < getattr(config, name) < 1:
            raise ValueError(f"{name} = {getattr(config, name)} needs a draw per sample")
    return draw_physics(config, np.random.default_rng(0))  # consumes no random numbers when everything is fixed


def frame_values(physics: Sequence[Physics], frames: int, name: str, device: torch.device) -> torch.Tensor:
    """Field ``name`` of every sample repeated for its ``frames`` frames: float32 [len(physics) * frames]."""
    values = torch.tensor([getattr(p, name) for p in physics], dtype=torch.float32)
    return values.repeat_interleave(frames).to(device)


def _with_the_rest(config: SimConfig, rng: np.random.Generator, wall: float, indoor: float, roof: float) -> Physics:
    """The physics with the given wall, indoor and roof losses and the rest drawn after them, in a fixed order
    (street canyons, shadowing, noise, then the floor: last, so older draws stay as they were)."""
    corner, per_m = math.inf, math.inf
    if config.canyon_probability > 0 and (config.canyon_probability == 1 or rng.random() < config.canyon_probability):
        corner = draw_value(config, "canyon_corner_loss_db", rng)
        per_m = draw_value(config, "canyon_loss_db_per_m", rng)
    return Physics(
        wall_loss_db=wall,
        indoor_loss_db_per_m=indoor,
        roof_loss_db=roof,
        canyon_corner_loss_db=corner,
        canyon_loss_db_per_m=per_m,
        shadowing_std_db=draw_value(config, "shadowing_std_db", rng),
        noise_std_db=draw_value(config, "noise_std_db", rng),
        floor_fraction=draw_value(config, "floor_fraction", rng),
    )
