"""benchmarks/scale.py's projection: 100,000 maps spread over machines x workers at an efficiency, and the
recorded per-map cost of the ray-traced corpus (total seconds over total maps)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"
spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
assert spec is not None and spec.loader is not None
scale = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = scale  # dataclasses look their module up while the script runs
spec.loader.exec_module(scale)


def test_projection_divides_the_corpus_over_machines_workers_and_efficiency() -> None:
    hours = dict(scale.projection(seconds_per_map=0.9, efficiency=0.5, cores=32))
    assert hours[1] == pytest.approx(100_000 * 0.9 / (32 * 0.5) / 3600)
    assert hours[4] == pytest.approx(hours[1] / 4) and hours[64] == pytest.approx(hours[1] / 64)
    assert [scale._duration(h) for h in (2.25, 0.5, 0.001)] == ["2.2 h", "30.0 min", "4 s"]


def test_recorded_sionna_cost_is_total_seconds_over_total_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    log = tmp_path / "corpus.csv"
    log.write_text("store,tiles,frames,maps,samples_per_tx,seconds,seconds_per_map\na,1,32,32,1,16,0.5\n"
                   "b,3,32,96,1,144,1.5\n")  # fmt: skip
    monkeypatch.setattr(scale, "CORPUS_LOG", log)
    cost, source = scale.recorded_sionna_cost()
    assert cost == pytest.approx(160 / 128) and "128 maps" in source
    monkeypatch.setattr(scale, "CORPUS_LOG", tmp_path / "missing.csv")
    assert scale.recorded_sionna_cost() is None
