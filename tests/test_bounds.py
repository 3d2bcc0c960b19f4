"""Inputs that ask for memory or time are checked against a bound before anything is allocated; special files are
never read; bad attributes, empty names and unwritable folders are one-line errors (exit 2)."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import toy_arrays
from tomoformer.checkpoint import load_checkpoint, save_checkpoint
from tomoformer.cli import main
from tomoformer.data.format import open_dataset, validate, write_dataset
from tomoformer.data.integrity import ATTRIBUTE_RANGES
from tomoformer.data.radiomapseer import MAX_MAP_NUMBER, parse_maps
from tomoformer.errors import CheckpointError, ConfigError, DataError, OutputError
from tomoformer.models.registry import create_model
from tomoformer.outputs import check_not_input, run_folder

SMALL_UNET = {"base_channels": 4, "depth": 1}


def one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tomoformer: error:"), err
    for word in words:
        assert word in err, err
    return err


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(channels=st.integers(250, 7_500).map(lambda k: 8 * k))  # GroupNorm needs multiples of 8
def test_checkpoint_options_asking_for_more_than_its_weights_are_refused_before_allocating(
    tmp_path_factory: pytest.TempPathFactory, channels: int
) -> None:
    path = tmp_path_factory.mktemp("ckpt") / "big.ckpt"
    save_checkpoint(
        path,
        create_model("unet", **SMALL_UNET),
        {"model": "unet", "model_kwargs": {"base_channels": channels, "depth": 1}},
    )
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="refused before allocating"):
        load_checkpoint(path)
    assert time.perf_counter() - start < 30  # sized on the meta device, not built


def test_a_checkpoint_of_honest_size_still_loads(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "ok.ckpt", create_model("unet", **SMALL_UNET), {"model": "unet", "model_kwargs": SMALL_UNET}
    )
    assert load_checkpoint(path).name == "unet"


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".ckpt", ".png"])
def test_a_fifo_where_a_file_is_expected_is_refused_never_read(tmp_path: Path, suffix: str) -> None:
    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)  # opening it for reading would block forever
    if suffix in (".npz", ".h5"):
        with pytest.raises(DataError, match="FIFO"):
            open_dataset(fifo)
        assert "FIFO" in validate(fifo)[0]
    elif suffix == ".ckpt":
        with pytest.raises(CheckpointError):
            load_checkpoint(fifo)
    else:
        from tomoformer.data.radiomapseer import _read_png

        with pytest.raises(DataError, match="FIFO"):
            _read_png(fifo)


@pytest.mark.parametrize("where", ["zarr.json", "signals/zarr.json", "signals/c/0/0/0/0"])
def test_a_fifo_inside_a_store_is_refused(tmp_path: Path, where: str) -> None:
    store = write_dataset(tmp_path / "d.zarr", toy_arrays(n=2), {})
    target = store / where
    assert target.is_file(), sorted(str(p.relative_to(store)) for p in store.rglob("*"))[:20]
    target.unlink()
    os.mkfifo(target)
    with pytest.raises(DataError, match=r"FIFO|regular file"):
        open_dataset(store)


_BAD_VALUES = st.one_of(
    st.text(max_size=5),
    st.floats(max_value=-1e-9),
    st.just(float("nan")),
    st.just(float("inf")),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(ATTRIBUTE_RANGES)), value=_BAD_VALUES)
def test_string_negative_or_absurd_attributes_are_one_line_data_errors(
    tmp_path_factory: pytest.TempPathFactory, key: str, value: object
) -> None:
    store = write_dataset(tmp_path_factory.mktemp("attrs") / "d.npz", toy_arrays(n=2), {key: value})
    with pytest.raises(DataError, match=key):
        open_dataset(store)


@pytest.mark.parametrize(("key", "value"), [("frequency_hz", 3.5e9), ("rx_height_m", 1.5), ("rx_height_m", 0)])
def test_plausible_attributes_are_fine(tmp_path: Path, key: str, value: float) -> None:
    with open_dataset(write_dataset(tmp_path / "d.npz", toy_arrays(n=2), {key: value})) as dataset:
        assert dataset.attrs[key] == value


@given(a=st.integers(0, 10**12), span=st.integers(0, 10**12))
def test_maps_ranges_are_bounded_before_the_list_is_made(a: int, span: int) -> None:
    b = a + span
    if b > MAX_MAP_NUMBER:
        with pytest.raises(ConfigError, match="beyond map"):
            parse_maps(f"{a}-{b}")
    else:
        assert parse_maps(f"{a}-{b}") == list(range(a, b + 1))


def test_an_image_header_beyond_the_bound_is_refused_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    from tomoformer.data.radiomapseer import MAX_IMAGE_PIXELS, _read_png

    side = int(MAX_IMAGE_PIXELS**0.5) + 16
    Image.new("L", (side, side)).save(tmp_path / "huge.png")
    with pytest.raises(DataError, match="pixels, more than"):
        _read_png(tmp_path / "huge.png")


def test_geometry_import_bounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("geopandas")
    from tests.geometry.conftest import PLAIN, SQUARE, feature, write_geojson

    ok = write_geojson(tmp_path / "ok.geojson", [feature(SQUARE, height=30), feature(PLAIN, height=9)])
    absurd = write_geojson(tmp_path / "absurd.geojson", [feature(SQUARE, height=1e39), feature(PLAIN, height=9)])
    base = ["geometry", "import", "--no-progress", "--tile", "16"]
    cases = [
        ([str(ok), "--stride", "1", "--cell-size-m", "0.0001"], "tile positions"),
        ([str(ok), "--rotations", "100000000"], "--rotations"),
        ([str(ok), "--tile", "100000"], "--tile"),
        ([str(ok), "--rx-height-m", "nan"], "--rx-height-m"),
        ([str(absurd)], "beyond 1000 m"),
    ]
    for extra, word in cases:
        start = time.perf_counter()
        assert main([*base, *extra, "--out", str(tmp_path / "g.npz")]) == 2, extra
        one_line(capsys, word)
        assert time.perf_counter() - start < 60
    assert not (tmp_path / "g.npz").exists()


def test_empty_output_names_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="empty name"):
        check_not_input("", [])
    with (
        pytest.raises(OutputError, match="empty name"),
        run_folder("", record={}, command="train", resume=False, overwrite=True),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_unwritable_or_full_folders_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    import tomoformer.io

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(tmp_path / "ro"))

    write_dataset(tmp_path / "toy.zarr", toy_arrays(n=4), {})
    monkeypatch.setattr(tomoformer.io.tempfile, "mkstemp", refuse)  # what a read-only folder does (also for root)
    assert main(["data", "show", str(tmp_path / "toy.zarr"), "--out", str(tmp_path / "ro" / "s.png")]) == 2
    one_line(capsys, os.strerror(code))


def test_validate_reports_a_store_without_checksums(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import zarr

    store = tmp_path / "plain.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=3)
    for key, value in toy_arrays(n=2).items():
        group.create_array(key, data=value, chunks=value.shape)  # zarr's defaults: no checksum codec
    assert main(["data", "validate", str(store)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "carry no checksums" in out and "signals" in out
    assert main(["data", "validate", str(write_dataset(tmp_path / "ours.zarr", toy_arrays(n=2), {}))]) == 0
    assert "checksums" not in capsys.readouterr().out
    json.loads((store / "zarr.json").read_text())  # untouched, still readable metadata
    assert np.asarray(group["signals"]).shape[0] == 2


def test_class_image_folders_refuse_fifos_and_huge_headers(tmp_path: Path) -> None:
    from PIL import Image

    from tomoformer.classify.data import MAX_IMAGE_PIXELS, load_images

    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "imgs" / name / "ok.png")
    os.mkfifo(tmp_path / "imgs" / "a" / "pipe.png")
    with pytest.raises(DataError, match="not a regular file"):
        load_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "a" / "pipe.png").unlink()
    side = int(MAX_IMAGE_PIXELS**0.5) + 16
    Image.new("L", (side, side)).save(tmp_path / "imgs" / "b" / "huge.png")
    with pytest.raises(DataError, match="pixels, more than"):
        load_images(tmp_path / "imgs")
