"""Flags that were renamed, still accepted under their old spelling for one release with a one-line warning.

``--frames`` means frames per sample (T) in every command (``simulate``, ``demo``, ``bench``, ``data import``).
``train``, ``pretrain`` and ``finetune`` used it for the random frame subsets of training; that option is now
``--sample-frames`` (YAML: ``augment: {max_frames: N}``, unchanged, never spelled ``frames``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any


class RenamedFlag(argparse.Action):
    """The old spelling of a renamed flag: stores its value like the new flag and warns on stderr, once a use."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, meaning: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new, self.meaning = new, meaning

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        then = f"; {option_string} will mean {self.meaning}" if self.meaning else ""
        print(f"{parser.prog}: warning: {option_string} is now {self.new}{then}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_sample_frames_flags(parser: argparse.ArgumentParser, kind: Callable[[str], int] = int) -> None:
    """``--sample-frames N`` (random subsets of at most N of a sample's frames, into ``augment.max_frames``) and its
    old spelling ``--frames``, hidden from the help."""
    parser.add_argument(
        "--sample-frames",
        dest="max_frames",
        type=kind,
        metavar="N",
        default=argparse.SUPPRESS,
        help="train on random subsets of at most N of each sample's frames (at least --min-frames, default N/2)",
    )
    parser.add_argument(
        "--frames",
        dest="max_frames",
        type=kind,
        default=argparse.SUPPRESS,
        action=RenamedFlag,
        new="--sample-frames",
        meaning="frames per sample (T), as in simulate",
        help=argparse.SUPPRESS,
    )
