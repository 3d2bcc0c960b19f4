"""The benchmark scripts write results.csv / results.md through the output policy: a results file they did not
write is refused (before anything is written), their own is replaced."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tomoformer.errors import OutputError

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # zeroshot imports realcity, finetune_study imports accuracy
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


REALCITY_ROWS = [
    {"model": m, "row": r, "test": t, "seed": 0, "iou": 0.5}
    for m, r in (("threshold", "fitted"), ("unet", "scratch"))
    for t in ("dense", "sparse")
]
ZEROSHOT_ROWS = [{"world": "cities", "model": "unet", "seed": 0, "test": "munich", "iou": 0.4, "train_s": 1.0}]


@pytest.mark.parametrize(
    ("script", "rows"), [("realcity", REALCITY_ROWS), ("zeroshot", ZEROSHOT_ROWS)], ids=["realcity", "zeroshot"]
)
@pytest.mark.parametrize("mine", ["results.csv", "results.md"])
def test_combine_refuses_results_it_did_not_write(tmp_path: Path, script: str, rows: list, mine: str) -> None:
    module = load(script)
    (tmp_path / mine).write_text("my own table")
    with pytest.raises(OutputError, match="did not write"):
        module.write_results(rows, tmp_path)
    assert (tmp_path / mine).read_text() == "my own table"
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine]  # the other file was not written either


@pytest.mark.parametrize(
    ("script", "rows"), [("realcity", REALCITY_ROWS), ("zeroshot", ZEROSHOT_ROWS)], ids=["realcity", "zeroshot"]
)
def test_combine_replaces_its_own_results(tmp_path: Path, script: str, rows: list) -> None:
    module = load(script)
    module.write_results(rows, tmp_path)
    first = (tmp_path / "results.md").read_text()
    module.write_results(rows, tmp_path)
    assert (tmp_path / "results.md").read_text() == first
    assert "iou" in (tmp_path / "results.csv").read_text().splitlines()[0]


def test_accuracy_write_csv_refuses_a_users_file(tmp_path: Path) -> None:
    accuracy = load("accuracy")
    (tmp_path / "results.csv").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        accuracy.write_csv(tmp_path / "results.csv", [{"a": 1}])
    assert (tmp_path / "results.csv").read_text() == "mine"
    accuracy.write_csv(tmp_path / "runs.csv", [{"a": 1}])
    accuracy.write_csv(tmp_path / "runs.csv", [{"a": 2}])  # its own file: replaced
    assert (tmp_path / "runs.csv").read_text() == "a\n2\n"
