"""What a dataset *is*, independent of how its path was spelled: the fingerprint a run records so that
``--resume`` continues only on the same data (the same store by any path) and refuses other data."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.format import open_dataset
from tomoformer.data.schema import dataset_format, jsonable
from tomoformer.errors import DataError
from tomoformer.io import OWNER_ATTR

# Attributes that change when the same samples are stored again (ownership stamp, write progress).
_VOLATILE = frozenset({OWNER_ATTR, "n_written"})
IDENTITY_KEY = "data_identity"
"""The config key under which a run records its datasets' fingerprints (see :func:`data_identity`)."""
# Keys of a run's config that may differ on --resume when the fingerprints agree: the paths as typed or resolved.
IDENTITY_MAY_CHANGE = frozenset({"data", "val_data", f"{IDENTITY_KEY}.data.path", f"{IDENTITY_KEY}.val_data.path"})


def dataset_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The identity of the dataset at ``path``: its resolved path (informational), sample count, array shapes
    and dtypes, and a SHA-256 over its attributes, shapes and first and last samples (``sha256``, 16 hex digits).

    Raises :class:`~tomoformer.errors.DataError` when ``path`` is not a readable dataset.
    """
    with open_dataset(path) as dataset:
        n = len(dataset)
        arrays = {key: {"shape": list(map(int, a.shape)), "dtype": str(a.dtype)} for key, a in dataset.arrays.items()}
        attrs = {k: v for k, v in dataset.attrs.items() if k not in _VOLATILE}
        digest = hashlib.sha256()
        digest.update(json.dumps(jsonable(attrs), sort_keys=True, default=str).encode())
        digest.update(json.dumps(arrays, sort_keys=True).encode())
        for index in sorted({0, n - 1}) if n else ():
            for key in sorted(dataset.arrays):
                digest.update(np.ascontiguousarray(dataset.read(key, index)).tobytes())
    return {
        "path": str(Path(os.path.abspath(path)).resolve()),
        "samples": n,
        "arrays": dict(sorted(arrays.items())),
        "sha256": digest.hexdigest()[:16],
    }


_WHOLE_FILE = 1 << 26  # files up to 64 MiB are hashed whole; larger ones by size, head and tail
_PIECE = 1 << 20
_MAX_FILES = 100_000


def content_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The identity of an input that is not a signal dataset (an image ``.npz``, an image folder): a SHA-256 over
    its bytes (a file; head and tail beyond 64 MiB) or its relative file names and sizes (a folder)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())[:_MAX_FILES]
        for file in files:
            digest.update(f"{file.relative_to(path)}\0{file.stat().st_size}\n".encode())
    elif path.is_file():
        size = path.stat().st_size
        digest.update(str(size).encode())
        with open(path, "rb") as f:
            if size <= _WHOLE_FILE:
                for block in iter(lambda: f.read(_PIECE), b""):
                    digest.update(block)
            else:
                digest.update(f.read(_PIECE))
                f.seek(size - _PIECE)
                digest.update(f.read(_PIECE))
    return {"path": str(Path(os.path.abspath(path)).resolve()), "sha256": digest.hexdigest()[:16]}


def input_identity(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The fingerprint of one input: :func:`dataset_fingerprint` for a dataset, :func:`content_fingerprint` for any
    other file or folder (a checkpoint, class images), None for no input (or ``sim``); a missing path is recorded as
    missing (the command's own loading then says what is wrong)."""
    if path is None or str(path) in ("", "sim"):
        return None
    if not os.path.exists(path):
        return {"path": str(Path(os.path.abspath(path)).resolve()), "missing": True}
    try:
        dataset_format(path)
        return dataset_fingerprint(path)
    except DataError:
        # Not a signal dataset (class images in an .npz, a checkpoint, say) or a broken one: its bytes identify it,
        # and the command's own loading says what is wrong with it, if anything.
        return content_fingerprint(path)


def data_identity(data: str | None, val_data: str | None = None) -> dict[str, Any]:
    """Fingerprints (:func:`input_identity`) of a run's training and validation data."""
    return {"data": input_identity(data), "val_data": input_identity(val_data)}
