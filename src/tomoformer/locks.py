"""One writer at a time: ``<out>.lock`` beside an output, created with ``O_EXCL``, names its holder.

A lock left by a process that no longer exists on this host is taken over; the lock file is removed when the
block ends, also on exceptions.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tomoformer.errors import OutputError

__all__ = ["output_lock"]


def lock_path(out: str | os.PathLike[str]) -> Path:
    """The lock file ``<out>.lock`` that :func:`output_lock` holds beside ``out``."""
    path = Path(os.path.abspath(out))
    return path.with_name(f"{path.name}.lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@contextlib.contextmanager
def output_lock(out: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold ``<out>.lock`` (created with ``O_EXCL``) while the block runs; refuse if another writer holds it.

    A lock left by a process that no longer exists on this host is taken over. The lock file is removed when the
    block ends, also on exceptions.
    """
    lock = lock_path(out)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the folder {lock.parent} ({err.strerror or err})") from None
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    text = json.dumps(me)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if holder is not None and _stale(holder):
                # Dead holder on this host: take over. Unlink only what we read (another taker may have won).
                if _read_lock(lock) == holder:
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                continue
            raise OutputError(f"{out}: in use by another tomoformer process ({_describe(holder, lock)})") from None
        except PermissionError:
            raise OutputError(f"{out}: cannot write in {lock.parent} (permission denied)") from None
        except OSError as err:
            raise OutputError(f"{out}: cannot create the lock {lock} ({err.strerror or err})") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        break
    else:
        raise OutputError(f"{out}: could not take the lock {lock}; remove it if no tomoformer process uses {out}")
    try:
        yield lock
    finally:
        if _read_lock(lock) == me:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        if not lock.is_file() or lock.is_symlink():
            return None
        value = json.loads(lock.read_text(encoding="utf-8")[:4096])
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _stale(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


def _describe(holder: dict[str, Any] | None, lock: Path) -> str:
    if holder is None:
        return f"lock file {lock}, unreadable; remove it if no tomoformer process uses this output"
    return (
        f"`tomoformer {holder.get('command', '?')}`, pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"since {holder.get('started', '?')}; lock file {lock}"
    )
