"""The output policy shared by every command that writes: never destroy a file we did not create.

* An output path that exists is refused unless ``--overwrite`` is given; even then only a file, an empty folder
  or a folder that is ours (:func:`tomoformer.io.is_ours`) may be replaced, never any other folder.
* An output equal to, inside, or holding an input is always refused (paths compared after resolving symlinks).
* One writer at a time: ``<out>.lock`` beside the output, created with ``O_EXCL``, names its holder; a lock left
  by a dead process on this host is taken over.
* Run folders (:func:`run_folder`): only the names we create inside them are ever touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tomoformer.errors import OutputError
from tomoformer.io import MARKER, is_empty_dir, is_ours, read_marker, remove_tree, write_marker

__all__ = [
    "RUN_ENTRIES",
    "RunFolder",
    "check_not_input",
    "check_output",
    "claim_output",
    "output_lock",
    "run_folder",
]

# Everything a run folder of ours may hold (train, pretrain, finetune, classify, experts fit, finetune-study,
# demo); ``--overwrite`` and failure clean-up remove these names and nothing else.
RUN_ENTRIES = frozenset(
    {
        MARKER,
        "config.yaml",
        "metrics.csv",
        "metrics.json",
        "val_metrics.json",
        "checkpoints",
        "logs",
        "tensorboard",
        "figures",
        "clusters.npz",
        "experts",
        "global",
        "stage1.ckpt",
        "model.ckpt",
        "evaluate",
        "test",
        "results.csv",
        "summary.md",
        "summary.json",
        "report.html",
        "iou_vs_size.png",
        "test_iou_vs_size.png",
        "runs",
        "data",
    }
)
_RUN_PATTERNS = (
    re.compile(r"logs-\d+"),  # later logs of resumed runs (tasks/train.py)
    re.compile(r"\..+\.tmp(\.[^.]*)?"),  # temporaries of io.atomic_path and io.write_marker
    re.compile(r"\..+\.[0-9a-f]{12}\.old"),  # the previous folder during io.replace
)


# What makes a failed run worth keeping: ``--resume`` continues from it.
_RESUMABLE = ("checkpoints/last.ckpt", "clusters.npz")


def our_entry(name: str) -> bool:
    """True for a name inside a run folder that we create (``config.yaml``, ``checkpoints``, ``logs-3`` ...)."""
    return name in RUN_ENTRIES or any(p.fullmatch(name) for p in _RUN_PATTERNS)


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_not_input(
    out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None], option: str = "--out"
) -> None:
    """Refuse an output that is, contains or lies inside one of ``inputs`` (None entries are skipped)."""
    target = _resolved(out)
    for given in inputs:
        if given is None or str(given) in ("", "sim"):
            continue
        if _overlap(target, _resolved(given)):
            raise OutputError(
                f"{option} {out}: overlaps the input {given} (same path, inside or around it); choose another output"
            )


def check_output(
    out: str | os.PathLike[str],
    *,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "--out",
    folder: bool = False,
) -> None:
    """Refuse to write ``out`` when that could lose data; see the module docstring.

    ``folder``: the output is a folder we fill ourselves (an existing empty folder is then fine without
    ``--overwrite``).
    """
    check_not_input(out, inputs, option)
    path = Path(out)
    if not (path.exists() or path.is_symlink()):
        return
    if folder and is_empty_dir(path):
        return
    if path.is_dir() and not (is_ours(path) or is_empty_dir(path)):
        raise OutputError(
            f"{option} {out}: a folder tomoformer did not write; choose another output "
            "(--overwrite never replaces such a folder)"
        )
    if not overwrite:
        raise OutputError(f"{option} {out}: exists; give --overwrite to replace it")


def _lock_path(out: str | os.PathLike[str]) -> Path:
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
    lock = _lock_path(out)
    lock.parent.mkdir(parents=True, exist_ok=True)
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


@contextlib.contextmanager
def claim_output(
    out: str | os.PathLike[str] | None,
    *,
    overwrite: bool,
    command: str,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "--out",
    folder: bool = False,
) -> Iterator[Path | None]:
    """:func:`check_output` and :func:`output_lock` together, for one output of a command (None: no output).

    A ``folder`` output that did not exist gets our marker, so that ``--overwrite`` may reuse it later; on
    failure a folder created here is removed again if it holds nothing but our names.
    """
    if out is None:
        yield None
        return
    path = Path(out)
    inputs = list(inputs)
    check_not_input(path, inputs, option)
    with output_lock(path, command):
        check_output(path, overwrite=overwrite, inputs=inputs, option=option, folder=folder)
        created = folder and not path.exists()
        if folder and read_marker(path) is None:
            write_marker(path, {"kind": "folder", "command": command})
        try:
            yield path
        except BaseException:
            if created:
                _clean_run_entries(path, remove_folder=True)
            raise


def _clean_run_entries(path: Path, remove_folder: bool) -> None:
    """Delete our names inside ``path`` (never anything else); then ``path`` itself if asked and empty."""
    if not path.is_dir():
        return
    for entry in list(path.iterdir()):
        if our_entry(entry.name):
            remove_tree(entry)
    if remove_folder:
        with contextlib.suppress(OSError):
            path.rmdir()  # only succeeds when nothing of the user's is left


def _is_secondary_rank() -> bool:
    """True in a DDP worker of rank > 0: rank 0 owns the run folder (and its lock)."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value) > 0
    return False


@dataclass
class RunFolder:
    """A run folder claimed by :func:`run_folder`.

    ``stored``: the config of the run found there (``--resume``), ``marker``: its marker record;
    ``fresh``: the folder holds no earlier run (new, empty or replaced with ``--overwrite``).
    """

    path: Path
    command: str
    record: dict[str, Any]
    fresh: bool
    resumed: bool
    primary: bool = True
    stored: dict[str, Any] | None = None
    marker: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True when the run found here ended normally (its marker says so)."""
        return bool(self.marker.get("finished"))

    def begin(self) -> Path:
        """The run really starts: create the folder, write its marker and ``config.yaml``; returns the folder."""
        if self.primary:
            import yaml

            from tomoformer.io import write_text_atomic

            write_marker(self.path, {"kind": "run", "command": self.command, "finished": False})
            write_text_atomic(self.path / "config.yaml", yaml.safe_dump(self.record, sort_keys=False))
        return self.path

    def finish(self, **summary: Any) -> None:
        """Mark the run finished (``--resume`` then says so instead of training again)."""
        if self.primary:
            write_marker(self.path, {"kind": "run", "command": self.command, "finished": True, **summary})


@contextlib.contextmanager
def run_folder(
    out: str | os.PathLike[str],
    *,
    record: dict[str, Any],
    command: str,
    resume: bool,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
    may_change: Iterable[str] = (),
) -> Iterator[RunFolder]:
    """Claim the run folder ``out`` for a run whose resolved config is ``record``.

    * missing or empty folder: a fresh run;
    * our run folder: ``resume`` continues it if its stored config equals ``record`` apart from the keys in
      ``may_change`` (else :class:`OutputError` naming the differing keys); ``overwrite`` removes our names in
      it and starts afresh; neither: refused;
    * any other existing path: refused, with or without ``overwrite`` (a file only with ``overwrite``).

    The folder is locked while the block runs. On failure a fresh run leaves nothing behind: our names in it are
    removed, and the folder too if it is then empty. Call :meth:`RunFolder.begin` once the run really starts.
    """
    path = Path(out)
    if resume and overwrite:
        raise OutputError("give --resume (continue the run) or --overwrite (replace it), not both")
    check_not_input(path, inputs)
    if _is_secondary_rank():
        yield RunFolder(path, command, record, fresh=False, resumed=resume, primary=False)
        return
    with output_lock(path, command):
        run = _inspect(path, record, command, resume, overwrite, set(may_change))
        try:
            yield run
        except BaseException:
            # A fresh run that failed before saving anything resumable leaves nothing behind; one that has a
            # last.ckpt (or finished stages) is kept for --resume.
            if run.fresh and not any((path / name).exists() for name in _RESUMABLE):
                _clean_run_entries(path, remove_folder=True)
            raise


def _inspect(
    path: Path, record: dict[str, Any], command: str, resume: bool, overwrite: bool, may_change: set[str]
) -> RunFolder:
    new = RunFolder(path, command, record, fresh=True, resumed=False)
    if not (path.exists() or path.is_symlink()) or is_empty_dir(path):
        return new
    if not path.is_dir():
        if not overwrite:
            raise OutputError(f"--out {path}: exists; give --overwrite to replace it")
        remove_tree(path)
        return new
    marker = read_marker(path)
    if marker is None or marker.get("kind") != "run":
        raise OutputError(
            f"--out {path}: a folder that is not a tomoformer run folder; choose another --out "
            "(--overwrite never replaces such a folder)"
        )
    if overwrite:
        _clean_run_entries(path, remove_folder=False)
        return new
    if not resume:
        raise OutputError(f"--out {path}: a run folder already; give --resume to continue it or --overwrite")
    if marker.get("command") not in (None, command):
        raise OutputError(f"--out {path}: a `{marker.get('command')}` run; it cannot be resumed by `{command}`")
    stored = read_run_config(path)
    if stored is None:  # killed before the run really started: nothing to continue
        return RunFolder(path, command, record, fresh=True, resumed=False, marker=marker)
    differing = differing_keys(stored, record, may_change)
    if differing:
        raise OutputError(
            f"--out {path}: cannot resume: the run was started with other {', '.join(differing)} "
            "(resume with the same options, or give --overwrite to start over)"
        )
    return RunFolder(path, command, record, fresh=False, resumed=True, stored=stored, marker=marker)


def read_run_config(path: Path) -> dict[str, Any] | None:
    """The ``config.yaml`` a run or study folder holds; None when missing, too large or unreadable."""
    from tomoformer.errors import ConfigError
    from tomoformer.safe_yaml import read_yaml_file

    config = path / "config.yaml"
    try:
        value = read_yaml_file(config) if config.is_file() else None
    except ConfigError:
        return None
    return value if isinstance(value, dict) else None


def differing_keys(stored: dict[str, Any], new: dict[str, Any], may_change: set[str], prefix: str = "") -> list[str]:
    """Dotted names of the options whose values differ between two configs, ignoring ``may_change``."""
    keys: list[str] = []
    for key in sorted(set(stored) | set(new), key=str):
        name = f"{prefix}{key}"
        if name in may_change:
            continue
        a, b = stored.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += differing_keys(a, b, may_change, f"{name}.")
        elif _normal(a) != _normal(b):
            keys.append(name)
    return keys


def _normal(value: Any) -> str:
    """Values as a YAML round trip gives them (tuples as lists); ``False``, ``0`` and ``0.0`` stay distinct."""
    return json.dumps(value, sort_keys=True, default=str)
