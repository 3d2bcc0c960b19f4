"""Atomic output: everything we write appears complete under its final name, or not at all.

Ownership is a record, never a name. A folder is ours only if we created it: its marker file :data:`MARKER` is a
JSON record naming the folder itself (device and inode, which a copy or a planted file cannot reproduce), whether
we created the folder (``created``) or adopted a user's empty one, and the entries we created in it. A Zarr store
we write carries the same identity in its :data:`OWNER_ATTR` attribute. Only what such a record names is ever
replaced or deleted. The policy deciding which output paths may be written at all lives in
:mod:`tomoformer.outputs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tomoformer.errors import OutputError

MARKER = ".tomoformer"
"""JSON record inside every folder we create or adopt (run folders, report folders); see :func:`read_marker`."""
OWNER_ATTR = "written_by"
"""Zarr group attribute set on every store we write: :func:`owner_stamp` of the store's folder."""
OWNER = "tomoformer"
MARKER_VERSION = 2
_MARKER_MAX_BYTES = 1 << 20


def folder_identity(path: str | os.PathLike[str]) -> dict[str, int]:
    """The device and inode of the folder ``path`` (not followed if a symlink): what a copy cannot keep."""
    st = os.lstat(path)
    return {"dev": int(st.st_dev), "ino": int(st.st_ino)}


def owner_stamp(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The :data:`OWNER_ATTR` value for a store we write into the existing folder ``folder``."""
    return {"by": OWNER, **folder_identity(folder)}


def _same_folder(path: Path, record: Any) -> bool:
    """True when ``record`` (a dict with dev and ino) names the real folder at ``path`` (never a symlink)."""
    if not isinstance(record, dict):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    return record.get("dev") == st.st_dev and record.get("ino") == st.st_ino


def _store_is_ours(path: Path) -> bool:
    """A Zarr store whose group attributes carry our stamp for this very folder."""
    meta = path / "zarr.json"
    try:
        # A hostile zarr.json could be huge or a FIFO: ownership is decided from a small regular file only.
        info = os.lstat(meta)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MARKER_MAX_BYTES:
            return False
        attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes") or {}
    except (OSError, ValueError, AttributeError):
        return False
    stamp = attrs.get(OWNER_ATTR) if isinstance(attrs, dict) else None
    return isinstance(stamp, dict) and stamp.get("by") == OWNER and _same_folder(path, stamp)


def read_marker(folder: str | os.PathLike[str]) -> dict | None:
    """The verified marker record of ``folder``: None when there is none, it is unreadable, or it does not name
    this very folder (copied with the folder, planted, or written by an older version)."""
    folder = Path(folder)
    marker = folder / MARKER
    try:
        info = os.lstat(marker)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MARKER_MAX_BYTES:
            return None
        value = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict) or value.get("written_by") != OWNER or value.get("version") != MARKER_VERSION:
        return None
    if not _same_folder(folder, value.get("folder")) or not isinstance(value.get("entries"), list):
        return None
    return value


def has_foreign_marker(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` holds a marker file that is not a valid record of this folder (for messages)."""
    return os.path.lexists(Path(folder) / MARKER) and read_marker(folder) is None


def recorded_entries(folder: str | os.PathLike[str]) -> set[str]:
    """The names inside ``folder`` that its verified marker says we created (empty when not ours)."""
    record = read_marker(folder)
    return {str(name) for name in record["entries"]} if record else set()


def is_ours(path: str | os.PathLike[str]) -> bool:
    """True for a folder we created (verified marker with ``created``) or a Zarr store we wrote (verified stamp).

    A folder we only adopted (a user's empty folder we wrote into) is not ours: only its recorded entries are.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    record = read_marker(path)
    if record is not None:
        return record.get("created") is True
    return _store_is_ours(path)


def wholly_ours(path: str | os.PathLike[str]) -> bool:
    """True for a folder we may replace or delete as a whole: a store of ours, or a folder we created that holds
    nothing but the entries we recorded (anything a user added since makes it not wholly ours)."""
    path = Path(path)
    if not is_ours(path):
        return False
    record = read_marker(path)
    if record is None:
        return True  # a Zarr store of ours: written whole, atomically
    present = {entry.name for entry in os.scandir(path)} - {MARKER}
    return present <= recorded_entries(path)


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
    removed on any failure (exceptions, Ctrl-C); a directory left at ``path`` that is not wholly ours is never
    replaced, and a file never replaces a directory.
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
            write_marker(tmp, {"kind": "folder"}, created=True, add=[p.name for p in tmp.iterdir()])
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


def _check_replaceable(dst: Path, new_is_dir: bool, verb: str) -> None:
    """Raise :class:`OutputError` unless the directory ``dst`` may be replaced by new output (``verb``
    "replace") or deleted ("delete")."""
    if not new_is_dir:
        raise OutputError(f"{dst}: a folder; a file output never replaces a folder")
    if not (is_empty_dir(dst) or wholly_ours(dst)):
        raise OutputError(
            f"{dst}: a folder tomoformer did not write (or holds files it did not); refusing to {verb} it"
        )


def replace(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``, replacing a previous file, or an empty or wholly-ours directory, there.

    Raises :class:`OutputError` for any other directory at ``dst``, and when ``src`` is a file and ``dst`` a
    directory: a file output never replaces a folder.
    """
    if dst.is_dir() and not dst.is_symlink():
        _check_replaceable(dst, src.is_dir() and not src.is_symlink(), "replace")
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
    """Delete a file, or an empty or wholly-ours directory tree, if it exists (a symlink is unlinked, never
    followed). Raises :class:`OutputError` for any other directory."""
    if path.is_dir() and not path.is_symlink():
        _check_replaceable(path, True, "delete")
    remove_tree(path)


def remove_ours(path: str | os.PathLike[str]) -> None:
    """Delete what is at ``path`` (a temporary name such as a hidden partial store) only if its record says we
    wrote it, wholly; anything else there raises :class:`OutputError` and is left alone."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if not wholly_ours(path):
        raise OutputError(f"{path}: exists and tomoformer did not write it; move it away (tomoformer uses this name)")
    remove_tree(path)


def remove_tree(path: Path) -> None:
    """Delete ``path`` whatever it holds: only for names this process created itself or a record names."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_marker(
    folder: str | os.PathLike[str],
    record: dict | None = None,
    *,
    created: bool | None = None,
    add: Iterable[str] = (),
    drop: Iterable[str] = (),
) -> Path:
    """Write (or update) the marker record of ``folder``; returns the marker file.

    A missing ``folder`` is created and recorded as created by us; an existing one keeps what its verified record
    says, and a folder without one is recorded as adopted (``created`` False) unless ``created`` is given. The
    fields of ``record`` replace earlier ones; the recorded entries become (earlier - ``drop``) | ``add``.
    """
    folder = Path(folder)
    made = not os.path.lexists(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if folder.is_symlink() or not folder.is_dir():
        raise OutputError(f"{folder}: not a real folder; tomoformer writes no record into it")
    old = read_marker(folder) or {}
    entries = (set(old.get("entries", [])) - set(drop)) | set(add)
    entries.discard(MARKER)
    if created is None:
        created = made or old.get("created") is True
    value = {
        **old,
        **(record or {}),
        "written_by": OWNER,
        "version": MARKER_VERSION,
        "folder": {"path": str(folder.resolve()), **folder_identity(folder)},
        "created": bool(created),
        "entries": sorted(entries),
    }
    marker = folder / MARKER
    fd, tmp = tempfile.mkstemp(prefix=f"{MARKER}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1, default=str)
        if os.path.lexists(marker) and not os.path.isfile(marker):
            raise OutputError(f"{marker}: not a file; tomoformer will not replace it")
        os.replace(tmp, marker)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return marker


def remove_marker(folder: str | os.PathLike[str]) -> None:
    """Delete ``folder``'s marker if it is a verified record of ours (an adopted folder goes back to the user)."""
    if read_marker(folder) is not None:
        with contextlib.suppress(FileNotFoundError):
            (Path(folder) / MARKER).unlink()


def remove_recorded(folder: str | os.PathLike[str], names: Iterable[str]) -> list[str]:
    """Delete the entries ``names`` of ``folder`` that its verified record names (others are left alone) and
    forget them in the record; returns the names deleted."""
    folder = Path(folder)
    ours = recorded_entries(folder)
    gone = sorted(set(names) & ours)
    for name in gone:
        remove_tree(folder / name)
    if gone:
        write_marker(folder, drop=gone)
    return gone


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
