"""A quiet console: a training run prints only tomoformer's own lines; third-party banners and warnings only
with ``--verbose``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tomoformer.cli import quiet_console

# Lines Lightning, PyTorch and friends print by default (banners, hardware summary, tips, warnings).
FOREIGN = (
    "Tip",
    "litlogger",
    "GPU available",
    "TPU available",
    "HPU available",
    "LOCAL_RANK",
    "Warning",
    "warn",
    "deprecated",
    "does not have many workers",
    "Loading `train_dataloader`",
    "`Trainer.fit` stopped",
    ".py:",
)


def run_train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        *(sys.executable, "-m", "tomoformer.cli", *extra, "train", "--data", str(data), "--out", str(out)),
        *("--model", "unet", "--model-opt", "base_channels=8", "--max-epochs", "1", "--batch-size", "4"),
        *("--accelerator", "cpu"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_train_console_shows_only_our_lines(toy_dataset: Path, tmp_path: Path) -> None:
    done = run_train(toy_dataset, tmp_path / "run")
    assert done.returncode == 0, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert not [line for line in lines if any(marker in line for marker in FOREIGN)], lines
    assert any(line.startswith("best checkpoint:") for line in lines), lines


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_console_hides_third_party_logs_and_warnings_unless_verbose(verbose: bool) -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    handler = Keep()
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with quiet_console(verbose):
                logger.warning("GPU available: False")
                logger.error("a real error")
                warnings.warn("old API", DeprecationWarning, stacklevel=1)
            warnings.warn("after the command", UserWarning, stacklevel=1)
    finally:
        logger.removeHandler(handler)
    assert ("GPU available: False" in records) == verbose
    assert "a real error" in records  # errors always show
    assert [str(w.message) for w in caught] == (["old API"] if verbose else []) + ["after the command"]
