"""`--frames` is frames per sample (T) everywhere; the training frame subsets are `--sample-frames`, and the old
spelling still works for one release with a one-line warning that names the new flag."""

from __future__ import annotations

import pytest

from tomoformer.cli import build_parser
from tomoformer.cli.train_cmd import train_config_from_args

COMMANDS = {
    "train": ["train", "--data", "x.zarr"],
    "pretrain": ["pretrain", "--data", "x.zarr"],
    "finetune": ["finetune", "--from", "a.ckpt", "--data", "x.zarr"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_old_frames_spelling_sets_the_same_option_and_warns(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    new = train_config_from_args(parser.parse_args([*COMMANDS[command], "--sample-frames", "6"]))
    assert capsys.readouterr().err == ""
    old = train_config_from_args(parser.parse_args([*COMMANDS[command], "--frames", "6"]))
    assert old.augment == new.augment
    assert (new.augment.min_frames, new.augment.max_frames) == (3, 6)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and f"tomoformer {command}: warning: --frames is now --sample-frames" in lines[0]


def test_help_shows_only_the_new_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    shown = capsys.readouterr().out
    assert "--sample-frames" in shown and "--frames" not in shown.replace("--min-frames", "")


def test_frames_means_frames_per_sample_where_it_is_not_renamed() -> None:
    # simulate and demo read --frames as T, with no warning path involved
    parser = build_parser()
    assert parser.parse_args(["simulate", "--out", "s.zarr", "--frames", "5"]).frames == 5
    assert parser.parse_args(["demo", "--frames", "5"]).frames == 5
