"""The output policy (tomoformer.outputs) and the guarded replace/remove of tomoformer.io."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tomoformer.errors import OutputError, TomoFormerError
from tomoformer.io import MARKER, atomic_path, is_ours, remove, replace, write_marker, write_text_atomic
from tomoformer.outputs import (
    RunFolder,
    check_not_input,
    check_output,
    claim_names,
    claim_output,
    differing_keys,
    output_lock,
    run_folder,
)


def user_folder(path: Path) -> Path:
    """A folder of the user's: files we never created."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return path


def assert_intact(path: Path) -> None:
    assert (path / "notes.txt").read_text() == "mine"
    assert (path / "sub" / "data.bin").read_bytes() == b"\x00\x01"


def test_output_error_is_a_user_error() -> None:
    assert issubclass(OutputError, TomoFormerError) and OutputError.exit_code == 2


def test_replace_and_remove_refuse_a_folder_that_is_not_ours(tmp_path: Path) -> None:
    folder = user_folder(tmp_path / "out.zarr")
    new = tmp_path / "new.npz"
    new.write_bytes(b"x")
    with pytest.raises(OutputError, match="a file output never replaces a folder"):
        replace(new, folder)
    with pytest.raises(OutputError, match="did not write"):
        remove(folder)
    with pytest.raises(OutputError), atomic_path(folder) as tmp:
        tmp.write_text("x")
    assert_intact(folder)
    assert new.exists()
    # The failed atomic write left no hidden temporary behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.npz", "out.zarr"]


def test_replace_takes_over_our_folders_and_empty_ones(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    write_marker(ours, {"kind": "folder"}, add=["old.txt"])
    (ours / "old.txt").write_text("old")
    assert is_ours(ours)
    with atomic_path(ours) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert (ours / "new.txt").is_file() and not (ours / "old.txt").exists()
    assert is_ours(ours)  # a folder written through atomic_path carries the marker
    (ours / "added_by_user.txt").write_text("mine")  # now it is not wholly ours: never replaced as a whole
    with pytest.raises(OutputError, match="holds files it did not"), atomic_path(ours) as tmp:
        tmp.mkdir()
    assert (ours / "added_by_user.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OutputError, match="a file output never replaces a folder"):
        write_text_atomic(empty, "text")  # not even an empty folder
    with atomic_path(empty) as tmp:
        tmp.mkdir()
    assert is_ours(empty)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_atomically_written_files_get_the_umask_mode_not_the_temporary_one(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.txt", "text")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600


def test_zarr_stores_we_write_are_ours(tmp_path: Path) -> None:
    from tests.conftest import toy_arrays
    from tomoformer.data.format import write_dataset

    store = write_dataset(tmp_path / "d.zarr", toy_arrays(n=2), {})
    assert is_ours(store) and not (store / MARKER).exists()
    foreign = tmp_path / "f.zarr"
    foreign.mkdir()
    (foreign / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    assert not is_ours(foreign)
    (foreign / "zarr.json").write_text("{not json")
    assert not is_ours(foreign)


def test_remove_unlinks_a_symlink_and_never_follows_it(tmp_path: Path) -> None:
    target = user_folder(tmp_path / "target")
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    remove(link)
    assert not link.exists() and not link.is_symlink()
    assert_intact(target)


@pytest.mark.parametrize(
    ("out", "inp"),
    [("d.zarr", "d.zarr"), ("d.zarr/pred.npz", "d.zarr"), ("runs", "runs/data.zarr"), ("./x/../d.zarr", "d.zarr")],
)
def test_an_output_overlapping_an_input_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str, inp: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="overlaps the input"):
        check_not_input(out, [None, inp])


def test_an_output_reached_through_a_symlink_to_the_input_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(b"x")
    alias = tmp_path / "alias.npz"
    alias.symlink_to(data)
    with pytest.raises(OutputError, match="overlaps"):
        check_output(alias, overwrite=True, inputs=[data])


def test_check_output_policy(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    check_output(missing, overwrite=False)
    existing = tmp_path / "file.npz"
    existing.write_bytes(b"x")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output(existing, overwrite=False)
    check_output(existing, overwrite=True)
    folder = user_folder(tmp_path / "user")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="never replaces"):
            check_output(folder, overwrite=overwrite, folder=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output(empty, overwrite=False, folder=True)
    ours = tmp_path / "ours"
    write_marker(ours, {"kind": "folder"})
    (ours / "report.html").write_text("x")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output(ours, overwrite=False, folder=True)
    check_output(ours, overwrite=True, folder=True)


def test_lock_refuses_a_second_writer_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "d.zarr"
    with output_lock(out, "simulate") as lock:
        assert lock.name == "d.zarr.lock"
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "simulate"
        busy = rf"in use by .*tomoformer simulate.*pid {os.getpid()}"
        with pytest.raises(OutputError, match=busy), output_lock(out, "simulate"):
            pass
    assert not lock.exists()


def test_lock_is_released_on_exceptions(tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    with pytest.raises(RuntimeError), output_lock(out, "predict"):
        raise RuntimeError("boom")
    assert not (tmp_path / "x.npz.lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    lock = tmp_path / "x.npz.lock"
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "predict", "started": "then"}))
    with output_lock(tmp_path / "x.npz", "predict"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    # A live holder on this host (ourselves, in another "process" record) is not taken over.
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "command": "train"}))
    with pytest.raises(OutputError, match="tomoformer train"), output_lock(tmp_path / "x.npz", "predict"):
        pass
    assert lock.exists()


def test_claim_output_folder_failure_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    with pytest.raises(RuntimeError), claim_output(out, overwrite=False, command="evaluate", folder=True):
        (out / "metrics.json").write_text("{}")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def run_record(**changes: object) -> dict:
    return {"model": "unet", "lr": 0.001, "seed": 0, "max_epochs": 2, "augment": {"d4": True}, **changes}


def start(path: Path, record: dict, **options: object) -> RunFolder:
    kwargs = {"resume": False, "overwrite": False, "may_change": {"max_epochs", "resume"}, **options}
    with run_folder(path, record=record, command="train", **kwargs) as run:  # type: ignore[arg-type]
        run.begin()
        (path / "checkpoints").mkdir(exist_ok=True)
        (path / "checkpoints" / "last.ckpt").write_bytes(b"x")
        return run


def test_run_folder_resume_refuses_other_options_naming_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    start(run, run_record())
    with pytest.raises(OutputError, match=r"other augment\.d4, lr, seed"):
        start(run, run_record(lr=0.1, seed=3, augment={"d4": False}), resume=True)
    resumed = start(run, run_record(max_epochs=5), resume=True)
    assert resumed.resumed and resumed.stored is not None and resumed.stored["max_epochs"] == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["max_epochs"] == 5


def test_run_folder_without_resume_or_overwrite_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    start(run, run_record())
    with pytest.raises(OutputError, match="--resume"):
        start(run, run_record())
    with pytest.raises(OutputError, match="not both"):
        start(run, run_record(), resume=True, overwrite=True)


def test_run_folder_overwrite_removes_only_our_names(tmp_path: Path) -> None:
    run = tmp_path / "run"
    start(run, run_record())
    claim_names(run, ["logs-1"])
    (run / "logs-1").mkdir()
    for mine in ("logs_mine", "logs-7", "data", "results.csv"):  # names some command creates, but not this run
        (run / mine).mkdir()
        (run / mine / "keep.txt").write_text("mine")
    (run / "notes.txt").write_text("mine")
    with run_folder(run, record=run_record(), command="train", resume=False, overwrite=True) as fresh:
        assert fresh.fresh
        assert (run / "checkpoints" / "last.ckpt").exists()  # nothing is removed before the run begins
        fresh.begin()
        left = sorted(p.name for p in run.iterdir())
        assert left == [MARKER, "config.yaml", "data", "logs-7", "logs_mine", "notes.txt", "results.csv"]
    for mine in ("logs_mine", "logs-7", "data", "results.csv"):
        assert (run / mine / "keep.txt").read_text() == "mine"


def test_run_folder_refuses_a_user_folder_even_with_overwrite(tmp_path: Path) -> None:
    folder = user_folder(tmp_path / "user")
    for options in ({"overwrite": True}, {"resume": True}, {}):
        kwargs = {"resume": False, "overwrite": False, **options}
        claim = run_folder(folder, record={}, command="train", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(OutputError, match="did not write"), claim:
            pass
    assert_intact(folder)


def test_a_failed_fresh_run_leaves_no_folder_but_a_resumable_one_stays(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fresh = run_folder(run, record={}, command="train", resume=False, overwrite=False)
    with pytest.raises(RuntimeError), fresh as r:
        r.begin()
        raise RuntimeError("bad data")
    assert not run.exists() and not (tmp_path / "run.lock").exists()
    fresh = run_folder(run, record={}, command="train", resume=False, overwrite=False)
    with pytest.raises(RuntimeError), fresh as r:
        r.begin()
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
        raise RuntimeError("killed in epoch 2")
    assert (run / "checkpoints" / "last.ckpt").exists()


def test_a_failed_resume_keeps_the_earlier_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    start(run, run_record())
    before = (run / "config.yaml").read_text()
    with pytest.raises(OutputError):
        start(run, run_record(lr=0.5), resume=True)
    assert (run / "config.yaml").read_text() == before


_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=3))


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdef"), _values, max_size=6),
    st.dictionaries(st.sampled_from("abcdef"), _values, max_size=6),
)
def test_differing_keys_names_exactly_the_changed_options(a: dict, b: dict) -> None:
    keys = differing_keys(a, b, set())
    assert keys == sorted(k for k in set(a) | set(b) if json.dumps(a.get(k)) != json.dumps(b.get(k)))
    assert differing_keys(a, yaml.safe_load(yaml.safe_dump(a)), set()) == []
    assert differing_keys(a, b, set(a) | set(b)) == []
