"""`tomoformer plan`: the CSV it writes, its pictures, and one-line refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tomoformer.cli import main


def plan_args(checkpoint: Path, data: Path, candidates: Path) -> list[str]:
    return ["plan", "--checkpoint", str(checkpoint), "--data", str(data), "--candidates", str(candidates)]


def test_plan_writes_k_ranked_unique_candidates_per_sample(checkpoint: Path, toy_dataset: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    k0, k = 10, 4
    candidates = np.concatenate([rng.uniform(0, 16, (16, k0, 2)), rng.uniform(2, 20, (16, k0, 1))], -1)
    np.save(tmp_path / "C.npy", candidates.astype(np.float32))
    out, png = tmp_path / "plan.csv", tmp_path / "png"
    args = plan_args(checkpoint, toy_dataset, tmp_path / "C.npy")
    assert main([*args, "--k", str(k), "--out", str(out), "--png", str(png)]) == 0
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["sample", "rank", "candidate", "row", "col", "height", "score"]
        rows = list(reader)
    assert len(rows) == 16 * k
    for sample in range(16):
        mine = [r for r in rows if int(r["sample"]) == sample]
        assert [int(r["rank"]) for r in mine] == list(range(1, k + 1))
        chosen = [int(r["candidate"]) for r in mine]
        assert len(set(chosen)) == k and all(0 <= c < k0 for c in chosen)
        for r in mine:
            assert np.allclose(
                [float(r["row"]), float(r["col"]), float(r["height"])],
                candidates[sample, int(r["candidate"])],
                atol=1e-3,
            )
        scores = [float(r["score"]) for r in mine]
        assert all(s >= 0 for s in scores)
    assert len(list(png.glob("*.png"))) == 16
    assert main([*args, "--k", str(k), "--out", str(out)]) == 2  # exists: refused without --overwrite


def test_bad_candidates_file_is_one_line(checkpoint: Path, toy_dataset: Path, tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((16, 10, 2), dtype=np.float32))
    args = plan_args(checkpoint, toy_dataset, tmp_path / "bad.npy")
    assert main([*args, "--k", "2", "--out", str(tmp_path / "plan.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.npy" in err and "[16, 10, 2]" in err and "\n" not in err
    assert not (tmp_path / "plan.csv").exists()
