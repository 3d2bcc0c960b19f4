"""Concatenate datasets of the same grid into one (e.g. ray-traced tiles of several scenes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.format import open_dataset, require_valid_values, write_dataset
from tomoformer.errors import DataError


def merge_datasets(sources: list[str | os.PathLike[str]], dst: str | os.PathLike[str]) -> tuple[Path, list[str]]:
    """Write the samples of every dataset in ``sources``, in order, to ``dst``; returns it and the group names.

    All sources need the same frames T, grid H x W and cell size. Arrays missing from any source are dropped.
    Groups are renumbered over the union of the sources' group names; a source without a ``group`` array becomes
    one group named after its file.
    """
    if len(sources) < 2:
        raise DataError("merge needs at least two datasets")
    parts: list[dict[str, np.ndarray]] = []
    labels: list[list[str]] = []
    ordered: list[str] = []
    first: dict[str, Any] = {}
    for src in sources:
        with open_dataset(src) as dataset:
            require_valid_values(dataset)  # a merged store must pass `data validate`
            shape, cell = dataset.shape[1:], dataset.cell_size_m
            if not first:
                first = {"path": src, "shape": shape, "cell": cell, "attrs": dict(dataset.attrs)}
            elif shape != first["shape"]:
                raise DataError(f"{src}: signals have T, H, W = {shape}, but {first['path']} has {first['shape']}")
            elif cell != first["cell"]:
                raise DataError(f"{src}: cell_size_m {cell} differs from {first['cell']} in {first['path']}")
            arrays = {key: dataset.read(key, slice(None)) for key in dataset.arrays}
            names = dataset.attrs.get("group_names") or []
        parts.append(arrays)
        group = arrays.pop("group", None)
        stem = Path(src).stem
        labels.append(_group_labels(group, names, len(arrays["signals"]), stem))
        # The groups a source uses, in its own index order, so the merged names read like the sources' lists.
        used = np.unique(group) if group is not None else None
        ordered.extend(_group_labels(used, names, 1, stem) if used is not None else [stem])
    keys = [k for k in parts[0] if all(k in p for p in parts)]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    group_names = list(dict.fromkeys(ordered))
    index = {name: i for i, name in enumerate(group_names)}
    merged["group"] = np.array([index[label] for part in labels for label in part], dtype=np.int64)
    attrs = {k: v for k, v in first["attrs"].items() if k not in ("n_total", "n_written")}
    attrs.update(group_names=group_names, merged_from=[str(s) for s in sources])
    return write_dataset(dst, merged, attrs), group_names


def _group_labels(group: np.ndarray | None, names: list[str], n: int, stem: str) -> list[str]:
    if group is None:
        return [stem] * n
    return [str(names[g]) if 0 <= g < len(names) else f"{stem}:{g}" for g in np.asarray(group).tolist()]
