"""The training-augmentation options (``augment:`` in a run config; the augmentation flags of ``train``,
``pretrain``, ``finetune``): :class:`AugmentOptions`.

A module of its own that imports no torch, so the command line builds the flags from the fields' ``metadata``
(``help``, ``flag``, ``bounds``, see :func:`tomoformer.tasks.options.option`) without the deep-learning imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tomoformer.errors import ConfigError
from tomoformer.validation import check_declared, check_int

# How the frame count is drawn in [min_frames, max_frames] (data.transforms draws it).
FRAME_SAMPLINGS = ("uniform", "log-uniform")


def _opt(default: Any, help: str | None = None, **meta: Any) -> Any:
    """A field with its command-line metadata (the same keys as ``tasks.options.option``)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class AugmentOptions:
    """Training-time augmentation: D4 symmetry, random frame subsets, random sparsity, a random receiver floor."""

    d4: bool = _opt(True, "no symmetry augmentation", bool_flag="off")
    # Checked against max_frames (check): at least 1 and at most max_frames when max_frames is set.
    min_frames: int | None = _opt(None, "with --sample-frames N: at least this many frames (default N/2)")
    # --sample-frames N | A-B (and its old spelling --frames): cli/renamed.py parses it into these fields.
    max_frames: int | None = _opt(
        None, "random frame subsets", flag="sample-frames", parse="frames", bounds=("int", 0, None)
    )
    min_keep_fraction: float | None = _opt(
        None,
        "random sparsity: keep between this fraction and all of the cells of each frame",
        bounds=("float", 0.0, 1.0, False, False),
    )
    # On by default: a random receiver floor is what made models trained on the fast simulator work on ray-traced
    # maps (IoU 0.17 -> 0.50 on rt_city for tomoformer_tiny), at a cost of 0.005 IoU on the simulator itself.
    max_floor_fraction: float | None = _opt(
        0.4,
        "random receiver floor: the weakest 0 to this fraction of each sample's cells become NaN "
        "(default 0.4; 0 = off)",
        bounds=("float", 0.0, 1.0, False, True),
    )
    # Train on random crop x crop windows of each map (None: whole maps); models map any size at inference.
    crop: int | None = _opt(
        None,
        "train on random N x N windows of each map (cheaper steps; the model still maps whole maps)",
        bounds=("int", 1, None),
    )
    # How the frame count is drawn in [min_frames, max_frames] (set by --sample-frames A-B).
    frame_sampling: str = _opt("uniform", choices=FRAME_SAMPLINGS)
    # With crop: the share of batches that keep whole tiles instead of windows (0: windows only).
    whole_fraction: float = _opt(
        0.0,
        "with --crop: this share of the batches trains on whole maps instead of windows (default 0)",
        bounds=("float", 0.0, 1.0, False, False),
    )

    def __post_init__(self) -> None:
        if self.frame_sampling not in FRAME_SAMPLINGS:
            raise ConfigError(
                f"augment.frame_sampling must be one of {', '.join(FRAME_SAMPLINGS)}, got {self.frame_sampling!r}"
            )
        if not isinstance(self.whole_fraction, int | float) or not 0.0 <= self.whole_fraction <= 1.0:
            raise ConfigError(f"augment.whole_fraction must be in [0, 1], got {self.whole_fraction!r}")

    def check(self) -> None:
        """Range checks (the fields' ``bounds``) and the cross-field rule min_frames <= max_frames."""
        check_declared(self, "augment.")
        if self.min_frames is not None and self.max_frames:
            check_int("augment.min_frames", self.min_frames, 1, self.max_frames)
