"""The attacks on the output policy, each from an empty folder: nothing of the user's is ever deleted, even with
--overwrite; a failed run leaves the earlier one as it was; --resume goes by the data's identity."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.cli.test_outputs_cli import TRAIN, intact, one_line_error, user_folder
from tests.conftest import toy_arrays
from tomoformer.cli import main
from tomoformer.data.format import write_dataset
from tomoformer.io import MARKER


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "toy.zarr", toy_arrays(n=8), {"cell_size_m": 2.0})
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train(out: str, *extra: str, data: str = "toy.zarr") -> list[str]:
    return ["train", "--data", data, *TRAIN, "--out", out, *extra]


def test_an_adopted_folder_is_never_replaced_by_a_file_output(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "results").mkdir()
    assert main(["evaluate", "--model", "threshold", "--data", "toy.zarr", "--out", "results"]) == 0
    user_folder(work / "results" / "mine")
    (work / "results" / "thesis.tex").write_text("years of work")
    capsys.readouterr()
    assert main(["data", "show", "toy.zarr", "--out", "results", "--overwrite"]) == 2
    one_line_error(capsys, "results", "never replaces a folder")
    assert main(["evaluate", "--model", "threshold", "--data", "toy.zarr", "--out", "results", "--overwrite"]) == 0
    assert intact(work / "results" / "mine") and (work / "results" / "thesis.tex").read_text() == "years of work"


def test_train_overwrite_removes_only_what_the_run_recorded(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train("run")) == 0
    run = work / "run"
    for name in ("data", "test", "runs", "evaluate"):
        user_folder(run / name)
    for name in ("results.csv", "summary.md", "summary.json", "report.html"):
        (run / name).write_text("mine")
    assert main(train("run", "--overwrite")) == 0
    for name in ("data", "test", "runs", "evaluate"):
        assert intact(run / name), name
    for name in ("results.csv", "summary.md", "summary.json", "report.html"):
        assert (run / name).read_text() == "mine", name
    assert (run / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.parametrize("plant", ["empty-marker", "copied-marker", "copied-run"])
def test_planted_or_copied_ownership_gives_nothing(work: Path, capsys: pytest.CaptureFixture[str], plant: str) -> None:
    assert main(train("ours")) == 0
    victim = work / "victim"
    if plant == "copied-run":
        shutil.copytree(work / "ours", victim)
        user_folder(victim / "data")
        (victim / "thesis.tex").write_text("years of work")
        (victim / "deep").mkdir()
        (victim / "deep" / "raw.bin").write_bytes(b"\x01\x02")
    else:
        user_folder(victim)
        if plant == "empty-marker":
            (victim / MARKER).write_text("")
        else:
            shutil.copy(work / "ours" / MARKER, victim / MARKER)
    before = snapshot(victim)
    for args in (
        train("victim", "--overwrite"),
        train("victim", "--resume"),
        ["evaluate", "--model", "threshold", "--data", "toy.zarr", "--out", "victim", "--overwrite"],
        ["data", "convert", "toy.zarr", "victim", "--overwrite"],
    ):
        assert main(args) == 2, args
        one_line_error(capsys, "victim")
    assert snapshot(victim) == before


def test_a_copied_store_is_not_ours(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(work / "toy.zarr", work / "copy.zarr")
    (work / "copy.zarr" / "notes.txt").write_text("mine")
    assert main(["data", "convert", "toy.zarr", "copy.zarr", "--overwrite"]) == 2
    one_line_error(capsys, "copy.zarr", "did not write")
    assert (work / "copy.zarr" / "notes.txt").read_text() == "mine"


def test_simulate_never_deletes_a_store_at_its_temporary_name(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(work / "toy.zarr", work / ".d.partial.zarr")  # someone's store, at simulate's hidden name
    before = snapshot(work / ".d.partial.zarr")
    sim = ["simulate", "--n", "4", "--frames", "4", "--size", "16", "--no-progress", "--out", "d.zarr"]
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert main([*sim, *extra]) == 2
        one_line_error(capsys, ".d.partial.zarr", "did not write")
    assert snapshot(work / ".d.partial.zarr") == before and not (work / "d.zarr").exists()


def test_a_failed_overwrite_leaves_the_earlier_run_as_it_was(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train("run")) == 0
    arrays = toy_arrays(n=8)
    del arrays["buildings"]
    write_dataset(work / "unlabelled.zarr", arrays, {})
    before = snapshot(work / "run")
    assert main(train("run", "--overwrite", data="unlabelled.zarr")) == 2
    capsys.readouterr()
    assert main(train("run", "--overwrite", "--lr", "-1")) == 2
    capsys.readouterr()
    assert snapshot(work / "run") == before


def test_a_failed_fresh_run_keeps_the_empty_folder_it_was_given(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arrays = toy_arrays(n=8)
    del arrays["buildings"]
    write_dataset(work / "unlabelled.zarr", arrays, {})
    (work / "given").mkdir()
    assert main(train("given", data="unlabelled.zarr")) == 2
    capsys.readouterr()
    assert (work / "given").is_dir() and list((work / "given").iterdir()) == []


def test_resume_goes_by_the_datas_identity_not_its_spelling(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(train("run")) == 0
    # The same store by its absolute path resumes.
    assert main(train("run", "--resume", "--max-epochs", "2", data=str(work / "toy.zarr"))) == 0
    assert (work / "run" / "logs-1").is_dir()
    # From another folder, the same relative spelling names other data: refused, and the run is left alone.
    elsewhere = work / "elsewhere"
    write_dataset(elsewhere / "toy.zarr", toy_arrays(n=8, seed=3), {"cell_size_m": 2.0})
    before = snapshot(work / "run")
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(train(str(work / "run"), "--resume", "--max-epochs", "3")) == 2
    one_line_error(capsys, "cannot resume", "data_identity")
    assert snapshot(work / "run") == before
    # And the same data from there by a relative path resumes.
    rel = os.path.relpath(work / "toy.zarr", elsewhere)
    assert main(train(str(work / "run"), "--resume", "--max-epochs", "3", data=rel)) == 0


def test_a_scene_folder_of_ours_is_replaced_but_not_once_the_user_added_to_it(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("geopandas")
    from tests.cli.test_geometry_cli import SMALL
    from tests.geometry.conftest import PLAIN, SQUARE, feature, write_geojson

    town = write_geojson(work / "town.geojson", [feature(SQUARE, height=30), feature(PLAIN, height=9)])
    assert main(["geometry", "import", str(town), "--out", "t.zarr", *SMALL]) == 0
    scene = ["geometry", "scene", "t.zarr", "--index", "0", "--out", "scene", "--material", "brick"]
    assert main(scene) == 0
    assert main([*scene, "--overwrite"]) == 0  # wholly ours: replaced
    (work / "scene" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main([*scene, "--overwrite"]) == 2
    one_line_error(capsys, "scene")
    assert (work / "scene" / "notes.txt").read_text() == "mine"
