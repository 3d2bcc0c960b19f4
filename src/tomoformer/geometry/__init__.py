"""Real building geometry: footprints read from OSM / GeoPackage / GeoJSON, rasterised to height tiles.

Needs the optional ``[geo]`` extra (shapely 2, pyproj, pyogrio, geopandas, pyrosm). Modules:
``footprints`` reads and projects footprints, ``rasterise`` turns them into tiles, ``store`` writes and reads
geometry-only stores (``buildings`` + ``heights`` + ``group``, no signals), ``source`` serves a store's tiles
to the simulators (``tomoformer simulate --geometry``; no extra needed).
"""

from __future__ import annotations

from tomoformer.errors import ConfigError

GEO_HINT = 'pip install "tomoformer[geo]"'


def require_geo() -> None:
    """Raise a one-line ConfigError naming the extra when shapely/pyproj/pyogrio/geopandas are missing."""
    import importlib.util

    missing = [m for m in ("shapely", "pyproj", "pyogrio", "geopandas") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"geometry import needs {', '.join(missing)}: {GEO_HINT}")
