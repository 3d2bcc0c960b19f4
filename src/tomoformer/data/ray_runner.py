"""Simulate a dataset as N shards in Ray tasks, then merge them into one store (``tomoformer simulate --ray``).

Every shard is an ordinary ``simulate --shard I/N`` store (tomoformer.data.shards) written by one Ray task into a
hidden folder beside the output, ``.<name>.shards``; on a cluster of several machines that folder must be on a
file system all of them see. A task that fails (its worker dies, or an exception other than a user error) is run
again up to ``max_retries`` times and resumes its shard where it stopped; so does a whole rerun with ``resume``.
When every shard is complete they are merged in order (tomoformer.data.merge) into the output, written atomically
under the output policy (tomoformer.outputs), and the shard folder is deleted (it is ours: it carries our marker).

Ray is optional: ``pip install -e ".[scale]"``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tomoformer.data.format import open_dataset
from tomoformer.data.merge import merge_shards
from tomoformer.data.shards import Shard, shard_name
from tomoformer.errors import ConfigError, DataError, TomoFormerError
from tomoformer.io import is_ours, read_marker, remove, write_marker
from tomoformer.locks import lock_path
from tomoformer.outputs import check_not_input, check_output, output_lock

INSTALL_HINT = 'pip install -e ".[scale]"'


def import_ray() -> Any:
    """The ``ray`` module, or ConfigError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def simulate_with_ray(
    out: Path,
    n: int,
    simulate_args: dict[str, Any],
    address: str | None = None,
    shards: int | None = None,
    max_retries: int = 3,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    inputs: tuple[str | None, ...] = (),
    geometry: Callable[[], Any] | None = None,
    gpus_per_task: float = 0.0,
) -> Path:
    """Simulate ``n`` samples into ``out`` as ``shards`` Ray tasks (default: the cluster's CPU count, at most n).

    ``simulate_args``: the keyword arguments of tomoformer.data.simulated.simulate_dataset other than out, n,
    shard, resume, overwrite, progress and geometry (config, seed, device, chunk, ray_options, scene).
    ``geometry``: a picklable callable that opens the HeightTiles in the task (e.g. functools.partial of
    GeometrySource and its path), or None. ``address``: a running cluster ("auto", "ray://host:10001", ...);
    None starts a local one (or joins the cluster in RAY_ADDRESS), unless Ray is already initialised in this
    process. A cluster started here is shut down at the end.
    """
    ray = import_ray()
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if resume and overwrite:
        raise ConfigError("give --resume or --overwrite, not both")
    if shards is not None and shards < 1:
        raise ConfigError(f"--shards must be at least 1, got {shards}")
    out = Path(out)
    check_not_input(out, inputs)
    with output_lock(out, "simulate --ray"):
        if resume and is_ours(out):
            _check_complete(out, n, simulate_args.get("seed"))
            print(f"{out} is already complete")
            return out
        check_output(out, overwrite=overwrite, inputs=inputs)
        with _cluster(ray, address):
            count = min(n, shards or max(1, int(ray.cluster_resources().get("CPU", 1))))
            work = _shard_folder(out, n, count, resume)
            # Shards are Zarr stores whatever the output format: only those resume.
            paths = [work / f"{shard_name(i, count)}.zarr" for i in range(count)]
            # Each shard's store, its hidden partial store and its lock: the names a shard task may leave here,
            # recorded so that the folder stays wholly ours and is deleted after the merge.
            from tomoformer.data.simulated import partial_path

            write_marker(work, add=[q.name for p in paths for q in (p, partial_path(p), lock_path(p))])
            _run_shards(ray, paths, n, count, simulate_args, geometry, max_retries, progress, gpus_per_task)
        merge_shards([str(p) for p in paths], out)
        with open_dataset(out):
            pass  # refuse to report success on a store we cannot read back
        remove(work)
    return out


def _check_complete(out: Path, n: int, seed: Any) -> None:
    """``--resume`` of a run already merged: the output must be of the same size and seed."""
    with open_dataset(out) as done:
        if len(done) != n or done.attrs.get("seed") != seed:
            raise DataError(
                f"{out}: cannot resume: it holds {len(done)} samples of seed {done.attrs.get('seed')}, not {n} of "
                f"seed {seed}; give --overwrite to replace it"
            )


@contextlib.contextmanager
def _cluster(ray: Any, address: str | None) -> Iterator[None]:
    """Ray initialised for the block: joined at ``address``, or local; shut down after only if started here."""
    started = not ray.is_initialized()
    if started:
        try:
            local = {"include_dashboard": False} if address is None else {}
            ray.init(address=address, log_to_driver=False, **local)
        except (ConnectionError, ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"--ray {address or ''}: cannot start or join a Ray cluster ({first[:200]})") from None
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _shard_folder(out: Path, n: int, count: int, resume: bool) -> Path:
    """``.<out name>.shards`` beside ``out``: reused on ``resume`` if it is ours and of the same split, else new."""
    work = out.with_name(f".{out.name}.shards")
    record = {"kind": "shards", "output": out.name, "n": n, "shards": count}
    if work.exists() or work.is_symlink():
        if not is_ours(work):
            raise DataError(f"{work}: exists and is not a shard folder tomoformer wrote; move it away")
        previous = read_marker(work) or {}
        if resume and (previous.get("n"), previous.get("shards")) == (n, count):
            return work
        if resume:
            raise DataError(
                f"{work}: holds {previous.get('shards')} shards of --n {previous.get('n')}, not {count} "
                f"of {n}; give the same --n and --shards to resume, or --overwrite to restart"
            )
        remove(work)  # shards of an earlier, interrupted run of ours
    write_marker(work, record)
    return work


def _run_shards(
    ray: Any,
    paths: list[Path],
    n: int,
    count: int,
    simulate_args: dict[str, Any],
    geometry: Callable[[], Any] | None,
    max_retries: int,
    progress: bool,
    gpus_per_task: float,
) -> None:
    """Run one task per shard (retried up to ``max_retries`` times), with one progress bar over all samples."""
    counter = ray.remote(num_cpus=0)(_Counter).remote()
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=max_retries, retry_exceptions=True)(
        _simulate_shard
    )
    refs = {task.remote(str(path), n, i, count, simulate_args, geometry, counter): i for i, path in enumerate(paths)}
    pending = list(refs)
    bar = _progress_bar(progress, n)
    with bar:
        job = bar.add_task(f"simulating {count} shards", total=n) if progress else None
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            for ref in ready:
                try:
                    error = ray.get(ref)
                except Exception as err:  # a task that failed after its retries
                    first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                    raise DataError(
                        f"shard {refs[ref]}/{count} failed after {max_retries} retries: {first[:300]}"
                    ) from None
                if error:
                    raise DataError(error)
            if job is not None:
                bar.update(job, completed=ray.get(counter.total.remote()))


def _progress_bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


class _Counter:
    """A Ray actor: the samples written so far, per shard (set, not added: a retried task reports again)."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def set(self, shard: int, written: int) -> None:
        self.done[shard] = written

    def total(self) -> int:
        return sum(self.done.values())


def _simulate_shard(
    path: str,
    n: int,
    index: int,
    count: int,
    simulate_args: dict[str, Any],
    geometry: Callable[[], Any] | None,
    counter: Any,
) -> str | None:
    """The Ray task of one shard: simulate (resuming a partial store of an earlier try) into ``path``.

    Returns None, or the one-line message of a user error (bad options or data: retrying cannot help, so it is
    returned instead of raised, and the driver stops with it); other exceptions are raised and retried by Ray.
    """
    from tomoformer.data.simulated import simulate_dataset

    try:
        simulate_dataset(
            Path(path),
            n=n,
            shard=Shard(index, count),
            resume=True,
            progress=False,
            geometry=geometry() if geometry is not None else None,
            on_progress=lambda done: counter.set.remote(index, done),
            **simulate_args,
        )
    except TomoFormerError as err:
        return f"shard {index}/{count}: {err}"
    return None
