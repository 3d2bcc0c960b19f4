"""Fast procedural city + 2.5D multi-wall propagation simulator (CPU or CUDA, deterministic on CPU).

A pure library: configs and arrays in, arrays out (no store reading; given heights come through
:class:`HeightTiles`). :func:`simulate_samples` makes whole samples; :func:`prepare` and :func:`propagate` are its
two phases for callers that schedule host and device work themselves.
"""

from tomoformer.sim.cities import make_city
from tomoformer.sim.config import STYLES, SimConfig
from tomoformer.sim.propagation import fspl_db, path_gain_db, shadowing_db
from tomoformer.sim.simulate import (
    HeightTiles,
    PreparedSample,
    dataset_attrs,
    prepare,
    propagate,
    sample_tx,
    simulate_samples,
)

__all__ = [
    "STYLES",
    "HeightTiles",
    "PreparedSample",
    "SimConfig",
    "dataset_attrs",
    "fspl_db",
    "make_city",
    "path_gain_db",
    "prepare",
    "propagate",
    "sample_tx",
    "shadowing_db",
    "simulate_samples",
]
