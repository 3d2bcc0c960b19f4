"""`tomoformer data import radiomapseer`: a tiny tree in RadioMapSeer's layout converts with the right dB and tx_pos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tomoformer.cli import main
from tomoformer.data.format import open_dataset, validate
from tomoformer.data.radiomapseer import RadioMapSeerOptions, gain_to_db, import_radiomapseer, parse_maps

SIZE = 16
MAPS, TXS = (0, 1), (0, 1, 2)


def tx_pixel(m: int, t: int) -> tuple[int, int]:
    return 2 + 3 * t + m, 13 - 4 * t


def gain_pixels(m: int, t: int) -> np.ndarray:
    rng = np.random.default_rng(10 * m + t)
    pixels = rng.integers(1, 256, (SIZE, SIZE)).astype(np.uint8)
    pixels[buildings(m) == 1] = 0  # RadioMapSeer leaves buildings at the floor value
    return pixels


def buildings(m: int) -> np.ndarray:
    out = np.zeros((SIZE, SIZE), np.uint8)
    out[4 + m : 8 + m, 5:10] = 1
    return out


def make_tree(root: Path, simulation: str = "DPM") -> Path:
    (root / "png" / "buildings_complete").mkdir(parents=True)
    (root / "png" / "antennas").mkdir(parents=True)
    (root / "gain" / simulation).mkdir(parents=True)
    for m in MAPS:
        Image.fromarray(buildings(m) * 255).save(root / "png" / "buildings_complete" / f"{m}.png")
        for t in TXS:
            Image.fromarray(gain_pixels(m, t)).save(root / "gain" / simulation / f"{m}_{t}.png")
            antenna = np.zeros((SIZE, SIZE), np.uint8)
            antenna[tx_pixel(m, t)] = 255
            Image.fromarray(antenna).save(root / "png" / "antennas" / f"{m}_{t}.png")
    return root


def test_gain_to_db_scale_and_floor() -> None:
    db = gain_to_db(np.array([0, 1, 255], np.uint8))
    assert np.isnan(db[0]) and db[2] == pytest.approx(-47.0) and db[1] == pytest.approx(-186 + 139 / 255)


def test_parse_maps() -> None:
    assert parse_maps("3,0-2,2") == [0, 1, 2, 3]
    with pytest.raises(Exception, match="--maps"):
        parse_maps("a-b")


def test_tree_converts_with_db_buildings_and_tx_pos(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "RadioMapSeer")
    out = tmp_path / "rms.zarr"
    assert main(["data", "import", "radiomapseer", str(root), "--out", str(out), "--frames", "3", "--no-progress"]) == 0
    assert validate(out) == []
    with open_dataset(out) as ds:
        signals = ds.read("signals", slice(None)).astype(np.float32)
        assert signals.shape == (2, 3, SIZE, SIZE)
        for m in MAPS:
            np.testing.assert_array_equal(ds.read("buildings", m), buildings(m))
            for t in TXS:
                expected = gain_to_db(gain_pixels(m, t))
                np.testing.assert_allclose(signals[m, t], expected, atol=0.07)  # float16 storage
                assert np.isnan(signals[m, t][buildings(m) == 1]).all()
                np.testing.assert_array_equal(ds.read("tx_pos", m)[t], [*tx_pixel(m, t), 1.5])
        assert ds.attrs["cell_size_m"] == 1.0 and ds.attrs["frequency_hz"] == 5.9e9
        assert ds.attrs["signal_unit"] == "path_gain_db" and ds.attrs["map_ids"] == [0, 1]


def test_subsets_split_transmitters_and_formats_agree(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "r", simulation="IRT2")
    opts = RadioMapSeerOptions(simulation="IRT2", maps=[1], frames=1, samples_per_map=3, seed=4)
    _, n, _ = import_radiomapseer(root, tmp_path / "a.npz", opts)
    import_radiomapseer(root, tmp_path / "b.zarr", opts)
    with open_dataset(tmp_path / "a.npz") as a, open_dataset(tmp_path / "b.zarr") as b:
        assert n == 3 and a.shape == (3, 1, SIZE, SIZE)
        np.testing.assert_array_equal(a.read("signals", slice(None)), b.read("signals", slice(None)))
        rows = sorted(int(r) for r in a.read("tx_pos", slice(None))[:, 0, 0])
        assert rows == sorted(tx_pixel(1, t)[0] for t in TXS)  # the three samples use disjoint transmitters


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_bad_trees_exit_2_with_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path / "r")
    out = tmp_path / "x.zarr"
    base = ["data", "import", "radiomapseer", str(root), "--out", str(out), "--frames", "3", "--no-progress"]
    one_line(capsys, [*base, "--simulation", "IRT4"], "gain/IRT4: missing folder")
    one_line(capsys, [*base, "--frames", "4"], "has 3 transmitter images")
    one_line(capsys, [*base, "--maps", "0,7"], "7.png: missing file")
    (root / "png" / "antennas" / "1_2.png").unlink()
    one_line(capsys, base, "1_2.png: missing file")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(root / "png" / "antennas" / "1_2.png")
    one_line(capsys, base, "no transmitter pixel")
    (root / "gain" / "DPM" / "1_1.png").write_bytes(b"not a png")
    one_line(capsys, base, "1_1.png: not a readable PNG")
    one_line(capsys, ["data", "import", "radiomapseer", str(tmp_path / "nope"), "--out", str(out)], "no such directory")
    assert not out.exists() and not list(tmp_path.glob(".*"))
