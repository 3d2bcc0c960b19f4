"""Concatenate datasets of the same grid into one (e.g. ray-traced tiles of several scenes, or the shards of one
simulation: tomoformer.data.shards)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.format import ZarrWriter, dataset_format, open_dataset, require_valid_values, write_dataset
from tomoformer.data.shards import is_shard, merged_attrs
from tomoformer.errors import DataError
from tomoformer.io import atomic_path

# Samples copied per step when streaming into a Zarr store (memory: one block of one source at a time).
_BLOCK = 64


def merge_datasets(
    sources: list[str | os.PathLike[str]], dst: str | os.PathLike[str], block: int = _BLOCK
) -> tuple[Path, list[str]]:
    """Write the samples of every dataset in ``sources``, in order, to ``dst``; returns it and the group names.

    All sources need the same frames T, grid H x W and cell size. Arrays missing from any source are dropped.
    Sources that share one list of group names keep their ``group`` arrays and that list as they are; otherwise
    groups are renumbered over the union of the sources' group names, and a source without a ``group`` array
    becomes one group named after its file. Shards of one simulation (``simulate --shard``; all N, in order, N
    may be 1) merge into exactly the store one process would have written (:func:`tomoformer.data.shards.merged_attrs`).
    A Zarr ``dst`` is filled ``block`` samples at a time, so sources larger than memory merge too.
    """
    if len(sources) < 2 and not (len(sources) == 1 and _is_shard_store(sources[0])):
        raise DataError("merge needs at least two datasets (or all the shards of one simulation)")
    return _merge(sources, dst, block)


def _is_shard_store(path: str | os.PathLike[str]) -> bool:
    with open_dataset(path) as dataset:
        return is_shard(dataset.attrs)


def merge_shards(sources: list[str | os.PathLike[str]], dst: str | os.PathLike[str]) -> Path:
    """Write the dataset made of the shard stores ``sources`` (all N shards of one simulation, in order; N may be
    1) to ``dst``, exactly as one process would have written it."""
    if not sources:
        raise DataError("no shards to merge")
    return _merge(sources, dst, _BLOCK)[0]


def _merge(sources: list[str | os.PathLike[str]], dst: str | os.PathLike[str], block: int) -> tuple[Path, list[str]]:
    infos: list[dict[str, Any]] = []
    for src in sources:
        with open_dataset(src) as dataset:
            require_valid_values(dataset)  # a merged store must pass `data validate`
            info = {
                "path": str(src),
                "shape": dataset.shape[1:],
                "cell": dataset.cell_size_m,
                "attrs": dict(dataset.attrs),
                "n": len(dataset),
                "arrays": {key: np.dtype(value.dtype) for key, value in dataset.arrays.items()},
                "group": dataset.read("group", slice(None)) if "group" in dataset.arrays else None,
                "names": list(dataset.attrs.get("group_names") or []),
            }
        if infos and info["shape"] != infos[0]["shape"]:
            raise DataError(
                f"{src}: signals have T, H, W = {info['shape']}, but {infos[0]['path']} has {infos[0]['shape']}"
            )
        if infos and info["cell"] != infos[0]["cell"]:
            raise DataError(f"{src}: cell_size_m {info['cell']} differs from {infos[0]['cell']} in {infos[0]['path']}")
        infos.append(info)
    keys = [k for k in infos[0]["arrays"] if k != "group" and all(k in i["arrays"] for i in infos)]
    dtypes = {k: np.result_type(*(i["arrays"][k] for i in infos)) for k in keys}
    groups, group_names = _merged_groups(infos)
    if any(is_shard(i["attrs"]) for i in infos):
        attrs = merged_attrs([(i["path"], i["attrs"], i["n"]) for i in infos])
        attrs["group_names"] = group_names
    else:
        attrs = {k: v for k, v in infos[0]["attrs"].items() if k not in ("n_total", "n_written")}
        attrs.update(group_names=group_names, merged_from=[str(s) for s in sources])
    if dataset_format(Path(dst)) != "zarr":
        merged = {k: np.concatenate([_read_all(i["path"], k) for i in infos]).astype(dtypes[k]) for k in keys}
        return write_dataset(dst, {**merged, "group": groups}, attrs), group_names
    return _stream_zarr(Path(dst), infos, keys, dtypes, groups, attrs, max(1, block)), group_names


def _read_all(path: str, key: str) -> np.ndarray:
    with open_dataset(path) as dataset:
        return dataset.read(key, slice(None))


def _stream_zarr(
    dst: Path,
    infos: list[dict[str, Any]],
    keys: list[str],
    dtypes: dict[str, np.dtype],
    groups: np.ndarray,
    attrs: dict[str, Any],
    block: int,
) -> Path:
    """Copy the sources block by block into a Zarr store written atomically (one sample per chunk)."""
    total = sum(i["n"] for i in infos)
    with atomic_path(dst) as tmp:
        writer: ZarrWriter | None = None
        offset = 0
        for info in infos:
            with open_dataset(info["path"]) as dataset:
                for lo in range(0, info["n"], block):
                    hi = min(lo + block, info["n"])
                    part = {k: dataset.read(k, slice(lo, hi)).astype(dtypes[k], copy=False) for k in keys}
                    part["group"] = groups[offset + lo : offset + hi]
                    if writer is None:
                        writer = ZarrWriter(tmp, n_total=total, arrays_like=part, attrs=attrs)
                    writer.write(offset + lo, part)
            offset += info["n"]
    return dst


def _merged_groups(infos: list[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """The merged ``group`` array [N] and its group names."""
    shared = infos[0]["names"]
    if shared and all(i["group"] is not None and i["names"] == shared for i in infos):
        dtype = np.result_type(*(i["group"].dtype for i in infos))
        return np.concatenate([i["group"] for i in infos]).astype(dtype), list(shared)
    labels: list[list[str]] = []
    ordered: list[str] = []
    for info in infos:
        group, names, stem = info["group"], info["names"], Path(info["path"]).stem
        labels.append(_group_labels(group, names, info["n"], stem))
        # The groups a source uses, in its own index order, so the merged names read like the sources' lists.
        used = np.unique(group) if group is not None else None
        ordered.extend(_group_labels(used, names, 1, stem) if used is not None else [stem])
    group_names = list(dict.fromkeys(ordered))
    index = {name: i for i, name in enumerate(group_names)}
    return np.array([index[label] for part in labels for label in part], dtype=np.int64), group_names


def _group_labels(group: np.ndarray | None, names: list[str], n: int, stem: str) -> list[str]:
    if group is None:
        return [stem] * n
    return [str(names[g]) if 0 <= g < len(names) else f"{stem}:{g}" for g in np.asarray(group).tolist()]
