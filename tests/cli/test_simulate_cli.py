"""`tomoformer simulate`: a valid store, chunked writing, resume after a crash, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tomoformer.cli import main
from tomoformer.data.format import ZarrWriter, open_dataset, validate

SMALL = ["--frames", "3", "--size", "16", "--chunk", "2", "--no-progress"]


def read_all(path: Path) -> dict[str, np.ndarray]:
    with open_dataset(path) as ds:
        return {key: ds.read(key, slice(None)) for key in ds.arrays}


def test_simulate_writes_a_valid_store(tmp_path: Path) -> None:
    out = tmp_path / "sim.zarr"
    assert main(["simulate", "--out", str(out), "--n", "5", "--style", "mixed", *SMALL]) == 0
    assert validate(out) == []
    arrays = read_all(out)
    assert arrays["signals"].shape == (5, 3, 16, 16) and arrays["signals"].dtype == np.float16
    assert arrays["buildings"].shape == (5, 16, 16) and set(np.unique(arrays["buildings"])) <= {0, 1}
    assert arrays["tx_pos"].shape == (5, 3, 3) and arrays["group"].shape == (5,)
    assert not list(tmp_path.glob(".*partial"))


def test_same_seed_same_data_in_every_format(tmp_path: Path) -> None:
    for name in ("a.zarr", "b.npz", "c.h5"):
        assert main(["simulate", "--out", str(tmp_path / name), "--n", "3", "--seed", "7", *SMALL]) == 0
    a, b, c = (read_all(tmp_path / n) for n in ("a.zarr", "b.npz", "c.h5"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(a[key], c[key])


def test_interrupted_run_leaves_no_complete_store_and_resume_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = tmp_path / "straight.zarr"
    assert main(["simulate", "--out", str(straight), "--n", "5", "--seed", "3", *SMALL]) == 0

    out = tmp_path / "crash.zarr"
    original = ZarrWriter.write

    def crash_after_first_block(self: ZarrWriter, start: int, block: dict[str, np.ndarray]) -> None:
        if start >= 2:
            raise KeyboardInterrupt
        original(self, start, block)

    monkeypatch.setattr(ZarrWriter, "write", crash_after_first_block)
    assert main(["simulate", "--out", str(out), "--n", "5", "--seed", "3", *SMALL]) == 130
    assert not out.exists()
    partial = tmp_path / ".crash.partial.zarr"
    assert partial.exists() and "incomplete: 2 of 5" in validate(partial)[0]

    monkeypatch.setattr(ZarrWriter, "write", original)
    assert main(["simulate", "--out", str(out), "--n", "5", "--seed", "4", "--resume", *SMALL]) == 2  # other seed
    assert main(["simulate", "--out", str(out), "--n", "5", "--seed", "3", "--resume", *SMALL]) == 0
    assert validate(out) == [] and not partial.exists()
    for key, value in read_all(straight).items():
        np.testing.assert_array_equal(read_all(out)[key], value)


def test_config_file_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("frames: 2\nsize: 12\nmeasured_fraction: 0.5\n")
    out = tmp_path / "cfg.npz"
    assert main(["simulate", "--config", str(config), "--out", str(out), "--n", "2", "--no-progress"]) == 0
    signals = read_all(out)["signals"]
    assert signals.shape == (2, 2, 12, 12)
    assert 0.3 < np.isnan(signals).mean() < 0.7
    capsys.readouterr()
    config.write_text("frames: 2\nwarp_factor: 9\n")
    for argv in (
        ["simulate", "--config", str(config), "--out", str(tmp_path / "x.zarr"), "--n", "2"],
        ["simulate", "--out", str(tmp_path / "x.zarr"), "--n", "2", "--style", "lunar"],
        ["simulate", "--out", str(tmp_path / "x.txt"), "--n", "2"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tomoformer: error:"), err
    # Option values are checked by argparse itself: the same one line and exit 2, before anything runs.
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--out", str(tmp_path / "x.zarr"), "--n", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: argument --n" in err[0], err
    assert not (tmp_path / "x.zarr").exists()
