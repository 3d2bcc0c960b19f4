"""`tomoformer export` and `tomoformer predict --onnx`: outputs, exit codes, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import toy_arrays
from tests.test_export import DATA_ATTRS, make_checkpoint
from tomoformer.cli import main
from tomoformer.data.format import write_dataset


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli_export")
    checkpoint, _ = make_checkpoint(folder / "u.ckpt", "unet")
    out = folder / "u.onnx"
    args = ["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out), "--height", "16", "--width", "16"]
    assert main(["export", *args]) == 0
    return checkpoint, out


def test_predict_onnx_equals_predict_checkpoint(exported: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, onnx_file = exported
    data = write_dataset(tmp_path / "toy.zarr", toy_arrays(n=5, t=3), DATA_ATTRS)
    common = ["--data", str(data), "--batch-size", "2"]  # 5 samples: a short last batch
    assert main(["predict", "--checkpoint", str(checkpoint), *common, "--out", str(tmp_path / "a.npz")]) == 0
    assert main(["predict", "--onnx", str(onnx_file), *common, "--out", str(tmp_path / "b.npz")]) == 0
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert b["probabilities"].shape == (5, 16, 16)
        np.testing.assert_allclose(b["probabilities"], a["probabilities"], atol=1e-4)
        np.testing.assert_array_equal(b["buildings"], a["buildings"])


def test_predict_needs_exactly_one_model(exported: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, onnx_file = exported
    rest = ["--data", "x.zarr", "--out", str(tmp_path / "p.npz")]
    for models in ([], ["--checkpoint", str(checkpoint), "--onnx", str(onnx_file)]):
        with pytest.raises(SystemExit) as info:
            main(["predict", *models, *rest])
        assert info.value.code == 2


def test_export_safetensors_writes_a_loadable_checkpoint(exported: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, _ = exported
    out = tmp_path / "u.safetensors"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "safetensors", "--out", str(out)]) == 0
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(out),
                "--data",
                str(write_dataset(tmp_path / "d.npz", toy_arrays(n=2), DATA_ATTRS)),
                "--out",
                str(tmp_path / "p.npz"),
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("model", "fmt", "suffix", "message"),
    [("threshold", "onnx", ".onnx", "cannot be exported"), ("unet", "keras", ".h5", "unknown export format")],
)
def test_export_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, fmt: str, suffix: str, message: str
) -> None:
    checkpoint, _ = make_checkpoint(tmp_path / "m.ckpt", model)
    out = tmp_path / f"m{suffix}"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()
