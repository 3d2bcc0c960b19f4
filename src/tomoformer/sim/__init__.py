"""Fast procedural city + 2.5D multi-wall propagation simulator (CPU or CUDA, deterministic on CPU)."""

from tomoformer.sim.cities import make_city
from tomoformer.sim.config import STYLES, SimConfig
from tomoformer.sim.propagation import fspl_db, path_gain_db, shadowing_db
from tomoformer.sim.simulate import dataset_attrs, sample_tx, simulate_samples

__all__ = [
    "STYLES",
    "SimConfig",
    "dataset_attrs",
    "fspl_db",
    "make_city",
    "path_gain_db",
    "sample_tx",
    "shadowing_db",
    "simulate_samples",
]
