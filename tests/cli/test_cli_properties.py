"""CLI properties: bad files and configs exit 2 with one 'tomoformer: error:' line, valid ones exit 0; no leftovers."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.data.test_format_properties import DEFECTS, FORMATS, _break, corrupt, valid_arrays, write_raw
from tomoformer.cli import main
from tomoformer.data.format import validate, write_dataset

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def cli(*argv: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of one in-process CLI call."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue().strip().splitlines()


def check_data_commands(path: Path, tmp: Path) -> None:
    """Every data command on ``path``: exit 0 if it validates, else exit 2 with one line; no partial outputs."""
    before = sorted(p.name for p in tmp.iterdir())
    valid = validate(path) == []
    code, err = cli("data", "validate", str(path))
    assert code == (0 if valid else 2) and not any("Traceback" in line for line in err), err
    if not valid:
        assert err and all(str(path) in line for line in err), err
    for argv, out in (
        (["data", "info", str(path), "--json"], None),
        (["data", "convert", str(path), str(tmp / "out.npz")], tmp / "out.npz"),
        (["data", "convert", str(path), str(tmp / "out.zarr")], tmp / "out.zarr"),
        (["data", "show", str(path), "--out", str(tmp / "fig.png")], tmp / "fig.png"),
    ):
        code, err = cli(*argv)
        if valid:
            assert code == 0, (argv, err)
            assert out is None or out.exists()
        else:
            assert code in (0, 2), (argv, err)  # info may describe a dataset whose values are bad
            if code == 2:
                assert len(err) == 1 and err[0].startswith("tomoformer: error:"), err
                assert out is None or not out.exists()
    expected = set(before) | ({"out.npz", "out.zarr", "fig.png"} if valid else set())
    after = {p.name for p in tmp.iterdir()}
    assert after <= expected | {"out.npz", "out.zarr", "fig.png"} and after >= set(before), after
    assert not [name for name in after if name.startswith(".")], after  # no temporary leftovers
    if valid:
        assert validate(tmp / "out.npz") == [] and validate(tmp / "out.zarr") == []


def in_tmp(check) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check(Path(tmp))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(valid_arrays(), st.sampled_from(FORMATS))
def test_valid_data_every_command_works(arrays: dict[str, np.ndarray], fmt: str) -> None:
    in_tmp(lambda tmp: check_data_commands(write_dataset(tmp / f"d.{fmt}", arrays, {}), tmp))


@PROPERTY
@given(valid_arrays(), st.sampled_from(DEFECTS), st.sampled_from(FORMATS), st.integers(0, 2**16))
def test_bad_arrays_exit_2(arrays: dict[str, np.ndarray], how: str, fmt: str, seed: int) -> None:
    in_tmp(
        lambda tmp: check_data_commands(
            write_raw(tmp / f"d.{fmt}", _break(arrays, how, np.random.default_rng(seed)), {}), tmp
        )
    )


@PROPERTY
@given(valid_arrays(), st.sampled_from(FORMATS), st.integers(0, 2**16), st.sampled_from(["truncate", "overwrite"]))
def test_corrupt_files_exit_2_or_0(arrays: dict[str, np.ndarray], fmt: str, seed: int, mode: str) -> None:
    def check(tmp: Path) -> None:
        path = write_dataset(tmp / f"d.{fmt}", arrays, {})
        corrupt(path, np.random.default_rng(seed), mode)
        check_data_commands(path, tmp)

    in_tmp(check)


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**12) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
TRAIN_KEYS = st.sampled_from(
    ["max_epochs", "batch_size", "lr", "model", "model_kwargs", "augment", "devices", "seed", "precision", "bogus"]
)


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=60),
        st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
        st.dictionaries(TRAIN_KEYS, YAML_VALUES, max_size=4).map(yaml.safe_dump),
        YAML_VALUES.map(yaml.safe_dump),
    )
)
def test_train_with_garbage_config_exits_2(text: str) -> None:
    def check(tmp: Path) -> None:
        (tmp / "c.yaml").write_text(text, encoding="utf-8")
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            # The data file never exists, so even a config that parses ends in a one-line error.
            code, err = cli("train", "--config", "c.yaml", "--data", "none.zarr", "--out", "run", "--no-progress")
        finally:
            os.chdir(cwd)
        assert code == 2 and len(err) == 1 and err[0].startswith("tomoformer: error:"), (text, err)
        leftovers = [p for p in tmp.rglob("*") if p.name.startswith(".")]
        assert not leftovers, leftovers

    in_tmp(check)
