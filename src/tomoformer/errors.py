"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class TomoFormerError(Exception):
    """A problem the user can fix (bad input, missing option); never a bug of ours."""

    exit_code = 2


class DataError(TomoFormerError):
    """A dataset file or array is missing, malformed or inconsistent."""


class CheckpointError(TomoFormerError):
    """A checkpoint cannot be loaded safely or does not match the requested model."""


class ConfigError(TomoFormerError):
    """A configuration file or option is invalid."""


class OutputError(TomoFormerError):
    """An output path cannot be written without risking files we did not create (exists, is an input, locked)."""


class NumericsError(TomoFormerError):
    """Training diverged (a non-finite loss or weights) or a model gave non-finite outputs; nothing was saved."""
