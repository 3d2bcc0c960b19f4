"""Ownership is a record that cannot be faked or inherited: planted or copied markers, copied store attributes,
adopted folders, symbolic links, recorded run entries and check-before-clean (tomoformer.io, tomoformer.outputs)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import toy_arrays
from tomoformer.data.format import write_dataset
from tomoformer.errors import OutputError
from tomoformer.io import (
    MARKER,
    OWNER_ATTR,
    atomic_path,
    is_ours,
    read_marker,
    recorded_entries,
    remove,
    write_marker,
)
from tomoformer.outputs import RUN_ENTRIES, check_output, claim_output, run_folder


def user_folder(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return path


def intact(path: Path) -> bool:
    return (path / "notes.txt").read_text() == "mine" and (path / "sub" / "data.bin").read_bytes() == b"\x00\x01"


def every_claim(path: Path, folder: bool) -> None:
    """Every way of asking for ``path`` as an output must refuse it (and touch nothing)."""
    for overwrite in (False, True):
        with pytest.raises(OutputError):
            check_output(path, overwrite=overwrite, folder=folder)
    for options in ({"overwrite": True}, {"resume": True}):
        kwargs = {"resume": False, "overwrite": False, **options}
        with pytest.raises(OutputError), run_folder(path, record={}, command="train", **kwargs) as run:  # type: ignore[arg-type]
            run.begin()


def test_a_planted_empty_marker_makes_nothing_ours(tmp_path: Path) -> None:
    folder = user_folder(tmp_path / "mine")
    (folder / MARKER).write_text("")
    assert not is_ours(folder) and read_marker(folder) is None
    every_claim(folder, folder=True)
    with pytest.raises(OutputError, match="did not write"):
        remove(folder)
    assert intact(folder)


def test_a_marker_copied_from_one_of_our_folders_is_not_ours(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    write_marker(ours, {"kind": "run", "command": "train"}, add=["checkpoints", "notes.txt", "sub"])
    assert is_ours(ours)
    planted = user_folder(tmp_path / "planted")
    shutil.copy(ours / MARKER, planted / MARKER)  # the record, word for word, in another folder
    copied = tmp_path / "copied"
    shutil.copytree(ours, copied)  # a copy of our whole folder (cp -r) is the user's
    user_folder(copied / "more")
    for folder in (planted, copied):
        assert not is_ours(folder) and recorded_entries(folder) == set()
        every_claim(folder, folder=True)
    assert intact(planted) and intact(copied / "more")
    with pytest.raises(OutputError, match=r"copied, planted or from an older version"):
        check_output(planted, overwrite=True, folder=True)


def test_a_store_with_our_attributes_copied_is_not_ours(tmp_path: Path) -> None:
    ours = write_dataset(tmp_path / "ours.zarr", toy_arrays(n=2), {})
    assert is_ours(ours)
    copy = tmp_path / "copy.zarr"
    shutil.copytree(ours, copy)  # the same attributes, written_by included
    assert json.loads((copy / "zarr.json").read_text())["attributes"][OWNER_ATTR]["by"] == "tomoformer"
    assert not is_ours(copy)
    legacy = tmp_path / "legacy.zarr"
    legacy.mkdir()
    (legacy / "zarr.json").write_text(json.dumps({"zarr_format": 3, "attributes": {OWNER_ATTR: "tomoformer"}}))
    assert not is_ours(legacy)
    for store in (copy, legacy):
        with pytest.raises(OutputError, match="did not write"):
            check_output(store, overwrite=True)
        with pytest.raises(OutputError):
            remove(store)
    assert (copy / "zarr.json").is_file() and (legacy / "zarr.json").is_file()


def test_an_adopted_folder_stays_the_users(tmp_path: Path) -> None:
    adopted = tmp_path / "results"
    adopted.mkdir()
    with claim_output(adopted, overwrite=False, command="evaluate", folder=True):
        (adopted / "metrics.json").write_text("{}")
    record = read_marker(adopted)
    assert record is not None and record["created"] is False and record["entries"] == ["metrics.json"]
    assert not is_ours(adopted)
    (adopted / "thesis.tex").write_text("mine")
    # A file output never replaces a folder; a store output never replaces one that is not wholly ours.
    with pytest.raises(OutputError, match="never replaces a folder"):
        check_output(adopted, overwrite=True)
    with pytest.raises(OutputError):
        remove(adopted)
    with pytest.raises(OutputError), atomic_path(adopted) as tmp:
        tmp.write_text("x")
    # The folder output itself may be written again; the user's file stays.
    with claim_output(adopted, overwrite=True, command="evaluate", folder=True):
        (adopted / "report.html").write_text("<p>")
    assert (adopted / "thesis.tex").read_text() == "mine"
    assert recorded_entries(adopted) == {"metrics.json", "report.html"}


def test_a_failed_command_gives_an_adopted_folder_back_empty(tmp_path: Path) -> None:
    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(RuntimeError), claim_output(given, overwrite=False, command="evaluate", folder=True):
        (given / "metrics.json").write_text("{}")
        raise RuntimeError("bad checkpoint")
    assert given.is_dir() and list(given.iterdir()) == []
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(RuntimeError), run_folder(run, record={}, command="train", resume=False, overwrite=False) as r:
        r.begin()
        raise RuntimeError("bad data")
    assert run.is_dir() and list(run.iterdir()) == []


def test_symbolic_links_are_never_written_through_under_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "real"
    with run_folder(target, record={}, command="train", resume=False, overwrite=False) as run:
        run.begin()
        run.finish()
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    for options in ({"overwrite": True}, {"resume": True}):
        kwargs = {"resume": False, "overwrite": False, **options}
        with pytest.raises(OutputError, match="symbolic link"), run_folder(link, record={}, command="train", **kwargs):  # type: ignore[arg-type]
            pass
    with pytest.raises(OutputError, match="symbolic link"):
        check_output(link, overwrite=True, folder=True)
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "file-link.npz").symlink_to(tmp_path / "file.txt")
    with pytest.raises(OutputError, match="symbolic link"):
        check_output(tmp_path / "file-link.npz", overwrite=True)
    # A run folder reached through a linked parent folder is not overwritten either.
    parent = tmp_path / "parent-link"
    parent.symlink_to(tmp_path, target_is_directory=True)
    claim = run_folder(parent / "real", record={}, command="train", resume=False, overwrite=True)
    with pytest.raises(OutputError, match="through a symbolic link"), claim:
        pass
    assert (target / "config.yaml").is_file() and (tmp_path / "file.txt").read_text() == "mine"


def test_overwrite_cleans_only_after_the_new_run_begins(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with run_folder(run, record={"lr": 1}, command="train", resume=False, overwrite=False) as r:
        r.begin()
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
        r.finish()
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError), run_folder(run, record={"lr": 2}, command="train", resume=False, overwrite=True):
        raise RuntimeError("the new run's data is bad")  # before begin(): nothing may change
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_name_we_create_held_by_the_user_refuses_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with run_folder(run, record={}, command="train", resume=False, overwrite=False) as r:
        r.begin()
        r.finish()
    (run / "figures").mkdir()  # the run made no figures: this one is the user's
    (run / "figures" / "plot.png").write_bytes(b"mine")
    claim = run_folder(run, record={}, command="train", resume=False, overwrite=True)
    with pytest.raises(OutputError, match="holds figures, which tomoformer did not create"), claim:
        pass
    assert (run / "figures" / "plot.png").read_bytes() == b"mine"


_USER_NAMES = sorted({"data", "test", "runs", "results.csv", "summary.md", "logs-3", "notes.txt", "x", ".hidden"})
_RUN_MADE = sorted(RUN_ENTRIES - {"config.yaml"})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    made=st.sets(st.sampled_from(_RUN_MADE), max_size=5),
    mine=st.sets(st.sampled_from(_USER_NAMES + _RUN_MADE), max_size=5),
)
def test_overwrite_never_touches_what_the_run_did_not_record(tmp_path_factory, made: set, mine: set) -> None:
    """Whatever the run made and whatever the user added after it, ``--overwrite`` either refuses (a name of ours
    held by the user) or removes exactly what the run recorded: every file of the user's survives."""
    run = tmp_path_factory.mktemp("prop") / "run"
    with run_folder(run, record={}, command="train", resume=False, overwrite=False) as r:
        r.begin()
        for name in made:
            (run / name).mkdir()
        r.finish()
    recorded = recorded_entries(run)
    assert recorded == {"config.yaml", *made}
    users = {name for name in mine if not (run / name).exists()}
    for name in users:
        (run / name).write_text(f"user {name}")
    try:
        with run_folder(run, record={}, command="train", resume=False, overwrite=True) as again:
            again.begin()
    except OutputError as err:
        assert users & RUN_ENTRIES and "did not create" in str(err)
    else:
        assert not users & RUN_ENTRIES
        for name in made:
            assert not (run / name).exists()
    for name in users:
        assert (run / name).read_text() == f"user {name}"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.dictionaries(st.sampled_from(["kind", "command", "created", "entries", "folder"]), st.just(None)))
def test_any_marker_text_not_written_for_the_folder_is_ignored(tmp_path_factory, record: dict) -> None:
    ours = tmp_path_factory.mktemp("ours")
    write_marker(ours, {"kind": "run"}, add=["x"])
    genuine = json.loads((ours / MARKER).read_text())
    other = user_folder(tmp_path_factory.mktemp("other") / "f")
    for text in (json.dumps(genuine), json.dumps({**genuine, **record}), "", "{", "[]"):
        (other / MARKER).write_text(text)
        assert read_marker(other) is None and not is_ours(other)
    # A FIFO planted as the marker is never opened.
    os.unlink(other / MARKER)
    os.mkfifo(other / MARKER)
    assert read_marker(other) is None and not is_ours(other)
    assert intact(other)


def test_a_run_killed_after_it_began_has_its_names_recorded(tmp_path: Path) -> None:
    """The names a run may create are recorded when it begins, so a run killed at any later point (no clean-up
    ran) is still replaced by --overwrite, and a resumed one keeps its logs-N recorded."""
    import subprocess
    import sys

    run = tmp_path / "run"
    code = (
        "import os, sys\n"
        "from tomoformer.outputs import run_folder\n"
        f"with run_folder({str(run)!r}, record={{}}, command='train', resume=False, overwrite=False) as r:\n"
        "    r.begin()\n"
        "    os.makedirs(os.path.join(r.path, 'checkpoints'))\n"
        "    open(os.path.join(r.path, 'checkpoints', 'last.ckpt'), 'w').close()\n"
        "    os._exit(9)  # killed: no clean-up, no finish\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 9
    assert {"checkpoints", "logs", "figures", "config.yaml"} <= recorded_entries(run)
    (run / "mine.txt").write_text("mine")
    with run_folder(run, record={}, command="train", resume=False, overwrite=True) as again:
        again.begin()
    assert not (run / "checkpoints").exists() and (run / "mine.txt").read_text() == "mine"


def test_a_run_entry_replaced_by_a_link_is_never_written_through(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with run_folder(run, record={}, command="train", resume=False, overwrite=False) as r:
        r.begin()
        (run / "checkpoints").mkdir()
        r.finish()
    shutil.rmtree(run / "checkpoints")
    mine = user_folder(tmp_path / "mine")
    (run / "checkpoints").symlink_to(mine, target_is_directory=True)
    for options in ({"overwrite": True}, {"resume": True}):
        kwargs = {"resume": False, "overwrite": False, **options}
        claim = run_folder(run, record={}, command="train", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(OutputError, match="checkpoints is a symbolic link"), claim:
            pass
    assert intact(mine)
