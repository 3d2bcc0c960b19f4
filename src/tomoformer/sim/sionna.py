"""Ray-traced signal maps with Sionna RT: procedural cities extruded to 3D, or tiles of Sionna's real cities.

Install with ``pip install "tomoformer[sionna]"``. On CPU, Dr.Jit's LLVM backend needs LLVM >= 19
(``apt-get install libllvm19``; ``DRJIT_LIBLLVM_PATH=/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1``, found
automatically at the usual places); older LLVMs crash. Samples have the fast simulator's format
(``tomoformer.sim.simulate``): sample i of (config, seed) has the same city and transmitters as there, so
the two engines can be compared map for map.
"""

from __future__ import annotations

import glob
import importlib.util
import inspect
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tomoformer.errors import ConfigError
from tomoformer.sim.config import SimConfig

INSTALL_HINT = 'pip install "tomoformer[sionna]"'
LLVM_HINT = (
    "apt-get install libllvm19 and set DRJIT_LIBLLVM_PATH=/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1 "
    "(Dr.Jit's CPU backend needs LLVM >= 19)"
)
_LLVM_GLOBS = (
    "/usr/lib/x86_64-linux-gnu/libLLVM.so.*",
    "/usr/lib/aarch64-linux-gnu/libLLVM.so.*",
    "/usr/lib/llvm-*/lib/libLLVM.so.*",
    "/usr/lib64/libLLVM.so.*",
    "/opt/homebrew/opt/llvm/lib/libLLVM.dylib",
)
_MIN_LLVM = 19


@dataclass(frozen=True)
class RayOptions:
    """Ray-tracer settings (recorded in the dataset attributes; part of what --resume compares).

    ``samples_per_tx`` rays are shot per transmitter: far cells of a large tile see few of them, so they
    are noisier or NaN (nothing arrived). Diffraction and refraction are used where the installed
    sionna-rt supports them. ``wall_thickness_m`` is the ITU slab thickness of the procedural buildings, and
    ``building_material`` their ITU material (tomoformer.sim.scenes.ITU_MATERIALS; "mixed": drawn per building
    from BUILDING_MATERIALS; "real": a material and a thickness per building from real ranges,
    tomoformer.sim.materials, wall_thickness_m unused).
    """

    samples_per_tx: int = 1_000_000
    max_depth: int = 3
    diffraction: bool = True
    refraction: bool = True
    wall_thickness_m: float = 0.3
    building_material: str = "mixed"

    def __post_init__(self) -> None:
        from tomoformer.sim.scenes import ITU_MATERIALS

        if self.building_material not in ("mixed", "real") and self.building_material not in ITU_MATERIALS:
            raise ConfigError(
                f"--material {self.building_material!r}: expected mixed, real or an ITU material: "
                f"{', '.join(ITU_MATERIALS)}"
            )
        if not 0 < self.wall_thickness_m < 10:
            raise ConfigError(f"--wall-thickness-m {self.wall_thickness_m}: expected metres in (0, 10)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_llvm() -> str | None:
    """Path of an LLVM >= 19 shared library at the usual places, or None."""
    best: tuple[int, str] | None = None
    for pattern in _LLVM_GLOBS:
        for path in glob.glob(pattern):
            match = re.search(r"(?:llvm-|\.so\.)(\d+)", path)
            version = int(match.group(1)) if match else _MIN_LLVM
            if version >= _MIN_LLVM and os.path.isfile(path) and (best is None or version > best[0]):
                best = (version, path)
    return best[1] if best else None


def _installed(name: str) -> bool:
    """Whether a top-level package can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def import_sionna(device: str = "cpu") -> tuple[ModuleType, ModuleType]:
    """(mitsuba, sionna.rt) with the JIT variant of ``device``, or ConfigError naming the fix.

    On CPU the LLVM library is checked first: Dr.Jit reads DRJIT_LIBLLVM_PATH when it first starts its LLVM
    backend, and silently picking an old system LLVM (e.g. 14) crashes later, inside a trace.
    """
    cuda = str(device).startswith("cuda")
    missing = [name for name in ("mitsuba", "sionna") if not _installed(name)]
    if missing:
        raise ConfigError(f"--engine sionna needs sionna-rt ({', '.join(missing)} not installed): {INSTALL_HINT}")
    if not cuda:
        path = os.environ.get("DRJIT_LIBLLVM_PATH")
        if path and not os.path.isfile(path):
            raise ConfigError(f"DRJIT_LIBLLVM_PATH={path} does not exist; {LLVM_HINT}")
        if not path:
            path = find_llvm()
            if path is None:
                raise ConfigError(f"ray tracing on CPU needs LLVM >= {_MIN_LLVM}: {LLVM_HINT}")
            os.environ["DRJIT_LIBLLVM_PATH"] = path
    try:
        import mitsuba as mi
    except ImportError as exc:
        raise ConfigError(f"--engine sionna needs sionna-rt ({exc.msg}): {INSTALL_HINT}") from None
    variant = "cuda_ad_mono_polarized" if cuda else "llvm_ad_mono_polarized"
    try:
        if mi.variant() != variant:
            mi.set_variant(variant)
        import sionna.rt as rt
    except ImportError as exc:
        hint = "a CUDA GPU and driver" if cuda else LLVM_HINT
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ModuleNotFoundError):
            raise ConfigError(f"--engine sionna needs sionna-rt ({first}): {INSTALL_HINT}") from None
        raise ConfigError(f"cannot start Sionna's {variant} backend ({first[:200]}): {hint}") from None
    if not cuda:
        import drjit as dr
        import torch

        # Ray tracing shares the cores like the rest of the project: as many threads as torch (OMP_NUM_THREADS).
        dr.set_thread_count(torch.get_num_threads())
    return mi, rt


def trace(
    rt: ModuleType,
    scene: Any,
    origin: tuple[float, float],
    shape: tuple[int, int],
    tx_world: np.ndarray,
    config: SimConfig,
    options: RayOptions,
    ground_z: float = 0.0,
    seed: int = 0,
    surface: str | None = None,
) -> np.ndarray:
    """Path gain float32 [T, H, W] dB on the tile with south-west corner ``origin`` (metres) of a loaded Sionna
    ``scene``, at ``ground_z + rx_height_m``, for isotropic transmitters at ``tx_world`` [T, 3] (x, y, z metres).
    NaN where no ray arrived. Row 0 is north (Sionna's row 0 is the southmost: flipped here).

    ``surface``: a PLY measurement surface (``receiver_surface``: two triangles per cell, row-major from the
    north-west cell) used instead of the horizontal plane, for terrain; needs sionna-rt >= 1.1."""
    H, W = shape
    cell = config.cell_size_m
    for name in list(scene.transmitters):
        scene.remove(name)
    scene.frequency = config.frequency_hz
    scene.tx_array = rt.PlanarArray(num_rows=1, num_cols=1, pattern="iso", polarization="V")
    scene.rx_array = scene.tx_array
    for t, (x, y, z) in enumerate(np.asarray(tx_world, np.float64)):
        scene.add(rt.Transmitter(name=f"tx{t}", position=[float(x), float(y), float(z)]))
    solver = rt.RadioMapSolver()
    flags = {"refraction": options.refraction, "diffraction": options.diffraction}
    # Only the features this sionna-rt version knows (diffraction arrived in 1.2).
    known = inspect.signature(solver.__call__).parameters
    if surface is not None:
        if "measurement_surface" not in known:
            raise ConfigError("terrain needs sionna-rt >= 1.1 (radio maps on a measurement surface)")
        import mitsuba as mi

        mesh = mi.load_dict({"type": "ply", "filename": surface})
        radio_map = solver(
            scene,
            measurement_surface=mesh,
            samples_per_tx=options.samples_per_tx,
            max_depth=options.max_depth,
            seed=seed,
            **{k: v for k, v in flags.items() if k in known},
        )
        # Two triangles per cell: the cell's path gain is their mean (equal areas in plan).
        gain = np.array(radio_map.path_gain, dtype=np.float64).reshape(-1, H, W, 2).mean(-1)
        with np.errstate(divide="ignore"):
            out = np.where(gain > 0, 10.0 * np.log10(np.where(gain > 0, gain, 1.0)), np.nan)
        return out.astype(np.float32)
    radio_map = solver(
        scene,
        center=[origin[0] + W * cell / 2, origin[1] + H * cell / 2, ground_z + config.rx_height_m],
        orientation=[0.0, 0.0, 0.0],
        size=[W * cell, H * cell],
        cell_size=[cell, cell],
        samples_per_tx=options.samples_per_tx,
        max_depth=options.max_depth,
        seed=seed,
        **{k: v for k, v in flags.items() if k in known},
    )
    gain = np.array(radio_map.path_gain, dtype=np.float64)[:, ::-1, :][:, :H, :W]
    with np.errstate(divide="ignore"):
        out = np.where(gain > 0, 10.0 * np.log10(np.where(gain > 0, gain, 1.0)), np.nan)
    return out.astype(np.float32)


def tx_to_world(tx: np.ndarray, H: int, cell: float, origin: tuple[float, float], ground_z: float) -> np.ndarray:
    """tx_pos [T, 3] (row, col in cells, height m above ground) to world (x, y, z) metres."""
    tx = np.asarray(tx, np.float64)
    x = origin[0] + (tx[:, 1] + 0.5) * cell
    y = origin[1] + (H - 0.5 - tx[:, 0]) * cell
    return np.stack([x, y, ground_z + tx[:, 2]], axis=1)


def radio_maps(
    heights: np.ndarray,
    tx: np.ndarray,
    config: SimConfig,
    options: RayOptions | None = None,
    seed: int = 0,
    device: str = "cpu",
    terrain: np.ndarray | None = None,
) -> np.ndarray:
    """Ray-traced path gain float32 [T, H, W] dB of a procedural city (NaN where nothing arrives).

    ``terrain`` (float [H + 2 m, W + 2 m] metres, the tile at offset m; tomoformer.sim.terrain): the ground is that
    heightfield, buildings stand on it, transmitter and receiver heights are above the local ground, and the map
    is measured on a surface that follows the ground (sionna-rt >= 1.1).

    heights: [H, W] metres (0 = open); tx: [T, 3] (row, col in cells, height in metres). The city is extruded
    to boxes with ITU materials drawn per building from ``seed`` (tomoformer.sim.scenes), on a concrete
    ground plane that reaches past the farthest transmitter, and written to a temporary Mitsuba scene.
    """
    from tomoformer.sim.meshes import write_ply
    from tomoformer.sim.scenes import (
        BUILDING_MATERIALS,
        building_materials,
        real_building_materials,
        receiver_surface,
        write_city_scene,
    )

    options = options or RayOptions()
    _, rt = import_sionna(device)
    heights = np.asarray(heights, np.float32)
    H, W = heights.shape
    cell = config.cell_size_m
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5107]))
    materials = building_materials(heights, rng)
    names, kinds = BUILDING_MATERIALS, None
    if options.building_material == "real":
        materials, names, kinds = real_building_materials(heights, rng)
    elif options.building_material != "mixed":
        materials, names = np.zeros_like(materials), (options.building_material,)
    # Ground to the farthest transmitter plus 10 cells, so that ground reflections reach the whole tile.
    tx = np.asarray(tx, np.float64)
    reach = max(0.0, float(np.max(-tx[:, :2], initial=0.0)), float(np.max(tx[:, :2] - [H - 1, W - 1], initial=0.0)))
    with tempfile.TemporaryDirectory(prefix="tomoformer-scene-") as tmp:
        margin = (reach + 10) * cell
        xml = write_city_scene(
            Path(tmp), heights, cell, materials, margin, options.wall_thickness_m, names, kinds, terrain
        )
        scene = rt.load_scene(str(xml))
        world = tx_to_world(tx, H, cell, (0.0, 0.0), 0.0)
        surface = None
        if terrain is not None:
            m = (terrain.shape[0] - H) // 2
            rows = np.clip(np.round(tx[:, 0]).astype(int) + m, 0, terrain.shape[0] - 1)
            cols = np.clip(np.round(tx[:, 1]).astype(int) + m, 0, terrain.shape[1] - 1)
            world[:, 2] += terrain[rows, cols]
            surface = str(Path(tmp) / "receivers.ply")
            write_ply(surface, receiver_surface(terrain[m : m + H, m : m + W], cell, config.rx_height_m))
        return trace(rt, scene, (0.0, 0.0), (H, W), world, config, options, 0.0, seed, surface)


def sionna_attrs(config: SimConfig, options: RayOptions, scene: str | None = None) -> dict[str, Any]:
    """Dataset attributes: the fast simulator's (``dataset_attrs``) with source 'sionna-rt' and the ray settings."""
    from importlib.metadata import PackageNotFoundError, version

    from tomoformer.sim.scenes import REAL_SCENES
    from tomoformer.sim.simulate import STYLES, dataset_attrs

    try:
        rt_version = version("sionna-rt")
    except PackageNotFoundError:
        rt_version = "unknown"
    return {
        **dataset_attrs(config),
        "source": "sionna-rt",
        "ray_tracing": {**options.to_dict(), "scene": scene or "procedural"},
        "sionna_rt_version": rt_version,
        "group_names": list(REAL_SCENES if scene else STYLES),
    }


def sionna_samples(
    config: SimConfig,
    seed: int,
    start: int,
    count: int,
    device: str = "cpu",
    options: RayOptions | None = None,
    scene: str | None = None,
    geometry: Any = None,
) -> dict[str, np.ndarray]:
    """Ray-traced samples ``start .. start + count - 1``: the arrays of ``simulate_samples`` (signals float32
    [count, T, H, W] dB, buildings uint8, heights float32 m, tx_pos float32 [count, T, 3], group int16).

    Procedural (``scene=None``): sample i is the fast simulator's city and transmitters for (seed, i), group =
    style index; with ``geometry`` (tomoformer.sim.simulate.HeightTiles) the heights of its tile i mod N
    instead, group = the tile's source. ``scene`` ('munich', ...): a random tile of that real city, group = index
    in REAL_SCENES.
    No shadowing is added (the ray tracer makes its own); noise_std_db, floor_db and the sparsity settings
    of ``config`` apply as in the fast simulator, drawn from the sample's own generator.
    """
    from tomoformer.sim.cities import outdoor_component, street_walks
    from tomoformer.sim.scenes import REAL_SCENES, draw_tile, load_real_scene
    from tomoformer.sim.simulate import _measured_cells, prepare, sample_tx

    options = options or RayOptions()
    _, rt = import_sionna(device)
    n, T = config.size, config.frames
    out = {
        "signals": np.empty((count, T, n, n), np.float32),
        "buildings": np.empty((count, n, n), np.uint8),
        "heights": np.empty((count, n, n), np.float32),
        "tx_pos": np.empty((count, T, 3), np.float32),
        "group": np.empty((count,), np.int16),
    }
    for k, index in enumerate(range(start, start + count)):
        seq = np.random.SeedSequence([seed, index])
        ray_seed = int(np.random.SeedSequence([seed, index, 1]).generate_state(1, np.uint32)[0] >> 1)
        if scene is None:
            sample = prepare(config, seed, index, geometry)
            group = sample.group_id
            heights, tx, visited = sample.heights, sample.tx_pos, sample.visited
            gain = radio_maps(heights, tx, config, options, ray_seed, device, sample.terrain)
        else:
            real = load_real_scene(scene)
            rng = np.random.default_rng(seq.spawn(1)[0])
            origin, heights = draw_tile(real, n, config.cell_size_m, config.rx_height_m, rng)
            free = outdoor_component(heights, config.rx_height_m)
            tx = sample_tx(config, heights, free, rng)
            visited = None
            if config.measured_fraction < 1 and config.sparsity_mode == "path":
                _, visited = street_walks(free, T, None, rng, target_cells=_measured_cells(config))
            world = tx_to_world(tx, n, config.cell_size_m, origin, real.ground_z)
            rt_scene = _rt_scene(str(real.xml), device)
            gain = trace(rt, rt_scene, origin, (n, n), world, config, options, real.ground_z, ray_seed)
            group = REAL_SCENES.index(scene)
        out["signals"][k] = _observe(
            gain, config, np.random.default_rng(np.random.SeedSequence([seed, index, 2])), visited
        )
        out["buildings"][k] = heights > config.rx_height_m
        out["heights"][k] = heights
        out["tx_pos"][k] = tx
        out["group"][k] = group
    return out


_SCENES: dict[tuple[str, str], Any] = {}


def _rt_scene(xml: str, device: str) -> Any:
    """A real-city Sionna scene, loaded once per process (loading Munich takes seconds)."""
    key = (xml, str(device))
    if key not in _SCENES:
        _, rt = import_sionna(device)
        _SCENES[key] = rt.load_scene(xml)
    return _SCENES[key]


def _observe(gain: np.ndarray, config: SimConfig, rng: np.random.Generator, visited: np.ndarray | None) -> np.ndarray:
    """Measurement noise, floor and sparsity of ``config`` applied to ray-traced gain [T, H, W] dB."""
    from tomoformer.sim.physics import draw_value
    from tomoformer.sim.simulate import _measured_cells

    gain = gain.astype(np.float32, copy=True)
    noise_std_db = draw_value(config, "noise_std_db", rng)  # a range draws one std per sample
    if noise_std_db > 0:
        gain += noise_std_db * rng.standard_normal(gain.shape).astype(np.float32)
    if config.floor_db is not None:
        gain[gain < config.floor_db] = np.nan
    if config.measured_fraction < 1:
        T = gain.shape[0]
        if visited is None:  # exactly k random cells per frame, as in the fast simulator
            order = rng.random((T, gain[0].size)).argsort(axis=1)[:, : _measured_cells(config)]
            visited = np.zeros((T, gain[0].size), bool)
            np.put_along_axis(visited, order, True, axis=1)
        gain[~visited.reshape(gain.shape)] = np.nan
    return gain
