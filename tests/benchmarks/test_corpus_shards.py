"""benchmarks/realcity_corpus.py scaled out: --shard I/N builds shard I of every store, --merge merges them in
order, --ray hands every store to `simulate --ray` (the simulate commands are recorded, not run: ray tracing needs
sionna-rt)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tomoformer.data.shards import Shard

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "realcity_corpus.py"
spec = importlib.util.spec_from_file_location("bench_realcity_corpus", SCRIPT)
assert spec is not None and spec.loader is not None
corpus = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = corpus  # dataclasses look their module up while the script runs
spec.loader.exec_module(corpus)


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """Record every tomoformer command; a geometry import or a simulate creates its --out folder."""
    ran: list[list[str]] = []

    def fake(*args: str, check: bool = True) -> int:
        ran.append(list(args))
        if "--out" in args:
            Path(args[args.index("--out") + 1]).mkdir(parents=True)
        return 0

    monkeypatch.setattr(corpus, "tomoformer", fake)
    files = {k: tmp_path / f"{k}.pbf" for k in ("helsinki", "town", "bubenec")}
    monkeypatch.setattr(corpus, "footprint_files", lambda: files)
    return ran


def test_shard_builds_shard_i_of_every_store_then_merge_merges_them_in_order(
    tmp_path: Path, commands: list[list[str]]
) -> None:
    only = {"train_munich", "val_bubenec"}
    for i in range(3):
        corpus.build(tmp_path, 1000, only, shard=Shard(i, 3))
    sims = [c for c in commands if c[0] == "simulate"]
    assert len(sims) == 6 and all(c[-3:-1] == ["--resume", "--shard"] for c in sims)
    assert [c[-1] for c in sims] == ["0/3", "0/3", "1/3", "1/3", "2/3", "2/3"]
    outs = [c[c.index("--out") + 1] for c in sims]
    assert outs[2] == str(tmp_path / "shards" / "train_munich.part-0001.zarr")
    assert sum(c[:2] == ["geometry", "import"] for c in commands) == 1  # imported once, shared by the shards
    log = (tmp_path / "corpus.csv").read_text().splitlines()
    assert log[1].startswith("train_munich.part-0000.zarr,5,32,160,")  # tiles [0, 16 // 3) of 16
    commands.clear()
    corpus.merge(tmp_path, only)
    merges = [c for c in commands if c[:2] == ["data", "merge"]]
    assert merges[0] == ["data", "merge", *(outs[i] for i in (0, 2, 4)), "--out", str(tmp_path / "train_munich.zarr")]
    assert len(merges) == 2


def test_ray_hands_every_store_to_simulate_ray(tmp_path: Path, commands: list[list[str]]) -> None:
    corpus.build(tmp_path, 1000, {"train_etoile"}, ray="auto", shards=8)
    (sim,) = [c for c in commands if c[0] == "simulate"]
    assert sim[-4:] == ["--ray", "auto", "--shards", "8"] and sim[sim.index("--out") + 1].endswith("train_etoile.zarr")


def test_a_bad_shard_is_an_argparse_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "argv", ["realcity_corpus.py", "--shard", "4/4"])
    with pytest.raises(SystemExit) as exit_info:
        corpus.main()
    assert exit_info.value.code == 2 and "--shard" in capsys.readouterr().err
