"""The output policy shared by every command that writes: never touch a name we did not create.

* What is ours is decided by a record, never by a name (:mod:`tomoformer.io`): a folder we created carries a
  marker naming the folder itself and the entries we created in it; a user's empty folder we write into is
  *adopted* (its marker says we did not create it); a Zarr store we wrote carries our stamp.
* An output path that exists is refused unless ``--overwrite`` is given; even then a file output never replaces a
  folder, a store output replaces only an empty folder or one wholly ours, and a folder output only reuses a folder
  with our record. A symbolic link is never written through; a folder reached through one is not overwritten.
* An output equal to, inside, or holding an input is always refused (paths compared after resolving symlinks).
* One writer at a time (:func:`tomoformer.locks.output_lock`).
* Run folders (:func:`run_folder`): ``--overwrite`` removes only the entries the earlier run recorded, and only
  once the new run has checked its data and options (:meth:`RunFolder.begin`); a failed run leaves the earlier one
  as it was, and a failed fresh run gives back an adopted folder empty.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tomoformer.errors import OutputError
from tomoformer.io import (
    MARKER,
    has_foreign_marker,
    is_empty_dir,
    read_marker,
    recorded_entries,
    remove_marker,
    remove_recorded,
    remove_tree,
    wholly_ours,
    write_marker,
)
from tomoformer.locks import output_lock

__all__ = [
    "RUN_ENTRIES",
    "RunFolder",
    "check_not_input",
    "check_output",
    "check_recorded",
    "claim_names",
    "claim_output",
    "output_lock",
    "run_folder",
    "write_recorded",
]

# The names a run (train, pretrain, finetune, classify, experts fit) may create at the top of its run folder. A
# run records those of them that do not exist yet when it begins, so that a run killed at any point can still be
# replaced with --overwrite; a name among them held by something we did not create refuses the run folder.
RUN_ENTRIES = frozenset(
    {
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
    }
)

# What makes a failed run worth keeping: ``--resume`` continues from it.
_RESUMABLE = ("checkpoints/last.ckpt", "clusters.npz")
_STORE_SUFFIXES = (".zarr",)


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _names(path: Path) -> set[str]:
    """The entry names of the folder ``path`` (empty if it is not one)."""
    if path.is_symlink() or not path.is_dir():
        return set()
    with os.scandir(path) as entries:
        return {entry.name for entry in entries}


def check_not_input(
    out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None], option: str = "--out"
) -> None:
    """Refuse an output that is, contains or lies inside one of ``inputs`` (None entries are skipped), and an
    empty output name (it would mean the working folder)."""
    _require_name(out, option)
    target = _resolved(out)
    for given in inputs:
        if given is None or str(given) in ("", "sim"):
            continue
        if _overlap(target, _resolved(given)):
            raise OutputError(
                f"{option} {out}: overlaps the input {given} (same path, inside or around it); choose another output"
            )


def _require_name(out: str | os.PathLike[str], option: str) -> None:
    if not str(out).strip() or os.fspath(out) == "":
        raise OutputError(f"{option}: an empty name; give the file or folder to write")


def _refuse_links(path: Path, option: str, strict: bool) -> None:
    """A symbolic link as the output is always refused; with ``strict`` (--overwrite, --resume) also a folder
    reached through one (its real place is not where the command line says)."""
    if path.is_symlink():
        raise OutputError(f"{option} {path}: a symbolic link; tomoformer never writes through one (choose another)")
    if strict and path.is_dir():
        given = Path(os.path.normpath(os.path.abspath(path)))
        if given != given.resolve():
            raise OutputError(
                f"{option} {path}: reached through a symbolic link (really {given.resolve()}); give the real path"
            )


def _not_ours_text(path: Path) -> str:
    if has_foreign_marker(path):
        return f"its {MARKER} record does not check out for this folder (copied, planted or from an older version)"
    return "a folder tomoformer did not write"


def check_output(
    out: str | os.PathLike[str],
    *,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "--out",
    folder: bool = False,
    whole: bool | None = None,
) -> None:
    """Refuse to write ``out`` when that could lose data; see the module docstring.

    ``folder``: the output is a folder we fill ourselves (an existing empty folder is then adopted without
    ``--overwrite``; one with our record needs ``--overwrite``). Otherwise ``whole`` says whether the output is a
    folder written whole and renamed into place (a Zarr store, a scene folder); None: a Zarr store when its
    suffix is ``.zarr``, else a file.
    """
    check_not_input(out, inputs, option)
    path = Path(out)
    if not os.path.lexists(path):
        return
    _refuse_links(path, option, overwrite)
    if path.is_dir():
        if folder:
            if is_empty_dir(path):
                return
            if read_marker(path) is None:
                raise OutputError(
                    f"{option} {out}: {_not_ours_text(path)}; choose another output "
                    "(--overwrite never replaces such a folder)"
                )
        elif not (whole if whole is not None else path.suffix.lower() in _STORE_SUFFIXES):
            raise OutputError(f"{option} {out}: a folder; this output is a file, and a file never replaces a folder")
        elif not (is_empty_dir(path) or wholly_ours(path)):
            raise OutputError(
                f"{option} {out}: {_not_ours_text(path)} (or it holds files tomoformer did not write); choose "
                "another output (--overwrite never replaces such a folder)"
            )
    elif folder:
        raise OutputError(f"{option} {out}: a file; this output is a folder (choose another output)")
    if not overwrite:
        raise OutputError(f"{option} {out}: exists; give --overwrite to replace it")


@contextlib.contextmanager
def claim_output(
    out: str | os.PathLike[str] | None,
    *,
    overwrite: bool,
    command: str,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "--out",
    folder: bool = False,
    whole: bool | None = None,
) -> Iterator[Path | None]:
    """:func:`check_output` and :func:`output_lock` together, for one output of a command (None: no output).

    A ``folder`` output gets our marker record: created (the folder did not exist) or adopted (a user's empty
    folder). On success the entries this command created in it are recorded; on failure they are removed again,
    and the folder is given back as it was (removed if we created it and it is empty, else without our marker).
    """
    if out is None:
        yield None
        return
    _require_name(out, option)
    path = Path(out)
    inputs = list(inputs)
    check_not_input(path, inputs, option)
    with output_lock(path, command):
        check_output(path, overwrite=overwrite, inputs=inputs, option=option, folder=folder, whole=whole)
        if not folder:
            yield path
            return
        existed = path.is_dir()
        had_record = read_marker(path) is not None
        before = _names(path)
        write_marker(path, {} if had_record else {"kind": "folder", "command": command})
        try:
            yield path
        except BaseException:
            _give_back(path, before, existed, had_record)
            raise
        write_marker(path, add=_names(path) - before - {MARKER})


def _give_back(path: Path, before: set[str], existed: bool, had_record: bool) -> None:
    """After a failed command: remove the entries it created in ``path``; then the folder if we created it now
    (and it is empty), or our marker if we adopted it now."""
    for name in sorted(_names(path) - before - {MARKER}):
        remove_tree(path / name)
    if not had_record:
        remove_marker(path)
    if not existed:
        with contextlib.suppress(OSError):
            path.rmdir()  # only succeeds when nothing of the user's is left


def check_recorded(*paths: str | os.PathLike[str]) -> None:
    """Refuse (:class:`OutputError`) when any of ``paths`` exists but its folder's record does not name it, or its
    folder is a symbolic link: what :func:`write_recorded` would refuse, checked before any of them is written."""
    for path in map(Path, paths):
        if os.path.lexists(path.parent):
            _refuse_links(path.parent, "folder", True)
        if os.path.lexists(path) and path.name not in recorded_entries(path.parent):
            raise OutputError(f"{path}: exists and tomoformer did not write it; move it away or choose another --out")


def write_recorded(path: str | os.PathLike[str], text: str, *, command: str) -> Path:
    """Write the text file ``path`` (atomically) into a folder that repeated runs share, such as a benchmark's
    ``--out`` with its ``results.csv``: a name that exists is replaced only if the folder's record says we wrote
    it, else :class:`OutputError`. The name is recorded (the folder adopted if need be) before it is written."""
    from tomoformer.io import write_text_atomic

    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    check_recorded(path)
    write_marker(folder, {} if read_marker(folder) else {"kind": "folder", "command": command}, add=[path.name])
    return write_text_atomic(path, text)


def _is_secondary_rank() -> bool:
    """True in a DDP worker of rank > 0: rank 0 owns the run folder (and its lock)."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value) > 0
    return False


def claim_names(folder: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Record ``names`` as entries we are about to create in our run folder ``folder`` (rank 0 only), so that
    ``--overwrite`` may remove them later even if this process is killed."""
    if not _is_secondary_rank() and read_marker(folder) is not None:
        write_marker(folder, add=names)


@dataclass
class RunFolder:
    """A run folder claimed by :func:`run_folder`.

    ``stored``: the config of the run found there (``--resume``), ``marker``: its marker record;
    ``fresh``: the folder holds no earlier run (new, empty, or to be replaced with ``--overwrite``);
    ``clean``: the recorded entries of the earlier run that :meth:`begin` removes (``--overwrite``);
    ``before``: the names in the folder when it was claimed.
    """

    path: Path
    command: str
    record: dict[str, Any]
    fresh: bool
    resumed: bool
    primary: bool = True
    stored: dict[str, Any] | None = None
    marker: dict[str, Any] = field(default_factory=dict)
    clean: list[str] = field(default_factory=list)
    before: set[str] = field(default_factory=set)
    begun: bool = False

    @property
    def finished(self) -> bool:
        """True when the run found here ended normally (its marker says so)."""
        return bool(self.marker.get("finished"))

    def begin(self) -> Path:
        """The run really starts (its data and options are checked): remove the earlier run's recorded entries
        (``--overwrite``), record the names this run will create, write ``config.yaml``; returns the folder."""
        if self.primary:
            import yaml

            from tomoformer.io import write_text_atomic

            if self.clean:
                remove_recorded(self.path, self.clean)
                self.before -= set(self.clean)
            planned = RUN_ENTRIES - _names(self.path)
            record = {"kind": "run", "command": self.command, "finished": False}
            write_marker(self.path, record, add=planned)
            write_text_atomic(self.path / "config.yaml", yaml.safe_dump(self.record, sort_keys=False))
        self.begun = True
        return self.path

    def _settle(self, summary: dict[str, Any]) -> None:
        """Record what this run created (new names since the claim) and forget planned names it never made."""
        present = _names(self.path)
        unmade = recorded_entries(self.path) - present
        write_marker(self.path, summary, add=present - self.before - {MARKER}, drop=unmade)

    def finish(self, **summary: Any) -> None:
        """Mark the run finished (``--resume`` then says so instead of training again)."""
        if self.primary:
            self._settle({"kind": "run", "command": self.command, "finished": True, **summary})

    def abort(self) -> None:
        """After a failure: a fresh run with nothing resumable is removed (only its recorded entries; the folder
        too if we created it and it is then empty, our marker if we adopted it); any other run is kept, with what
        it created recorded."""
        if not (self.primary and self.begun and read_marker(self.path) is not None):
            return
        if self.fresh and not any((self.path / name).exists() for name in _RESUMABLE):
            remove_recorded(self.path, recorded_entries(self.path))
            created = bool((read_marker(self.path) or {}).get("created"))
            remove_marker(self.path)
            if created:
                with contextlib.suppress(OSError):
                    self.path.rmdir()  # only succeeds when nothing of the user's is left
            return
        self._settle({})


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

    * missing or empty folder: a fresh run (an empty folder of the user's is adopted);
    * our run folder: ``resume`` continues it if its stored config equals ``record`` apart from the keys in
      ``may_change`` (else :class:`OutputError` naming the differing keys); ``overwrite`` starts afresh, removing
      the earlier run's recorded entries only in :meth:`RunFolder.begin`; neither: refused;
    * any other existing path (a file, a symlink, a folder without our run record): refused, with or without
      ``overwrite``.

    The folder is locked while the block runs. On failure, see :meth:`RunFolder.abort`.
    """
    _require_name(out, "--out")
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
            run.abort()
            raise


def _inspect(
    path: Path, record: dict[str, Any], command: str, resume: bool, overwrite: bool, may_change: set[str]
) -> RunFolder:
    new = RunFolder(path, command, record, fresh=True, resumed=False)
    if not os.path.lexists(path):
        return new
    _refuse_links(path, "--out", overwrite or resume)
    if not path.is_dir():
        raise OutputError(f"--out {path}: a file, not a run folder; choose another --out")
    if is_empty_dir(path):
        return new
    marker = read_marker(path)
    if marker is None or marker.get("kind") != "run":
        what = _not_ours_text(path) if marker is None else "not a tomoformer run folder"
        raise OutputError(f"--out {path}: {what}; choose another --out (--overwrite never replaces such a folder)")
    before = _names(path)
    if not (overwrite or resume):
        raise OutputError(f"--out {path}: a run folder already; give --resume to continue it or --overwrite")
    linked = sorted(name for name in RUN_ENTRIES & before if (path / name).is_symlink())
    if linked:  # we never create links: a run would write through it into whatever it points at
        raise OutputError(f"--out {path}: {linked[0]} is a symbolic link, which tomoformer did not create; remove it")
    foreign = sorted((RUN_ENTRIES & before) - recorded_entries(path))
    if foreign:
        raise OutputError(
            f"--out {path}: holds {', '.join(foreign)}, which tomoformer did not create there; move "
            f"{'it' if len(foreign) == 1 else 'them'} away or choose another --out"
        )
    if overwrite:
        clean = sorted(recorded_entries(path) & before)
        return RunFolder(path, command, record, fresh=True, resumed=False, marker=marker, clean=clean, before=before)
    if marker.get("command") not in (None, command):
        raise OutputError(f"--out {path}: a `{marker.get('command')}` run; it cannot be resumed by `{command}`")
    stored = read_run_config(path)
    if stored is None:  # killed before the run really started: nothing to continue
        return RunFolder(path, command, record, fresh=True, resumed=False, marker=marker, before=before)
    differing = differing_keys(stored, record, may_change)
    if differing:
        raise OutputError(
            f"--out {path}: cannot resume: the run was started with other {', '.join(differing)} "
            "(resume with the same options, or give --overwrite to start over)"
        )
    return RunFolder(path, command, record, fresh=False, resumed=True, stored=stored, marker=marker, before=before)


def read_run_config(path: Path) -> dict[str, Any] | None:
    """The ``config.yaml`` a run or study folder holds; None when missing, not a regular file, too large or
    unreadable."""
    from tomoformer.errors import ConfigError
    from tomoformer.safe_yaml import read_yaml_file

    config = path / "config.yaml"
    if config.is_symlink() or not config.is_file():
        return None
    try:
        value = read_yaml_file(config)
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
