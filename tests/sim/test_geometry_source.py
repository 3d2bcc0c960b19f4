"""`tomoformer simulate --geometry`: given heights instead of procedural cities (fast engine and Sionna RT)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tomoformer.cli import main
from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.errors import ConfigError
from tomoformer.sim import sionna as sionna_module

SIZE = 16


def geometry_store(path: Path, n: int = 3) -> Path:
    """A geometry store as `geometry import` writes it: heights, buildings, group, kind=geometry; no signals."""
    rng = np.random.default_rng(0)
    heights = np.zeros((n, SIZE, SIZE), np.float32)
    for i in range(n):
        r, c = rng.integers(1, SIZE - 6, 2)
        heights[i, r : r + 5, c : c + 4] = 6.0 + 3 * i
    arrays = {"heights": heights, "buildings": (heights > 1.5).astype(np.uint8), "group": np.arange(n) % 2}
    attrs = {"kind": "geometry", "cell_size_m": 2.0, "group_names": ["a", "b"], "licence": "test licence"}
    return write_dataset(path, {**arrays, "group": arrays["group"].astype(np.int16)}, attrs)


def read_all(path: Path) -> dict[str, np.ndarray]:
    with open_dataset(path) as ds:
        return {key: ds.read(key, slice(None)) for key in ds.arrays} | {"attrs": ds.attrs}


FAST = ["--frames", "3", "--chunk", "2", "--no-progress"]


def test_fast_engine_uses_the_tiles_cycling_with_new_transmitters(tmp_path: Path) -> None:
    geo = geometry_store(tmp_path / "geo.zarr")
    out = tmp_path / "sim.zarr"
    assert main(["simulate", "--geometry", str(geo), "--out", str(out), *FAST]) == 0  # --n = tiles, grid = tiles
    data = read_all(out)
    tiles = read_all_geometry(geo)
    assert data["signals"].shape == (3, 3, SIZE, SIZE)
    np.testing.assert_array_equal(data["heights"], tiles["heights"])
    np.testing.assert_array_equal(data["group"], [0, 1, 0])
    assert data["attrs"]["group_names"] == ["a", "b"] and data["attrs"]["licence"] == "test licence"
    assert data["attrs"]["geometry"]["tiles"] == 3
    # Transmitters stand outdoors; inside buildings the signal is lower than outside.
    for i in range(3):
        rows, cols = np.clip(np.round(data["tx_pos"][i, :, :2]).astype(int), 0, SIZE - 1).T
        assert (tiles["heights"][i][rows, cols] <= 1.5).all()
    sig = data["signals"].astype(np.float32)
    b = np.broadcast_to(data["buildings"][:, None].astype(bool), sig.shape)
    assert np.nanmedian(sig[b]) < np.nanmedian(sig[~b])

    cycled = tmp_path / "cycled.zarr"
    assert main(["simulate", "--geometry", str(geo), "--out", str(cycled), "--n", "5", *FAST]) == 0
    more = read_all(cycled)
    np.testing.assert_array_equal(more["heights"][3:], tiles["heights"][:2])
    np.testing.assert_array_equal(more["signals"][:3], data["signals"])  # sample i depends on (seed, i) only
    assert not np.array_equal(more["tx_pos"][3], more["tx_pos"][0])  # the second pass draws new transmitters


def read_all_geometry(path: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {key: group[key][:] for key in ("heights", "buildings", "group")}


def test_geometry_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    geo = geometry_store(tmp_path / "geo.zarr")
    out = tmp_path / "x.zarr"

    def fails(argv: list[str], needle: str) -> None:
        assert main(["simulate", "--out", str(out), *FAST, *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err

    fails(["--geometry", str(geo), "--size", "32"], "--size is 32")
    fails(["--geometry", str(geo), "--cell-size-m", "1"], "--cell-size-m is 1")
    fails(["--geometry", str(tmp_path / "none.zarr")], "no such file")
    no_heights = write_dataset(tmp_path / "nh.npz", {"buildings": np.zeros((2, 4, 4), np.uint8)}, {})
    fails(["--geometry", str(no_heights)], "array 'heights' is missing")
    fails(["--geometry", str(geo), "--engine", "sionna", "--scene", "munich"], "not both")
    fails(["--geometry", str(geo), "--material", "concrete"], "need --engine sionna")
    fails(["--geometry", str(geo), "--out", str(geo)], "input")
    assert not out.exists()


def test_training_refuses_a_geometry_store_with_a_clear_line(tmp_path: Path) -> None:
    from tomoformer.errors import DataError

    geo = geometry_store(tmp_path / "geo.zarr")
    with pytest.raises(DataError, match=r"geometry store .* simulate --geometry"):
        open_dataset(geo)


def test_scene_materials_are_configurable(tmp_path: Path) -> None:
    from tomoformer.sim.scenes import write_city_scene

    heights = np.zeros((8, 8), np.float32)
    heights[2:5, 2:6] = 12.0
    xml = write_city_scene(tmp_path, heights, 2.0, np.zeros((8, 8), int), 10.0, 0.2, ("marble",))
    text = xml.read_text()
    assert 'value="marble"' in text and 'value="0.2"' in text and (tmp_path / "buildings-marble.ply").is_file()
    with pytest.raises(ConfigError, match="ITU material"):
        sionna_module.RayOptions(building_material="cheese")
    with pytest.raises(ConfigError, match="--wall-thickness-m"):
        sionna_module.RayOptions(wall_thickness_m=0.0)


def test_sionna_on_given_geometry_with_one_material(tmp_path: Path) -> None:
    pytest.importorskip("sionna.rt")
    if not (sionna_module.find_llvm() or os.environ.get("DRJIT_LIBLLVM_PATH")):
        pytest.skip("no LLVM >= 19 for Dr.Jit's CPU backend")
    geo = geometry_store(tmp_path / "geo.zarr", n=1)
    out = tmp_path / "rt.zarr"
    args = ["simulate", "--engine", "sionna", "--geometry", str(geo), "--out", str(out), "--frames", "2"]
    opts = ["--samples-per-tx", "10000", "--max-depth", "2", "--material", "concrete", "--wall-thickness-m", "0.3"]
    assert main([*args, *opts, "--no-progress"]) == 0
    data = read_all(out)
    np.testing.assert_array_equal(data["heights"], read_all_geometry(geo)["heights"])
    rt = data["attrs"]["ray_tracing"]
    assert rt["building_material"] == "concrete" and rt["scene"] == "geometry" and rt["wall_thickness_m"] == 0.3
    sig = data["signals"].astype(np.float32)
    b = np.broadcast_to(data["buildings"][:, None].astype(bool), sig.shape)
    assert np.isfinite(sig[~b]).mean() > 0.5 and np.nanmedian(sig[b]) < np.nanmedian(sig[~b])


def test_resume_refuses_another_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    geo = geometry_store(tmp_path / "geo.zarr")
    other = geometry_store(tmp_path / "other.zarr", n=2)
    out = tmp_path / "sim.zarr"
    assert main(["simulate", "--geometry", str(geo), "--out", str(out), *FAST]) == 0
    assert main(["simulate", "--geometry", str(geo), "--out", str(out), "--resume", *FAST]) == 0  # complete
    capsys.readouterr()
    assert main(["simulate", "--geometry", str(other), "--out", str(out), "--n", "3", "--resume", *FAST]) == 2
    assert "different geometry" in capsys.readouterr().err
