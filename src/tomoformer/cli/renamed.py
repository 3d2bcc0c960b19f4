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


def frames_spec(text: str) -> int | tuple[int, int]:
    """``--sample-frames`` value: ``N`` (an int) or ``A-B`` (a log-uniform range, ``(A, B)``, 1 <= A <= B)."""
    lo, dash, hi = text.partition("-")
    try:
        values = (int(lo), int(hi)) if dash else (int(text),)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or a range A-B of frame counts, got {text!r}") from None
    if dash and not 1 <= values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"range {text!r} needs 1 <= A <= B")
    return values if dash else values[0]  # type: ignore[return-value]


def add_sample_frames_flags(
    parser: argparse.ArgumentParser, kind: Callable[[str], int | tuple[int, int]] = frames_spec
) -> None:
    """``--sample-frames N`` (random subsets of at most N of a sample's frames, into ``augment.max_frames``) or
    ``--sample-frames A-B`` (a log-uniform count in A..B per batch), and its old spelling ``--frames``, hidden from
    the help."""
    parser.add_argument(
        "--sample-frames",
        dest="max_frames",
        type=kind,
        metavar="N|A-B",
        default=argparse.SUPPRESS,
        help="train on random subsets of each sample's frames: N = at most N, uniformly (at least --min-frames, "
        "default N/2); A-B = a log-uniform count in A..B, one per batch, capped at the frames a sample has "
        "(default without this flag or a YAML value: 1-128)",
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
