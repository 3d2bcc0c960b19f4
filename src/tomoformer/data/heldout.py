"""Held-out discipline: a benchmark's training and validation stores may hold no test tile and no held-out city.

:func:`check_held_out` refuses a split, with one :class:`~tomoformer.errors.DataError` line naming the store and the
tile, when a training or validation store

* names a held-out city (``HELD_OUT_CITIES``: Florence is a test city only, San Francisco is out of everything) in
  its file name, its group names or its attributes (e.g. ``scene``, ``merged_from``), or
* holds a tile of a test store: the same footprint (``heights``, else ``buildings``) up to a rotation or mirror
  (the eight symmetries of the square), whatever the transmitters. Tiles without any building carry no identity
  and are not compared.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tomoformer.data.format import open_dataset
from tomoformer.errors import DataError

__all__ = ["HELD_OUT_CITIES", "OUT_OF_EVERYTHING", "check_held_out", "named_city", "refuse_named_city", "tile_keys"]

HELD_OUT_CITIES = ("florence", "san_francisco", "san francisco", "sanfrancisco")
# Cities no data of any role may come from (Florence may be tested on; San Francisco is used for nothing).
OUT_OF_EVERYTHING = ("san_francisco", "san francisco", "sanfrancisco")
_FOOTPRINT_KEYS = ("heights", "buildings")


def _canonical_digest(tile: np.ndarray) -> str | None:
    """A digest of ``tile`` [H, W] that is the same for its eight square symmetries; None for an empty tile."""
    if not np.any(tile):
        return None
    tile = np.ascontiguousarray(tile, dtype=np.float32)
    variants = []
    for flipped in (tile, tile[:, ::-1]):
        for k in range(4):
            v = np.ascontiguousarray(np.rot90(flipped, k))
            variants.append(hashlib.sha1(repr(v.shape).encode() + v.tobytes()).hexdigest())
    return min(variants)


def tile_keys(path: str | os.PathLike[str]) -> dict[str, int]:
    """Footprint digests (up to a rotation or mirror) of the tiles of the store ``path`` -> the first sample index
    with that footprint. Uses ``heights`` if the store has it, else ``buildings``; a store with neither: {}."""
    source = open_dataset(path)
    try:
        key = next((k for k in _FOOTPRINT_KEYS if k in source.arrays), None)
        if key is None:
            return {}
        keys: dict[str, int] = {}
        start = 0
        for block in source.iter_chunks(key):
            for offset, tile in enumerate(np.asarray(block)):
                digest = _canonical_digest(tile)
                if digest is not None:
                    keys.setdefault(digest, start + offset)
            start += len(block)
        return keys
    finally:
        source.close()


def named_city(text: str, cities: Iterable[str] = HELD_OUT_CITIES) -> str | None:
    """The first of ``cities`` that ``text`` (a store's name and attributes as text) names, case and dash
    insensitive; None if it names none."""
    text = text.lower().replace("-", "_")
    return next((city for city in cities if city.replace("-", "_") in text), None)


def refuse_named_city(text: str, role: str) -> None:
    """One-line :class:`DataError` when ``text`` names a city that data of ``role`` may not come from: training
    and validation data ("train", "val") never a held-out city, test data never one out of everything."""
    city = named_city(text, HELD_OUT_CITIES if role in ("train", "val") else OUT_OF_EVERYTHING)
    if city is not None:
        raise DataError(f"{role} data may not come from {city.replace('_', ' ')}: {text[:120]}")


def _held_out_city(path: Path, held_out: Iterable[str]) -> str | None:
    """The held-out city that the store ``path`` names (file name, group names, attributes), if any."""
    source = open_dataset(path)
    try:
        text = json.dumps(source.attrs, default=str, sort_keys=True)
    finally:
        source.close()
    return named_city(f"{path.name} {text}", held_out)


def check_held_out(
    train: Iterable[str | os.PathLike[str]],
    val: Iterable[str | os.PathLike[str]],
    test: Iterable[str | os.PathLike[str]],
    held_out: Iterable[str] = HELD_OUT_CITIES,
) -> None:
    """Refuse (one-line :class:`DataError`) a split whose training or validation stores name a held-out city or
    hold a tile of a test store (the same footprint up to a rotation or mirror); return None if it is clean."""
    held_out = tuple(held_out)
    tests = [Path(p) for p in test]
    test_keys = {digest: (path, i) for path in tests for digest, i in tile_keys(path).items()}
    for role, paths in (("training", train), ("validation", val)):
        for path in map(Path, paths):
            if path.resolve() in {t.resolve() for t in tests}:
                raise DataError(f"{path}: a test store is used for {role}")
            city = _held_out_city(path, held_out)
            if city is not None:
                raise DataError(f"{path}: names the held-out city {city!r}; it may not be used for {role}")
            for digest, i in tile_keys(path).items():
                if digest in test_keys:
                    where, j = test_keys[digest]
                    raise DataError(
                        f"{path}: sample {i} has the footprint of test tile {j} of {where} (up to a rotation or "
                        f"mirror); a test tile may not be used for {role}"
                    )
