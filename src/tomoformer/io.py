"""Atomic output: everything we write appears complete under its final name, or not at all.

Directories are only ever replaced or deleted when they are recognisably ours (:func:`is_ours`): a folder holding
our marker file :data:`MARKER`, or a Zarr store whose attributes carry :data:`OWNER_ATTR`. The policy deciding
which output paths may be written at all lives in :mod:`tomoformer.outputs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tomoformer.errors import OutputError

MARKER = ".tomoformer"
"""JSON file inside every folder we create (run folders, report folders); its presence makes the folder ours."""
OWNER_ATTR = "written_by"
"""Zarr group attribute set on every store we write (a marker file would be a stray key inside the store)."""
OWNER = "tomoformer"


def is_ours(path: str | os.PathLike[str]) -> bool:
    """True for a directory we wrote (marker file or our Zarr attribute); False for anything else."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / MARKER).is_file():
        return True
    meta = path / "zarr.json"
    try:
        # A hostile zarr.json could be huge: ownership is decided from its first megabyte only.
        if not meta.is_file() or meta.stat().st_size > 1 << 20:
            return False
        attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(attrs, dict) and attrs.get(OWNER_ATTR) == OWNER


def is_empty_dir(path: str | os.PathLike[str]) -> bool:
    """True for an existing directory (not a symlink) with no entries."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    with os.scandir(path) as entries:
        return next(entries, None) is None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and directories. The temporary name keeps the suffix so that libraries which
    pick a format from the extension (numpy, zarr, matplotlib) still do the right thing. The temporary is
    removed on any failure (exceptions, Ctrl-C); a directory left at ``path`` that is not ours is never replaced.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{final}: nothing was written")
        if tmp.is_dir() and not tmp.is_symlink() and not (tmp / "zarr.json").is_file():
            write_marker(tmp, {"kind": "folder"})
        if tmp.is_file() and not tmp.is_symlink():
            # mkstemp made the name private (0600); the delivered file gets the mode a plain open() would give it.
            tmp.chmod(0o666 & ~_umask())
        replace(tmp, final)
    finally:
        remove_tree(tmp)


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replace(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``, replacing a previous file, or a directory of ours, there.

    Raises :class:`OutputError` if ``dst`` is a non-empty directory we did not write: its files are the user's.
    """
    if dst.is_dir() and not dst.is_symlink():
        if not (is_ours(dst) or is_empty_dir(dst)):
            raise OutputError(f"{dst}: a folder tomoformer did not write; refusing to replace it")
        # A fresh unique name: a fixed ``.name.old`` could be a file of the user's.
        old = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:12]}.old")
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except BaseException:
            os.replace(old, dst)
            raise
        remove_tree(old)
    else:
        os.replace(src, dst)


def remove(path: Path) -> None:
    """Delete a file, or a directory tree of ours, if it exists (a symlink is unlinked, never followed).

    Raises :class:`OutputError` for a non-empty directory we did not write.
    """
    if path.is_dir() and not path.is_symlink() and not (is_ours(path) or is_empty_dir(path)):
        raise OutputError(f"{path}: a folder tomoformer did not write; refusing to delete it")
    remove_tree(path)


def remove_tree(path: Path) -> None:
    """Delete ``path`` whatever it holds: only for names this process created itself (temporaries)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_marker(folder: str | os.PathLike[str], record: dict) -> Path:
    """Write our marker file into ``folder`` (created if needed) with ``record`` as JSON; returns the marker."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    fd, tmp = tempfile.mkstemp(prefix=f"{MARKER}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"written_by": OWNER, **record}, f, indent=1, default=str)
        os.replace(tmp, marker)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return marker


def read_marker(folder: str | os.PathLike[str]) -> dict | None:
    """The record of ``folder``'s marker file, or None when there is none (or it is unreadable)."""
    marker = Path(folder) / MARKER
    try:
        if not marker.is_file() or marker.stat().st_size > 1 << 20:
            return None
        value = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
