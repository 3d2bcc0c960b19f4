"""Every YAML file in configs/ is a valid configuration for the command it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tomoformer.cli.common import read_yaml
from tomoformer.models.registry import create_model
from tomoformer.sim.config import SimConfig
from tomoformer.tasks.train import TrainConfig

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_is_valid(path: Path) -> None:
    values = read_yaml(path)
    if path.name.startswith("sim"):
        SimConfig.from_dict(values)
    elif path.name.startswith("experts"):
        from tomoformer.experts.config import ExpertsConfig

        ExpertsConfig.from_dict(values)
    else:
        config = TrainConfig.from_dict(values)
        create_model(config.model, **config.model_kwargs)


def test_there_are_configs() -> None:
    assert any(p.name.startswith("sim") for p in CONFIGS) and any(p.name.startswith("train") for p in CONFIGS)
