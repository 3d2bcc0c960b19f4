"""The ``tomoformer`` command line: one entry point, one subcommand per job.

User errors (bad files, bad options) print one line and exit with code 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tomoformer.errors import TomoFormerError

EXIT_USER_ERROR = 2


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
        pretrain_cmd,
        sim_cmd,
        simulate_cmd,
        study_cmd,
        train_cmd,
    )

    parser = argparse.ArgumentParser(
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
        train_cmd,
        pretrain_cmd,
        finetune_cmd,
        study_cmd,
        eval_cmd,
        export_cmd,
        classify_cmd,
        experts_cmd,
        bench_cmd,
    ):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except TomoFormerError as err:
        print(f"tomoformer: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("tomoformer: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("tomoformer: error: out of memory (try a smaller --batch-size or fewer frames)", file=sys.stderr)
        return 1
    except Exception as err:
        if os.environ.get("TOMOFORMER_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        print(
            f"tomoformer: internal error: {type(err).__name__}: {message} "
            "(set TOMOFORMER_DEBUG=1 for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
