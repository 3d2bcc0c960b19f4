"""The ``tomoformer`` command line: one entry point, one subcommand per job.

User errors (bad files, bad options) print one line and exit with code 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import NoReturn

from tomoformer.errors import TomoFormerError

EXIT_USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from tomoformer import __version__
    from tomoformer.cli import (
        bench_cmd,
        classify_cmd,
        data_cmd,
        demo_cmd,
        eval_cmd,
        experts_cmd,
        export_cmd,
        finetune_cmd,
        geometry_cmd,
        plan_cmd,
        pretrain_cmd,
        sim_cmd,
        simulate_cmd,
        study_cmd,
        train_cmd,
    )

    parser = OneLineParser(
        prog="tomoformer",
        description="See buildings through radio: building maps from sequences of signal-strength maps.",
    )
    parser.add_argument("--version", action="version", version=f"tomoformer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        demo_cmd,
        simulate_cmd,
        sim_cmd,
        data_cmd,
        geometry_cmd,
        train_cmd,
        pretrain_cmd,
        finetune_cmd,
        study_cmd,
        eval_cmd,
        plan_cmd,
        export_cmd,
        classify_cmd,
        experts_cmd,
        bench_cmd,
    ):
        module.register(commands)
    _add_verbose(parser, top=True)
    return parser


def _add_verbose(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``--verbose`` on the main parser and, so that it also works after the command, on every subcommand
    (there it defaults to SUPPRESS, so it never overrides a ``--verbose`` given before the command)."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="also show third-party log lines and warnings (Lightning, PyTorch)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_verbose(sub)


@contextlib.contextmanager
def quiet_console(verbose: bool) -> Iterator[None]:
    """Hide third-party INFO/WARNING log lines (Lightning's banners, "GPU available", tips) and Python warnings
    (deprecations, "does not have many workers") for the duration of a command, unless ``verbose``.

    Our own output is printed, not logged, so it is unaffected; errors of any library still show. Both settings
    are process-wide, so they are restored on exit (``main`` also runs inside tests and notebooks).
    """
    if verbose:
        yield
        return
    previous = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with quiet_console(args.verbose):
            code = args.handler(args)
    except TomoFormerError as err:
        print(f"tomoformer: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("tomoformer: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if not _user_os_error(err):
            return _internal_error(err)
        where = f"{err.filename}: " if err.filename else ""
        print(
            f"tomoformer: error: {where}{err.strerror or err} (check the folder's permissions and free space)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except MemoryError:
        print("tomoformer: error: out of memory (try a smaller --batch-size or fewer frames)", file=sys.stderr)
        return 1
    except Exception as err:
        return _internal_error(err)
    return int(code or 0)


def _user_os_error(err: OSError) -> bool:
    """An OS error the user fixes (permissions, a read-only or full disk, a quota), not a bug of ours."""
    import errno

    return isinstance(err, PermissionError) or err.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES)


def _internal_error(err: BaseException) -> int:
    if os.environ.get("TOMOFORMER_DEBUG"):
        raise err
    message = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    print(
        f"tomoformer: internal error: {type(err).__name__}: {message} "
        "(set TOMOFORMER_DEBUG=1 for the traceback and please report it)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
