"""Given geometry for the simulators: the heights of a geometry store (``tomoformer geometry import``) or of any
dataset with ``heights``, in place of procedural cities (``tomoformer simulate --geometry``). A
:class:`GeometrySource` is the store-reading :class:`tomoformer.sim.HeightTiles` the simulators take.

Sample i uses tile ``i mod N``: ``--n`` larger than the number of tiles cycles through them (each pass with new
transmitters and physics, since those are drawn per sample index), smaller takes the first n.
Needs no optional extra: the store is read with zarr/numpy/h5py only.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.errors import ConfigError
from tomoformer.geometry.store import open_geometry


class GeometrySource:
    """Heights float32 [H, W] metres and group of sample i, read tile by tile (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tiles = open_geometry(self.path)
        self._lock = threading.Lock()  # h5py and some zarr stores are not safe to read from several threads

    def __len__(self) -> int:
        return len(self._tiles)

    @property
    def shape(self) -> tuple[int, int]:
        return self._tiles.shape

    @property
    def attrs(self) -> dict[str, Any]:
        return self._tiles.attrs

    def heights(self, index: int) -> np.ndarray:
        with self._lock:
            return self._tiles.tile(index)

    def group(self, index: int) -> int:
        groups = self._tiles.group
        return 0 if groups is None else int(groups[index % len(self)])

    def group_names(self) -> list[str]:
        names = self.attrs.get("group_names")
        if isinstance(names, list) and names:
            return [str(n) for n in names]
        return [self.path.stem]

    def check_config(self, config: Any) -> None:
        """The tiles must be square and match the config's grid: ConfigError naming the option otherwise."""
        H, W = self.shape
        if H != W:
            raise ConfigError(f"--geometry {self.path}: tiles are {H}x{W}; the simulators need square tiles")
        if config.size != H:
            raise ConfigError(f"--geometry {self.path}: tiles are {H}x{W} cells, but --size is {config.size}")
        cell = float(self.attrs.get("cell_size_m", 2.0))
        if abs(config.cell_size_m - cell) > 1e-9:
            raise ConfigError(
                f"--geometry {self.path}: cells are {cell:g} m, but --cell-size-m is {config.cell_size_m:g}"
            )

    def dataset_attrs(self) -> dict[str, Any]:
        """Attributes a simulated dataset on this geometry carries (source, licence, group names)."""
        out: dict[str, Any] = {
            "geometry": {
                "path": str(self.path),
                "tiles": len(self),
                "source": self.attrs.get("source", "unknown"),
            },
            "group_names": self.group_names(),
        }
        if "licence" in self.attrs:
            out["licence"] = self.attrs["licence"]
        if "height_rules" in self.attrs:
            out["geometry"]["height_rules"] = self.attrs["height_rules"]
        return out

    def close(self) -> None:
        self._tiles.close()
