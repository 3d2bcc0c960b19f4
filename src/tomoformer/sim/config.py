"""Configuration of the fast simulator: one flat dataclass with units in the field names."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from typing import Any

from tomoformer.errors import ConfigError

# City styles (sim/cities.py, sim/cities_v2.py). Append only: a dataset's `group` is an index into this tuple.
STYLES: tuple[str, ...] = (
    "dense",
    "suburban",
    "industrial",
    "oldtown",
    "open",
    "perimeter",
    "irregular",
    "detached",
    "highrise",
    "openspace",
)
TX_MODES = ("random", "path")
# Where random-mode transmitters stand (sim/layouts.py): "random" = outdoors, tx_outside_fraction of them in a band
# around the tile; "inside" = outdoors inside the tile; "ring" = on a ring outside the tile; "rooftop" = on roofs,
# 1-3 m above them; "street" = outdoors inside the tile at 1.5-3 m.
TX_LAYOUTS = ("random", "inside", "ring", "rooftop", "street")
# "range": wall_loss_db drawn from its range; "itu": each map draws a wall material and thickness (sim/materials.py).
WALL_MATERIAL_MODES = ("range", "itu")
SPARSITY_MODES = ("random", "path")
# Per-sample physics: a number, or a (low, high) pair drawn per sample.
Range = float | tuple[float, float]
# Fields that take a range; True = drawn log-uniform when low > 0 (losses spanning decades).
RANGE_FIELDS: dict[str, bool] = {
    "wall_loss_db": True,
    "indoor_loss_db_per_m": False,
    "roof_loss_db": True,
    "canyon_corner_loss_db": False,
    "canyon_loss_db_per_m": True,
    "shadowing_std_db": False,
    "noise_std_db": False,
    "floor_fraction": False,
}


@dataclass
class SimConfig:
    """Everything that defines a simulated dataset; defaults are a 200 m x 200 m tile at 3.5 GHz.

    Positions are in cells (``cell_size_m`` metres each), heights in metres, losses in dB.
    ``measured_fraction`` is the fraction of cells KEPT per frame (1.0 = every cell measured);
    ``sparsity_mode="path"`` keeps instead the cells visited by a random drive along the streets.
    """

    size: int = 100
    cell_size_m: float = 2.0
    frames: int = 64
    frequency_hz: float = 3.5e9
    rx_height_m: float = 1.5
    tx_height_min_m: float = 1.5
    tx_height_max_m: float = 30.0
    # "random": independent outdoor position and height per frame; "path": one transmitter driving
    # through the streets at a fixed height, frame t is its position after t * tx_path_step_cells steps.
    tx_mode: str = "random"
    tx_path_step_cells: int = 2
    # Fraction of random-mode transmitters placed outside the grid, at most tx_outside_max_cells away.
    tx_outside_fraction: float = 0.0
    tx_outside_max_cells: float = 25.0
    # Transmitter layout of tx_mode "random" (TX_LAYOUTS); the ring's width is tx_outside_max_cells.
    tx_layout: str = "random"
    # Smooth random terrain (sim/terrain.py): relief from 0 to terrain_max_m metres (0 = flat, as before), with
    # hills about terrain_scale_m across; heights of buildings, transmitters and receivers are above the ground.
    terrain_max_m: float = 0.0
    terrain_scale_m: float = 120.0
    wall_material: str = "range"
    style: str = "mixed"
    # Physics drawn per sample (``tomoformer.sim.physics``): each of these is a number or a [low, high] range
    # (a number is a range of width 0). Losses with low > 0 are drawn log-uniform, everything else uniform.
    # The default ranges bracket the ray tracer on every dB statistic of `tomoformer sim calibrate` (docs/sionna.md:
    # Sionna's city scenes use ~3 dB marble walls and metal roofs, our ray-traced procedural cities 0.3 m concrete,
    # brick and glass; fitted walls 2.7-11 dB, indoor 0.1-0.2 dB/m, roofs 9-14 dB).
    wall_loss_db: Range = (1.0, 30.0)
    indoor_loss_db_per_m: Range = (0.0, 0.4)
    # Entering a building through its roof (a high transmitter): with probability roof_opaque_probability the
    # roof is metal and costs roof_opaque_loss_db (light then gets in by other paths: the fit on Sionna's
    # metal-roofed scenes gives 11-14 dB, not "nothing"), else roof_loss_db; roof_loss_db null = the wall loss.
    roof_loss_db: Range | None = (2.0, 20.0)
    roof_opaque_probability: float = 0.2
    roof_opaque_loss_db: float = 25.0
    # Street-canyon light around corners (``tomoformer.sim.canyon``): with probability canyon_probability a
    # sample's shadowed streets receive light from street cells, canyon_corner_loss_db plus
    # canyon_loss_db_per_m per metre travelled along the streets below them.
    canyon_probability: float = 0.7
    canyon_corner_loss_db: Range = (0.0, 15.0)
    canyon_loss_db_per_m: Range = (0.1, 1.5)
    shadowing_std_db: Range = (2.0, 8.0)
    shadowing_decorrelation_m: float = 20.0
    noise_std_db: Range = (0.5, 3.0)
    # The weakest floor_fraction of each frame's cells read NaN (a receiver floor as a quantile, like a ray tracer
    # that finds no path there); drawn per sample. 0 = off (training adds its own random floor by default).
    floor_fraction: Range = 0.0
    floor_db: float | None = None
    measured_fraction: float = 1.0
    sparsity_mode: str = "random"
    # Polar resampling used by the propagation model (accuracy/speed trade-off).
    n_angles: int = 360
    radial_step_cells: float = 1.0
    # FSPL is evaluated at no less than this distance so that the transmitter cell stays finite.
    min_distance_m: float = 1.0

    def __post_init__(self) -> None:
        for name in RANGE_FIELDS:
            setattr(self, name, _as_range(name, getattr(self, name)))
        self.validate()

    def span(self, name: str) -> tuple[float, float]:
        """(low, high) of a range field; a single value v gives (v, v)."""
        value = getattr(self, name)
        return (value, value) if isinstance(value, float) else value

    def validate(self) -> None:
        """Raise ConfigError (one line) on the first invalid value."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(f"invalid sim config: {msg}")

        need(self.size >= 4, f"size must be >= 4, got {self.size}")
        need(self.frames >= 1, f"frames must be >= 1, got {self.frames}")
        for name in ("cell_size_m", "frequency_hz", "radial_step_cells", "min_distance_m"):
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value}")
        need(self.rx_height_m >= 0, f"rx_height_m must be >= 0, got {self.rx_height_m}")
        need(
            0 <= self.tx_height_min_m <= self.tx_height_max_m,
            f"0 <= tx_height_min_m <= tx_height_max_m, got {self.tx_height_min_m}, {self.tx_height_max_m}",
        )
        need(self.tx_mode in TX_MODES, f"tx_mode must be one of {TX_MODES}, got {self.tx_mode!r}")
        need(self.tx_path_step_cells >= 1, f"tx_path_step_cells must be >= 1, got {self.tx_path_step_cells}")
        need(0 <= self.tx_outside_fraction <= 1, "tx_outside_fraction must be in [0, 1]")
        need(self.tx_outside_max_cells > 0, "tx_outside_max_cells must be > 0")
        need(self.tx_layout in TX_LAYOUTS, f"tx_layout must be one of {TX_LAYOUTS}, got {self.tx_layout!r}")
        need(
            math.isfinite(self.terrain_max_m) and 0 <= self.terrain_max_m <= 2000,
            f"terrain_max_m must be in [0, 2000] metres, got {self.terrain_max_m}",
        )
        need(
            math.isfinite(self.terrain_scale_m) and self.terrain_scale_m > 0,
            f"terrain_scale_m must be > 0, got {self.terrain_scale_m}",
        )
        need(
            self.wall_material in WALL_MATERIAL_MODES,
            f"wall_material must be one of {WALL_MATERIAL_MODES}, got {self.wall_material!r}",
        )
        need(
            self.style == "mixed" or self.style in STYLES,
            f"style must be 'mixed' or one of {STYLES}, got {self.style!r}",
        )
        for name in RANGE_FIELDS:
            if getattr(self, name) is None:
                continue
            lo, hi = self.span(name)
            need(math.isfinite(lo) and math.isfinite(hi) and lo >= 0, f"{name} must be >= 0, got {lo}, {hi}")
            need(lo <= hi, f"{name}: low must be <= high, got [{lo}, {hi}]")
        need(self.span("floor_fraction")[1] < 1, f"floor_fraction must be < 1, got {self.floor_fraction}")
        for name in ("roof_opaque_probability", "canyon_probability"):
            value = getattr(self, name)
            need(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
        need(
            math.isfinite(self.roof_opaque_loss_db) and self.roof_opaque_loss_db >= 0,
            f"roof_opaque_loss_db must be >= 0, got {self.roof_opaque_loss_db}",
        )
        need(self.shadowing_decorrelation_m > 0, "shadowing_decorrelation_m must be > 0")
        need(self.floor_db is None or math.isfinite(self.floor_db), "floor_db must be a number or null")
        need(
            0 < self.measured_fraction <= 1,
            f"measured_fraction must be in (0, 1], got {self.measured_fraction}",
        )
        need(
            self.sparsity_mode in SPARSITY_MODES,
            f"sparsity_mode must be one of {SPARSITY_MODES}, got {self.sparsity_mode!r}",
        )
        need(self.n_angles >= 8, f"n_angles must be >= 8, got {self.n_angles}")

    @property
    def styles(self) -> tuple[str, ...]:
        """The styles a sample may be drawn from."""
        return STYLES if self.style == "mixed" else (self.style,)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimConfig:
        """Build from a plain mapping (e.g. parsed YAML); unknown keys or bad values raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"sim config must be a mapping, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown sim config key(s): {', '.join(map(str, unknown))} (valid: {', '.join(known)})")
        defaults = cls()
        kwargs = {}
        for key, value in d.items():
            kwargs[key] = _coerce(key, value, getattr(defaults, key))
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> SimConfig:
        """Read a YAML mapping of SimConfig fields (bounded: :func:`tomoformer.safe_yaml.read_yaml_file`)."""
        from tomoformer.safe_yaml import read_yaml_file

        return cls.from_dict(read_yaml_file(path) or {})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (YAML/JSON friendly); round-trips through from_dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert YAML scalars to the type of the default, with a one-line error on failure."""
    if key in RANGE_FIELDS:
        if value is None and key == "roof_loss_db":
            return None
        return _as_range(key, value)
    if key == "floor_db":
        if value is None:
            return None
        default = 0.0
    try:
        if isinstance(default, bool) or isinstance(value, bool):
            raise TypeError
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"invalid sim config: {key} must be {type(default).__name__}, got {value!r}") from None
    return value


def _as_range(name: str, value: Any) -> Any:
    """A number -> float; a [low, high] pair -> (float, float); None stays (roof_loss_db). ConfigError otherwise."""
    if value is None and name == "roof_loss_db":
        return None
    try:
        if isinstance(value, (list, tuple)):
            if len(value) != 2 or any(isinstance(v, bool) for v in value):
                raise TypeError
            return (float(value[0]), float(value[1]))
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid sim config: {name} must be a number or a [low, high] pair, got {value!r}") from None
