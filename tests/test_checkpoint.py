"""Checkpoints load without unpickling code, rebuild their model by name, and refuse what they cannot trust."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomoformer.checkpoint import load_checkpoint, save_checkpoint
from tomoformer.errors import CheckpointError
from tomoformer.models.registry import create_model

HPARAMS = {"model": "unet", "model_kwargs": {"base_channels": 4, "depth": 1}}


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_round_trip_rebuilds_the_same_model(tmp_path: Path, suffix: str) -> None:
    model = create_model("unet", base_channels=4, depth=1)
    path = save_checkpoint(tmp_path / f"m{suffix}", model, HPARAMS)
    loaded = load_checkpoint(path)
    assert loaded.name == "unet" and loaded.model_kwargs == HPARAMS["model_kwargs"]
    x = torch.randn(1, 3, 8, 8) - 70
    torch.testing.assert_close(loaded.model(x), model.eval()(x))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    # An arbitrary class instance needs unpickling code: weights_only loading must refuse it.
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "unet"}, "extra": argparse.Namespace(x=1)}, path)
    with pytest.raises(CheckpointError, match=r"refused: .*argparse\.Namespace"):
        load_checkpoint(path)


def test_wrong_model_missing_file_and_garbage(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", create_model("unet", base_channels=4, depth=1), HPARAMS)
    with pytest.raises(CheckpointError, match="holds model 'unet', not 'seednet'"):
        load_checkpoint(path, expect_model="seednet")
    mismatched = torch.load(path, weights_only=True)
    mismatched["hyper_parameters"]["model_kwargs"] = {"base_channels": 8, "depth": 1}
    torch.save(mismatched, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")


# Small builds of every registered model kind, so the property test below can swap their weights around.
_SMALL = {
    "unet": {"base_channels": 4, "depth": 1},
    "seednet": {},
    "tomoformer_tiny": {"embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16, "decoder_heads": 2},
    "threshold": {},
}


@pytest.fixture(scope="module")
def small_states() -> dict[str, dict[str, torch.Tensor]]:
    return {name: create_model(name, **kwargs).state_dict() for name, kwargs in _SMALL.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    weights_of=st.sampled_from(sorted(_SMALL)),
    named=st.sampled_from([*sorted(_SMALL), "no_such_model"]),
    kwargs_of=st.sampled_from([*sorted(_SMALL), "garbage"]),
    drop=st.integers(0, 3),
    suffix=st.sampled_from([".ckpt", ".safetensors"]),
)
def test_any_mix_of_models_weights_and_options_loads_or_fails_cleanly(
    tmp_path_factory: pytest.TempPathFactory,
    small_states: dict[str, dict[str, torch.Tensor]],
    weights_of: str,
    named: str,
    kwargs_of: str,
    drop: int,
    suffix: str,
) -> None:
    """A checkpoint of another model (or other options, or missing tensors) loads only if it truly fits."""
    state = dict(small_states[weights_of])
    for key in sorted(state)[:drop]:
        del state[key]
    kwargs = {"width": "wide", "depth": -3} if kwargs_of == "garbage" else _SMALL[kwargs_of]
    path = tmp_path_factory.mktemp("ckpt") / f"m{suffix}"
    hparams = {"model": named, "model_kwargs": kwargs}
    tensors = {f"model.{k}": v.contiguous() for k, v in state.items()}
    if suffix == ".ckpt":
        torch.save({"state_dict": tensors, "hyper_parameters": hparams}, path)
    else:
        from safetensors.torch import save_file

        save_file(tensors, str(path), metadata={"tomoformer": json.dumps(hparams)})
    fits = named == weights_of and kwargs == _SMALL[weights_of] and drop == 0
    if fits:
        assert load_checkpoint(path).name == named
    else:
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
