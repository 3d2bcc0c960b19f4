"""benchmarks/robustness.py: the grid varies one thing at a time, held-out cities are refused, the summary's
margins are IoU minus the threshold's, and the test arrays of a condition are what it says."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tomoformer.data.heldout import refuse_named_city
from tomoformer.errors import ConfigError, DataError

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the script imports its sibling accuracy.py, as when run from benchmarks/
spec = importlib.util.spec_from_file_location("bench_robustness", BENCH / "robustness.py")
assert spec is not None and spec.loader is not None
robustness = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = robustness  # dataclasses look their module up while the class is made
spec.loader.exec_module(robustness)


def _args(**kw: object) -> argparse.Namespace:
    args = robustness.parse(["--size", "16", "--t-ref", "4", "--t-max", "16", "--n-test", "3"])
    for key, value in kw.items():
        setattr(args, key, value)
    return args


def test_grid_covers_every_family_and_varies_one_thing_at_a_time() -> None:
    grid = robustness.conditions(16, 256)
    families = {c.family for c in grid}
    assert families == {"reference", "T", "kept", "noise", "layout", "heights", "terrain", "tracer", "tx_pos"}
    assert sorted(c.frames for c in grid if c.family in ("T", "reference")) == [2**k for k in range(9)]
    assert {c.overrides["tx_layout"] for c in grid if c.family == "layout"} == {"inside", "ring", "rooftop", "street"}
    assert [c.overrides["measured_fraction"] for c in grid if c.family == "kept"] == [0.3, 0.1, 0.03]
    for c in grid:
        changes = bool(c.overrides) + (c.frames not in (None, 16)) + c.fading + (not c.tx_pos) + (c.ray is not None)
        # the Rayleigh row replaces the default noise by fading: one change of the noise model
        assert changes == 1 or c.family == "reference" or (c.fading and changes == 2), c
    assert len({(c.family, c.name) for c in grid}) == len(grid)


def test_tracer_rows_need_the_ray_tracer() -> None:
    tracer = [c for c in robustness.conditions(8, 16) if c.family == "tracer"]
    assert tracer and all(robustness.not_run(c, "fast") for c in tracer)
    assert not any(robustness.not_run(c, "sionna") for c in tracer)
    others = [c for c in robustness.conditions(8, 16) if c.family != "tracer"]
    assert not any(robustness.not_run(c, engine) for c in others for engine in ("fast", "sionna"))


@pytest.mark.parametrize(
    ("names", "role", "refused"),
    [
        ("rt/train_florence.zarr {}", "train", True),
        ('geo.zarr {"group_names": ["munich", "San-Francisco"]}', "val", True),
        ("rt/florence_fresh.zarr {}", "test", False),
        ('geo/sf.zarr {"scene": "san_francisco"}', "test", True),
        ("rt/train_munich.zarr {}", "train", False),
    ],
)
def test_held_out_cities_are_refused(names: str, role: str, refused: bool) -> None:
    if refused:
        with pytest.raises(DataError, match="may not come from"):
            refuse_named_city(names, role)
    else:
        refuse_named_city(names, role)


def test_rayleigh_fading_in_db_has_the_textbook_spread() -> None:
    clean = np.zeros((4, 8, 32, 32), np.float32)
    clean[0, 0, 0, 0] = np.nan
    faded = robustness.rayleigh_db(clean, 0)
    values = faded[np.isfinite(faded)]
    assert np.isnan(faded[0, 0, 0, 0])
    assert abs(values.std() - 5.57) < 0.15 and abs(values.mean() + 2.51) < 0.15
    np.testing.assert_array_equal(faded, robustness.rayleigh_db(clean, 0))


def test_condition_arrays_share_tiles_and_slice_t() -> None:
    args = _args()
    grid = {c.name: c for c in robustness.conditions(4, 16)}
    cache: dict = {}
    ref = robustness.test_data(args, grid["T=4"], None, cache)
    t16 = robustness.test_data(args, grid["T=16"], None, cache)
    ring = robustness.test_data(args, grid["ring"], None, cache)
    assert ref["signals"].shape == (3, 4, 16, 16) and t16["signals"].shape == (3, 16, 16, 16)
    np.testing.assert_array_equal(ref["signals"], t16["signals"][:, :4])  # the first T maps of one simulation
    np.testing.assert_array_equal(ref["buildings"], ring["buildings"])  # every condition on the same tiles
    assert ((ring["tx_pos"][..., :2] < -0.5) | (ring["tx_pos"][..., :2] > 15.5)).any(-1).all()


def test_summary_margin_is_iou_minus_threshold() -> None:
    rows = [
        {"family": "T", "condition": "T=1", "model": m, "seed": s, "iou": v, "status": "ok"}
        for m, s, v in (("unet", 0, 0.5), ("unet", 1, 0.7), ("threshold", "", 0.4), ("tomoformer (realcity)", "", 0.3))
    ]
    summary = {r["model"]: r for r in robustness.summarise(rows)}
    assert summary["unet"]["iou_mean"] == pytest.approx(0.6)
    assert summary["unet"]["margin_over_threshold"] == pytest.approx(0.2)
    assert summary["tomoformer (realcity)"]["margin_over_threshold"] == pytest.approx(-0.1)
    assert summary["unet"]["runs"] == 2 and summary["unet"]["iou_sd"] == pytest.approx(0.1414, abs=1e-3)


def test_work_folder_with_other_settings_is_refused(tmp_path: Path) -> None:
    robustness.check_work(tmp_path / "work", _args())
    robustness.check_work(tmp_path / "work", _args())  # same settings: reused
    with pytest.raises(ConfigError, match="epochs"):
        robustness.check_work(tmp_path / "work", _args(epochs=99))


def test_bad_t_range_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = robustness.main(["--t-ref", "64", "--t-max", "8", "--out", str(tmp_path / "o"), "--work", str(tmp_path)])
    assert code == 2 and "--t-ref" in capsys.readouterr().err


def _geometry(path: Path, names: list[str]) -> Path:
    from tomoformer.data.format import write_dataset

    heights = np.zeros((2, 16, 16), np.float32)
    heights[0, 2:8, 3:9], heights[1, 9:14, 4:12] = 12.0, 20.0
    arrays = {"heights": heights, "buildings": (heights > 1.5).astype(np.uint8), "group": np.array([0, 1], np.int16)}
    return write_dataset(path, arrays, {"kind": "geometry", "cell_size_m": 2.0, "group_names": names})


def test_test_geometry_tiles_are_the_test_tiles(tmp_path: Path) -> None:
    from tomoformer.geometry.source import GeometrySource

    geometry = GeometrySource(_geometry(tmp_path / "geo.zarr", ["munich", "florence"]))
    grid = {c.name: c for c in robustness.conditions(4, 16)}
    data = robustness.test_data(_args(n_test=2), grid["rooftop"], geometry, {})
    np.testing.assert_array_equal(data["buildings"], [geometry.heights(i) > 1.5 for i in range(2)])


def test_san_francisco_test_geometry_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    geo = _geometry(tmp_path / "geo.zarr", ["munich", "san_francisco"])
    work = tmp_path / "work"
    code = robustness.main(["--test-geometry", str(geo), "--out", str(tmp_path / "o"), "--work", str(work)])
    assert code == 2 and "san francisco" in capsys.readouterr().err
    assert not work.exists()
