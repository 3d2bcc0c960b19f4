"""Stores that tell the truth: checksums, missing chunks, lying headers, links out of a store, and one value check
that `data validate`, `train`, `predict` and `evaluate` share."""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import toy_arrays
from tomoformer.cli import main
from tomoformer.data.format import ZarrWriter, convert, info, open_dataset, validate, write_dataset
from tomoformer.data.integrity import check_values, has_checksum
from tomoformer.data.merge import merge_datasets
from tomoformer.errors import DataError


def chunk_files(store: Path, key: str) -> list[Path]:
    return sorted(p for p in (store / key).rglob("*") if p.is_file() and p.name != "zarr.json")


def small(n: int = 4) -> dict[str, np.ndarray]:
    return toy_arrays(n=n, t=4, size=16)


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], (needle, err)
    return err[0]


# ------------------------------------------------------------------------------------------- checksums


def test_every_array_we_write_is_checksummed_and_complete(tmp_path: Path) -> None:
    arrays = small()
    arrays["buildings"][1] = 0  # a chunk equal to the fill value must still be written
    arrays["group"][:] = 0
    stores = [write_dataset(tmp_path / "a.zarr", arrays, {})]
    writer = ZarrWriter(tmp_path / "w.zarr", n_total=4, arrays_like=arrays, attrs={})
    writer.write(0, arrays)
    stores.append(writer.path)
    stores.append(convert(tmp_path / "a.zarr", tmp_path / "c.zarr"))
    stores.append(merge_datasets([stores[0], stores[1]], tmp_path / "m.zarr")[0])
    for store in stores:
        with open_dataset(store) as ds:
            assert all(has_checksum(array) for array in ds.arrays.values()), store
            for key, array in ds.arrays.items():
                assert len(chunk_files(store, key)) == int(np.prod(array.cdata_shape)), (store, key)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.data())
def test_any_flipped_byte_in_any_chunk_is_detected(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    store = write_dataset(tmp_path_factory.mktemp("flip") / "d.zarr", small(n=2), {})
    key = data.draw(st.sampled_from(["signals", "buildings", "tx_pos", "group"]))
    target = data.draw(st.sampled_from(chunk_files(store, key)))
    raw = bytearray(target.read_bytes())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    target.write_bytes(bytes(raw))
    problems = validate(store)
    assert len(problems) == 1 and f"array {key!r}" in problems[0] and "cannot read" in problems[0], problems
    with pytest.raises(DataError, match=f"array {key!r}"), open_dataset(store) as ds:
        ds.read(key, slice(None))
    with pytest.raises(DataError, match=f"array {key!r}"):
        convert(store, store.with_name("out.npz"))
    assert not store.with_name("out.npz").exists()


def test_flipped_byte_in_an_hdf5_chunk_is_detected(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "d.h5", small(n=3), {})
    with h5py.File(path) as f:
        assert f["signals"].fletcher32
        chunk = f["signals"].id.get_chunk_info(1)
    raw = bytearray(path.read_bytes())
    raw[chunk.byte_offset + chunk.size // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    problems = validate(path)
    assert len(problems) == 1 and "array 'signals'" in problems[0] and "cannot read" in problems[0], problems


def test_deleted_chunk_is_missing_not_zeros(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = write_dataset(tmp_path / "d.zarr", small(), {})
    for key in ("signals", "buildings"):
        copy = tmp_path / f"{key}.zarr"
        convert(store, copy)
        chunk_files(copy, key)[2].unlink()
        problems = validate(copy)
        assert len(problems) == 1 and f"array {key!r}: 1 of 4 chunks are missing" in problems[0], problems
        assert f"{key}/c/2/" in problems[0]
        with pytest.raises(DataError, match="chunks are missing"):
            open_dataset(copy)
        with pytest.raises(DataError, match="chunks are missing"):
            convert(copy, tmp_path / "out.npz")
        one_line_exit_2(["data", "validate", str(copy), "--quick"], capsys, str(copy), "missing")
        one_line_exit_2(["data", "info", str(copy)], capsys, "missing")


def test_quick_validate_reads_no_chunk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = write_dataset(tmp_path / "d.zarr", small(), {})
    chunk_files(store, "signals")[0].write_bytes(b"\x00garbage")
    assert main(["data", "validate", str(store), "--quick"]) == 0
    assert "valid" in capsys.readouterr().out
    one_line_exit_2(["data", "validate", str(store)], capsys, str(store), "'signals', index 0", "cannot read")


# ------------------------------------------------------------------------------------------- lying headers


def _lie_about_n(store: Path, n: int) -> None:
    for meta in store.glob("*/zarr.json"):
        spec = json.loads(meta.read_text())
        spec["shape"][0] = n
        meta.write_text(json.dumps(spec))


@pytest.mark.parametrize("checksums", [True, False])
def test_header_claiming_a_billion_samples_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], checksums: bool
) -> None:
    store = tmp_path / "lie.zarr"
    if checksums:
        write_dataset(store, small(), {})
    else:
        write_old_store(store, small())
    _lie_about_n(store, 10**9)
    start = time.perf_counter()
    with pytest.raises(DataError, match="999999996 of 1000000000 chunks are missing"):
        open_dataset(store)
    assert "chunks are missing" in validate(store)[0]
    one_line_exit_2(["data", "info", str(store)], capsys, str(store), "metadata claims more data")
    one_line_exit_2(["data", "validate", str(store)], capsys, "missing")
    assert time.perf_counter() - start < 1.0


def test_npz_header_claiming_more_than_stored_fails_before_allocating(tmp_path: Path) -> None:
    import io
    import zipfile

    member = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**9, 4, 16, 16)}
    np.lib.format.write_array_header_1_0(member, header)
    member.write(np.zeros((2, 4, 16, 16), np.float32).tobytes())  # 2 samples stored, 10^9 claimed
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("signals.npy", member.getvalue())
    start = time.perf_counter()
    with pytest.raises(DataError, match="header claims shape \\[1000000000, 4, 16, 16\\]"):
        open_dataset(path)
    assert time.perf_counter() - start < 1.0


def test_hdf5_with_unwritten_chunks_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lie.h5"
    with h5py.File(path, "w") as f:
        signals = f.create_dataset("signals", shape=(10**6, 4, 16, 16), chunks=(1, 4, 16, 16), dtype="f4")
        signals[:2] = -80.0
    start = time.perf_counter()
    with pytest.raises(DataError, match="999998 of 1000000 chunks are missing"):
        open_dataset(path)
    assert time.perf_counter() - start < 1.0


# ------------------------------------------------------------------------------------------- foreign storage


def test_hdf5_external_storage_virtual_data_and_links_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full((2, 4, 16, 16), -60.0, np.float32).tobytes())
    external = tmp_path / "external.h5"
    with h5py.File(external, "w") as f:
        f.create_dataset(
            "signals", shape=(2, 4, 16, 16), dtype="f4", external=[(str(secret), 0, secret.stat().st_size)]
        )
    other = write_dataset(tmp_path / "other.h5", small(n=2), {})
    virtual = tmp_path / "virtual.h5"
    layout = h5py.VirtualLayout(shape=(2, 4, 16, 16), dtype="f4")
    layout[:] = h5py.VirtualSource(str(other), "signals", shape=(2, 4, 16, 16))
    with h5py.File(virtual, "w") as f:
        f.create_virtual_dataset("signals", layout)
    linked = tmp_path / "linked.h5"
    with h5py.File(linked, "w") as f:
        f["signals"] = h5py.ExternalLink(str(other), "signals")
    for path, needle in ((external, "other files"), (virtual, "virtual dataset"), (linked, "link to another file")):
        with pytest.raises(DataError, match=needle):
            open_dataset(path)
        assert needle in validate(path)[0]
        one_line_exit_2(["data", "convert", str(path), str(tmp_path / "copy.npz")], capsys, str(path), needle)
        assert not (tmp_path / "copy.npz").exists()


@pytest.mark.parametrize("what", ["chunk", "folder", "inside"])
def test_symlinks_in_a_store_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    store = write_dataset(tmp_path / "d.zarr", small(), {})
    donor = write_dataset(tmp_path / "donor.zarr", small(), {})
    if what == "chunk":  # a chunk pointing at another file
        target = chunk_files(store, "signals")[0]
        target.unlink()
        target.symlink_to(chunk_files(donor, "signals")[0])
    elif what == "folder":  # a chunk folder leading out of the store
        folder = store / "signals" / "c" / "1"
        for p in sorted(folder.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        folder.rmdir()
        folder.symlink_to(donor / "signals" / "c" / "1", target_is_directory=True)
    else:  # even a link within the store: chunks must be plain files
        target = chunk_files(store, "signals")[0]
        target.unlink()
        target.symlink_to(chunk_files(store, "signals")[1])
    with pytest.raises(DataError, match="symbolic link"):
        open_dataset(store)
    assert "symbolic link" in validate(store, quick=True)[0]
    one_line_exit_2(["data", "convert", str(store), str(tmp_path / "copy.npz")], capsys, "symbolic link")


# ------------------------------------------------------------------------------------------- old stores


def write_old_store(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A store as written before checksums: zarr defaults, fill-value chunks skipped."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for key, value in arrays.items():
        chunks = (1, *value.shape[1:]) if value.ndim > 1 else value.shape
        group.create_array(key, shape=value.shape, chunks=chunks, dtype=value.dtype, fill_value=0)[...] = value
    group.attrs.update({"cell_size_m": 2.0, "signal_unit": "path_gain_db"})
    return path


def test_stores_without_checksums_still_read(tmp_path: Path) -> None:
    arrays = small()
    arrays["buildings"][0] = 0
    arrays["group"][:] = 0  # zarr skipped writing these chunks: they read as the fill value, not as missing
    store = write_old_store(tmp_path / "old.zarr", arrays)
    assert not chunk_files(store, "group") and len(chunk_files(store, "buildings")) == 3
    assert validate(store) == []
    with open_dataset(store) as ds:
        assert not has_checksum(ds.signals)
        for key, value in arrays.items():
            np.testing.assert_array_equal(ds.read(key, slice(None)), value)
    with open_dataset(convert(store, tmp_path / "new.zarr")) as ds:
        assert has_checksum(ds.signals)
    # A deleted chunk of 'signals' is still found: no real sample is one constant (fill) dB level.
    chunk_files(store, "signals")[1].unlink()
    assert "1 of 4 chunks are missing" in validate(store)[0]


# ------------------------------------------------------------------------------------------- values


def _with(**changes: np.ndarray) -> dict[str, np.ndarray]:
    arrays = small()
    arrays.update(changes)
    return arrays


def _values_case(name: str) -> tuple[dict[str, np.ndarray], str]:
    arrays = small()
    if name == "tx_far":
        arrays["tx_pos"][1, 2, 0] = 1e6
        return arrays, "more than 10 grid sizes outside the grid"
    if name == "tx_height":
        arrays["tx_pos"][0, 1, 2] = 5e4
        return arrays, "heights outside 0..10000 m"
    if name == "inf":
        arrays["signals"][2, 0, 3, 3] = -np.inf
        return arrays, "infinite values"
    if name == "all_nan":
        arrays["signals"][:] = np.nan
        return arrays, "no measured cell"
    if name == "linear_power":
        arrays["signals"] = (10 ** (arrays["signals"] / 10) * 1e3).astype(np.float32)
        arrays["signals"][0, 0, 0, 0] = 1e3
        return arrays, "plausible -300..100 dB"
    if name == "group_range":
        arrays["group"][3] = 7
        return arrays, "group id 7"
    raise AssertionError(name)


VALUE_CASES = ["tx_far", "tx_height", "inf", "all_nan", "linear_power", "group_range"]


@pytest.mark.parametrize("case", VALUE_CASES)
@pytest.mark.parametrize("fmt", ["zarr", "npz", "h5"])
def test_implausible_values_are_refused_by_validate(tmp_path: Path, case: str, fmt: str) -> None:
    arrays, needle = _values_case(case)
    path = write_dataset(tmp_path / f"d.{fmt}", arrays, {"group_names": ["a", "b"]})
    problems = validate(path)
    assert any(needle in p for p in problems), problems
    assert all(str(path) in p and "\n" not in p for p in problems)
    assert validate(path, quick=True) == []  # values need the full read


@pytest.mark.parametrize("case", VALUE_CASES)
def test_train_predict_and_evaluate_refuse_what_validate_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    from tomoformer.checkpoint import save_checkpoint
    from tomoformer.models.registry import create_model

    arrays, needle = _values_case(case)
    data = write_dataset(tmp_path / "d.zarr", arrays, {"group_names": ["a", "b"]})
    checkpoint = save_checkpoint(tmp_path / "t.ckpt", create_model("threshold"), {"model": "threshold"})
    runs = {
        "train": ["train", "--data", str(data), "--model", "threshold", "--max-epochs", "1", "--out", "RUN"],
        "predict": ["predict", "--checkpoint", str(checkpoint), "--data", str(data), "--out", "RUN.npz"],
        "evaluate": ["evaluate", "--model", "threshold", "--data", str(data), "--out", "RUN"],
    }
    for name, argv in runs.items():
        out = tmp_path / name
        one_line_exit_2([a.replace("RUN", str(out)) for a in argv], capsys, str(data), needle)
        assert not out.exists() and not out.with_suffix(".npz").exists(), name


def test_value_check_streams_and_runs_once_per_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tomoformer.data import schema
    from tomoformer.data.datamodule import SignalMapDataset

    path = write_dataset(tmp_path / "d.zarr", small(n=6), {})
    monkeypatch.setattr(schema, "BLOCK_BYTES", 5000)  # one sample of signals (4 KiB) per block
    seen: list[int] = []
    with open_dataset(path) as ds:
        assert check_values(ds, progress=seen.append) == []
        assert seen[:6] == [4096] * 6  # signals sample by sample (4 x 16 x 16 float32)
        assert sum(seen) == sum(ds.read(key, slice(None)).nbytes for key in ds.arrays)
        reads: list[str] = []
        original = ds.read
        monkeypatch.setattr(ds, "read", lambda key, index: reads.append(key) or original(key, index))
        SignalMapDataset(ds, in_memory=False)
        n_checked = len(reads)
        SignalMapDataset(ds, np.arange(3), in_memory=False)
        assert n_checked > 0 and len(reads) == n_checked


def test_info_of_valid_store_still_summarises(tmp_path: Path) -> None:
    summary = info(write_dataset(tmp_path / "d.zarr", small(), {}))
    assert summary["n_samples"] == 4 and summary["signals_nan_fraction"] == 0.0


@pytest.mark.parametrize("model_name", ["tomoformer_tiny", "unet"])
def test_values_at_the_edge_of_the_accepted_ranges_give_finite_maps(model_name: str) -> None:
    """The limits are where models still work: what validate accepts never turns into NaN maps."""
    import torch

    from tomoformer.data.datamodule import model_tx_pos
    from tomoformer.data.integrity import DB_RANGE, HEIGHT_RANGE_M, TX_GRID_MARGIN
    from tomoformer.models.registry import create_model

    torch.manual_seed(0)
    size, margin = 16, TX_GRID_MARGIN * 16
    signals = torch.empty(2, 4, size, size).uniform_(*DB_RANGE)
    signals[1, :, ::2] = float("nan")
    corners = [[-margin, size + margin, HEIGHT_RANGE_M[1]], [size + margin, -margin, HEIGHT_RANGE_M[0]]]
    tx = np.array([corners * 2, corners[::-1] * 2], np.float32)  # [2, 4, 3]
    model = create_model(model_name).eval()
    with torch.no_grad():
        logits = model(signals, model_tx_pos(tx, cell_size_m=2.0, rx_height_m=1.5))
    assert torch.isfinite(logits).all()
