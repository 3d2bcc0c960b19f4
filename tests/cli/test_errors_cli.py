"""User errors in options, configs and checkpoints: one ``error:`` line, exit 2, no traceback, no output file."""

from __future__ import annotations

import contextlib
import io
import math
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tomoformer.checkpoint import save_checkpoint
from tomoformer.cli import build_parser, main
from tomoformer.errors import ConfigError
from tomoformer.models.registry import create_model
from tomoformer.tasks.train import TrainConfig

# 9 levels of 9 aliases: 9**9 (387 million) strings from a file of about 300 bytes.
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
FLOW_BOMB = (
    "[&a [x,x,x,x,x,x,x,x,x], "
    + ", ".join(f"&{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    + "]"
)


def cli(*argv: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of one in-process CLI call (argparse errors included)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, err.getvalue().strip().splitlines()


def assert_one_line(code: int, err: list[str], *needles: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and "error:" in err[0] and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], err


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("train", "--data", data, "--out", out, "--model", "unet", "--model-opt", "base_channels=8"),
        *("--max-epochs", "1", "--batch-size", "4", "--accelerator", "cpu", "--no-progress", *extra),
    ]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--batch-size", "0"], "batch_size"),
        (["--lr", "nan"], "lr"),
        (["--lr", "-0.1"], "lr"),
        (["--lr", "inf"], "lr"),
        (["--val-fraction", "1.5"], "val_fraction"),
        (["--warmup-fraction", "-1"], "warmup_fraction"),
        (["--weight-decay", "nan"], "weight_decay"),
        (["--seed", "-1"], "seed"),
        (["--num-workers", "-2"], "num_workers"),
        (["--num-nodes", "0"], "num_nodes"),
        (["--precision", "17-bits"], "precision"),
        (["--accelerator", "abacus"], "accelerator"),
        (["--sample-frames", "4", "--min-frames", "9"], "min_frames"),
        (["--min-keep-fraction", "2"], "min_keep_fraction"),
        (["--max-floor-fraction", "1"], "max_floor_fraction"),
        (["--model-opt", "x=["], "--model-opt"),
        (["--model-opt", "1x=3"], "not an option name"),
        (["--model-opt", f"x={FLOW_BOMB}"], "aliases"),
        (["--batch-size", "many"], "--batch-size"),
    ],
)
def test_bad_train_options_exit_2_with_one_line(
    toy_dataset: Path, tmp_path: Path, extra: list[str], needle: str
) -> None:
    out = tmp_path / "run"
    assert_one_line(*cli(*train_args(toy_dataset, out, *extra)), needle)
    assert not list(out.rglob("*.ckpt"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_unavailable_accelerator_and_device(toy_dataset: Path, tmp_path: Path) -> None:
    assert_one_line(*cli(*train_args(toy_dataset, tmp_path / "run", "--accelerator", "gpu")), "no CUDA GPU")
    ckpt = save_checkpoint(tmp_path / "m.ckpt", create_model("threshold"), {"model": "threshold"})
    code, err = cli(
        "predict", "--checkpoint", ckpt, "--data", toy_dataset, "--out", tmp_path / "p.npz", "--device", "cuda"
    )
    assert_one_line(code, err, "--device", "no CUDA GPU")
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"lr: 0.1\nseed: \xff\xfe\n", "not UTF-8"),
        (ALIAS_BOMB.encode(), "aliases"),
        (f"model_kwargs: {{x: {FLOW_BOMB}}}\n".encode(), "aliases"),
        (b"a: &a [*a]\n", "refers to itself"),
        (b"[" * 20000 + b"]" * 20000, "YAML"),
        (b"lr: .nan\n", "lr"),
        (b"batch_size: 0\n", "batch_size"),
        (b"x: " + b"y" * (1 << 20) + b"\n", "KiB"),
    ],
)
def test_bad_config_files_exit_2_fast(tmp_path: Path, text: bytes, needle: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(text)
    start = time.perf_counter()
    code, err = cli("train", "--config", config, "--data", tmp_path / "none.zarr", "--out", tmp_path / "run")
    assert time.perf_counter() - start < 10
    assert_one_line(code, err, needle)


def test_alias_use_within_limits_still_works(tmp_path: Path) -> None:
    from tomoformer.safe_yaml import load_yaml

    assert load_yaml("base: &b {lr: 0.1}\nother: *b\n", "x") == {"base": {"lr": 0.1}, "other": {"lr": 0.1}}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--threshold", "nan"], "--threshold"),
        (["--threshold", "1.5"], "--threshold"),
        (["--batch-size", "0"], "--batch-size"),
        (["--device", "abacus"], "--device"),
    ],
)
def test_bad_predict_options(toy_dataset: Path, tmp_path: Path, argv: list[str], needle: str) -> None:
    ckpt = save_checkpoint(tmp_path / "m.ckpt", create_model("threshold"), {"model": "threshold"})
    out = tmp_path / "p.npz"
    assert_one_line(*cli("predict", "--checkpoint", ckpt, "--data", toy_dataset, "--out", out, *argv), needle)
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--height", "--width"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_export_refuses_empty_maps(tmp_path: Path, flag: str, value: str) -> None:
    ckpt = save_checkpoint(tmp_path / "m.ckpt", create_model("unet", base_channels=8), {"model": "unet"})
    out = tmp_path / "m.onnx"
    assert_one_line(*cli("export", "--checkpoint", ckpt, "--format", "onnx", "--out", out, flag, value), flag)
    assert not out.exists()


def write_raw_checkpoint(path: Path, state_dict: object, hparams: object) -> Path:
    torch.save({"state_dict": state_dict, "hyper_parameters": hparams}, path)
    return path


UNET = {f"model.{k}": v for k, v in create_model("unet", base_channels=8).state_dict().items()}


@pytest.mark.parametrize(
    ("state_dict", "hparams", "needle"),
    [
        (UNET, ["unet"], "does not name its model"),
        (UNET, {"model": 7}, "not a model name"),
        (UNET, {"model": "unet", "model_kwargs": [8]}, "not a mapping"),
        (UNET, {"model": "unet", "model_kwargs": {"base_channels": 10**9}}, "out of range"),
        (UNET, {"model": "unet", "model_kwargs": {"base_channels": "eight"}}, "unet"),
        (UNET, {"model": "unet", "model_kwargs": {f"o{i}": i for i in range(300)}}, "model options"),
        (UNET, {"model": "unet", "model_kwargs": {"base_channels": 8}, "notes": "x" * 100_000}, "bytes"),
        (UNET, {"model": "unet", "model_kwargs": {"no such": 1}}, "not an option name"),
        (UNET, {"model": "unet", "data_attrs": "m"}, "data_attrs"),
        ({"model.w": [1, 2]}, {"model": "unet"}, "not a named tensor"),
        ([1, 2], {"model": "unet"}, "state_dict"),
    ],
)
def test_malformed_checkpoint_fields(
    toy_dataset: Path, tmp_path: Path, state_dict: object, hparams: object, needle: str
) -> None:
    ckpt = write_raw_checkpoint(tmp_path / "bad.ckpt", state_dict, hparams)
    out = tmp_path / "p.npz"
    assert_one_line(*cli("predict", "--checkpoint", ckpt, "--data", toy_dataset, "--out", out), needle)
    assert not out.exists()


def test_safetensors_with_bad_metadata(toy_dataset: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"model.w": torch.zeros(2)}, str(path), metadata={"tomoformer": "{not json"})
    assert_one_line(*cli("predict", "--checkpoint", path, "--data", toy_dataset, "--out", tmp_path / "p.npz"), "JSON")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_malicious_last_checkpoint_on_resume_is_refused(toy_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(*train_args(toy_dataset, out))[0] == 0
    last = out / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["payload"] = Payload()
    torch.save(checkpoint, last)
    code, err = cli(*train_args(toy_dataset, out, "--resume", "--max-epochs", "2"))
    assert_one_line(code, err, "refused")
    assert "weights_only" not in err[0]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_learning_rate_is_accepted_exactly_when_finite_and_not_negative(lr: float) -> None:
    valid = math.isfinite(lr) and lr >= 0
    try:
        TrainConfig(lr=lr)
    except ConfigError as err:
        assert not valid and "lr" in str(err)
    else:
        assert valid


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**40), 2**40))
def test_threshold_flag_is_accepted_exactly_in_unit_interval(value: float) -> None:
    valid = math.isfinite(value) and 0 <= value <= 1
    argv = ["predict", "--checkpoint", "c.ckpt", "--data", "d.zarr", "--out", "p.npz", "--threshold", repr(value)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit_:
            assert not valid and exit_.code == 2
            assert len(err.getvalue().strip().splitlines()) == 1
        else:
            assert valid and args.threshold == float(value)
