"""The cross-field rules of the run configs hold for a library caller too (not only on the command line): a bad
combination is one :class:`ConfigError` line before any data is read or any output is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tomoformer.classify.config import ClassifyConfig
from tomoformer.errors import ConfigError
from tomoformer.tasks.config import FinetuneConfig, PretrainConfig, TrainConfig


def one_line(err: pytest.ExceptionInfo[ConfigError], *words: str) -> None:
    text = str(err.value)
    assert "\n" not in text and all(word in text for word in words), text


def test_a_run_needs_a_step_budget() -> None:
    for cls in (TrainConfig, FinetuneConfig, PretrainConfig, ClassifyConfig):
        with pytest.raises(ConfigError) as err:
            cls(max_epochs=0, max_steps=-1)
        one_line(err, "--max-epochs", "--max-steps")
        assert cls(max_epochs=0, max_steps=5).max_steps == 5  # a step budget alone is enough


def test_streaming_excludes_a_store_and_the_masked_objective() -> None:
    with pytest.raises(ConfigError) as err:
        PretrainConfig(stream=True, data="mine.zarr")
    one_line(err, "--stream", "--data")
    with pytest.raises(ConfigError) as err:
        PretrainConfig(stream=True, val_data="val.zarr")
    one_line(err, "--stream")
    with pytest.raises(ConfigError) as err:
        PretrainConfig(stream=True, objective="masked")
    one_line(err, "masked")
    with pytest.raises(ConfigError) as err:
        PretrainConfig(sim_config="sim.yaml")
    one_line(err, "--sim-config", "--stream")
    assert PretrainConfig(stream=True, sim_config="sim.yaml").stream


def test_range_and_choice_checks_come_from_the_fields() -> None:
    with pytest.raises(ConfigError) as err:
        PretrainConfig(mask_ratio=0.0)
    one_line(err, "mask_ratio")
    with pytest.raises(ConfigError) as err:
        PretrainConfig(mask_mode="rows")
    one_line(err, "mask_mode")
    with pytest.raises(ConfigError) as err:
        PretrainConfig(samples_per_epoch=0)
    one_line(err, "samples_per_epoch")
    with pytest.raises(ConfigError) as err:
        TrainConfig(augment={"crop": 0})
    one_line(err, "augment.crop")
    with pytest.raises(ConfigError) as err:
        TrainConfig(augment={"max_frames": 4, "min_frames": 5})
    one_line(err, "augment.min_frames")


def test_finetune_rules_hold_for_the_library_entry_point(tmp_path: Path) -> None:
    from tomoformer.tasks.finetune import run_finetune

    with pytest.raises(ConfigError) as err:
        FinetuneConfig(policy="lora:x")
    one_line(err, "lora:x")
    out = tmp_path / "ft"
    with pytest.raises(ConfigError) as err:
        run_finetune(config=FinetuneConfig(data=str(tmp_path / "missing.zarr"), out=str(out)))
    one_line(err, "--from")
    assert not out.exists()
