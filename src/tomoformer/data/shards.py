"""Shards of a simulated dataset: shard I of N holds the contiguous block of sample indices
``[I * n // N, (I + 1) * n // N)``.

Sample i of a simulated dataset depends only on the seed and its global index i (tomoformer.sim.simulate), so
shards can be simulated anywhere (processes, Ray tasks, SLURM array tasks) and concatenated in order into the very
store one process would have written. A shard store carries the attribute ``shard`` (index, count, start, stop, n)
next to the attributes of the whole dataset; :func:`merged_attrs` checks that a list of stores is a complete,
ordered set of shards of one run and returns the attributes of the merged dataset.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from tomoformer.errors import ConfigError, DataError

SHARD_ATTR = "shard"
# Attributes that differ between the shards of one run by design (and are set anew on the merged store).
_PER_STORE = ("shard", "n_total", "n_written", "written_by")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"--shard {self.index}/{self.count}: expected I/N with 0 <= I < N")

    def bounds(self, n: int) -> tuple[int, int]:
        """The block ``(start, stop)`` of sample indices of this shard of ``n`` samples; ConfigError if empty."""
        start, stop = self.index * n // self.count, (self.index + 1) * n // self.count
        if stop <= start:
            raise ConfigError(
                f"--shard {self.index}/{self.count}: {self.count} shards of {n} samples leave this one empty; "
                "use at most as many shards as samples"
            )
        return start, stop

    def attrs(self, n: int) -> dict[str, int]:
        """The ``shard`` attribute of this shard's store."""
        start, stop = self.bounds(n)
        return {"index": self.index, "count": self.count, "start": start, "stop": stop, "n": n}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"I/N"`` (e.g. ``"3/8"``) as a :class:`Shard`; ConfigError on anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4 (shard I of N, counted from 0)")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_name(index: int, count: int) -> str:
    """File stem of shard ``index`` of ``count``: zero-padded, so that a shell glob lists the shards in order."""
    width = max(4, len(str(count - 1)))
    return f"part-{index:0{width}d}"


def is_shard(attrs: dict[str, Any]) -> bool:
    """Whether a store's attributes mark it as a shard (written with ``--shard``)."""
    return isinstance(attrs.get(SHARD_ATTR), dict)


def merged_attrs(sources: list[tuple[str, dict[str, Any], int]]) -> dict[str, Any]:
    """Attributes of the dataset made of shard stores ``sources`` = [(path, attrs, samples), ...] in order.

    DataError (one line naming the store) unless they are all N shards of one run, each once, in index order,
    each with the samples its block needs, and agree on every attribute of the run (seed, simulator settings,
    geometry...). The result is the run's attributes without the shard record, as one process would write them.
    """
    first_path, first, _ = sources[0]
    count, n = _shard_field(first_path, first, "count"), _shard_field(first_path, first, "n")
    if len(sources) != count:
        raise DataError(
            f"{first_path}: is shard {first[SHARD_ATTR].get('index')} of {count}, but {len(sources)} "
            f"shard stores were given; merge all {count}, in order"
        )
    run = run_attrs(first)
    for expected, (path, attrs, samples) in enumerate(sources):
        if not is_shard(attrs):
            raise DataError(f"{path}: not a shard (no '{SHARD_ATTR}' attribute), but {first_path} is one")
        index = _shard_field(path, attrs, "index")
        if _shard_field(path, attrs, "count") != count or _shard_field(path, attrs, "n") != n:
            raise DataError(f"{path}: is a shard of another split (shard {attrs[SHARD_ATTR]}) than {first_path}")
        if index != expected:
            raise DataError(
                f"{path}: is shard {index}/{count}, expected shard {expected}/{count} at this place "
                "(give the shards in index order)"
            )
        start, stop = Shard(index, count).bounds(n)
        if (attrs[SHARD_ATTR].get("start"), attrs[SHARD_ATTR].get("stop"), samples) != (start, stop, stop - start):
            raise DataError(f"{path}: holds {samples} samples, but shard {index}/{count} of {n} is [{start}, {stop})")
        other = run_attrs(attrs)
        for key in sorted(set(run) | set(other)):
            if _normal(run.get(key)) != _normal(other.get(key)):
                raise DataError(f"{path}: attribute {key!r} differs from {first_path}: not a shard of the same run")
    return {k: v for k, v in first.items() if k not in _PER_STORE}


def _shard_field(path: str, attrs: dict[str, Any], key: str) -> int:
    value = attrs.get(SHARD_ATTR, {}).get(key) if is_shard(attrs) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f"{path}: its '{SHARD_ATTR}' attribute has no integer {key!r}")
    return value


def run_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A store's attributes without those that belong to one store (its shard block, progress, ownership stamp)."""
    return {k: v for k, v in attrs.items() if k not in _PER_STORE}


def _normal(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, sort_keys=True, default=str)
