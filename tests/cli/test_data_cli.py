"""`tomoformer data ...`: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.data.test_format import make_arrays
from tomoformer.cli import main
from tomoformer.data.format import open_dataset, write_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "d.zarr", make_arrays(n=3), {"cell_size_m": 2.0, "group_names": ["a", "b", "c"]})


def test_info_prints_shapes_and_json(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", str(dataset)]) == 0
    text = capsys.readouterr().out
    assert "N=3" in text and "T=4" in text and "16x12" in text and "building fraction" in text
    assert main(["data", "info", str(dataset), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["arrays"]["signals"]["shape"] == [3, 4, 16, 12]


def test_validate_exit_codes(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "validate", str(dataset)]) == 0
    arrays = make_arrays()
    arrays["buildings"] = arrays["buildings"][:, :3]
    bad = write_dataset(tmp_path / "bad.npz", arrays, {})
    capsys.readouterr()
    assert main(["data", "validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "'buildings'" in err[0]


def test_bad_file_is_one_line_exit_2_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 this is not really a zip file")
    for argv in (
        ["data", "info", str(broken)],
        ["data", "show", str(broken), "--out", str(tmp_path / "x.png")],
        ["data", "convert", str(broken), str(tmp_path / "x.zarr")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(broken) in err[0], err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.zarr").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken.npz"]  # no temporary leftovers


def test_convert_round_trip_via_cli(dataset: Path, tmp_path: Path) -> None:
    assert main(["data", "convert", str(dataset), str(tmp_path / "d.npz")]) == 0
    assert main(["data", "convert", str(tmp_path / "d.npz"), str(tmp_path / "back.h5"), "--dtype", "float16"]) == 0
    with open_dataset(dataset) as a, open_dataset(tmp_path / "back.h5") as b:
        np.testing.assert_allclose(
            a.read("signals", slice(None)), b.read("signals", slice(None)).astype(np.float32), rtol=1e-3
        )
        np.testing.assert_array_equal(a.read("buildings", slice(None)), b.read("buildings", slice(None)))


def test_show_writes_png_and_checks_index(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fig.png"
    assert main(["data", "show", str(dataset), "--index", "2", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "show", str(dataset), "--index", "7", "--out", str(out), "--overwrite"]) == 2
    assert "out of range" in capsys.readouterr().err
