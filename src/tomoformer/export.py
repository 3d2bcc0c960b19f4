"""Export a trained checkpoint to ONNX, a ``torch.export`` program or safetensors, and run ONNX files.

Formats (``export_model(checkpoint, fmt, out)``):

* ``onnx`` (``.onnx``): inputs ``signals`` float32 ``[B, T, H, W]`` dB (NaN = missing) and ``tx_pos`` float32
  ``[B, T, 3]`` in the model convention (row, col, height above the receiver, all in cells). ``tx_pos`` is always
  required: a row of NaN means "position unknown" (the models treat all-NaN rows exactly like ``tx_pos=None``),
  so one graph serves data with and without positions. Output ``logits`` float32 ``[B, H, W]``. B and T are
  dynamic; H and W are fixed at export (``height``/``width``): the models pad H and W to multiples of the patch
  size and of the decoder's pyramid, and a graph traced with symbolic H, W carries guards on those paddings that
  ONNX cannot check, so a size other than the traced one could silently give wrong maps. Recurrent models
  (``convgru``) export their loop over frames as a ``scan`` (ONNX ``Scan``), so T stays dynamic for them too.
  The TomoFormer metadata (model name, options, data attributes such as ``cell_size_m`` and ``rx_height_m``)
  is stored as ONNX ``metadata_props``; the file is checked with onnxruntime against PyTorch before it is written.
* ``torchscript`` (``.pt2``): a ``torch.export`` program (load with ``torch.export.load(path).module()``), not
  ``torch.jit.trace``: tracing records the Python loop over frame chunks in ``pixel_statistics`` for the traced
  T only, so a traced model silently ignores frames beyond the first chunk (and ``torch.jit`` is deprecated).
  Same inputs, output and fixed H, W as ONNX; metadata in the extra file ``tomoformer.json``.
* ``safetensors`` (``.safetensors``): weights and metadata via :func:`tomoformer.checkpoint.save_checkpoint`,
  readable by :func:`tomoformer.checkpoint.load_checkpoint`.

ONNX needs the optional packages ``onnx``, ``onnxruntime`` and ``onnxscript`` (``pip install tomoformer[export]``);
they are imported only when used.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tomoformer.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from tomoformer.data.format import DEFAULT_ATTRS
from tomoformer.errors import CheckpointError, ConfigError, DataError, TomoFormerError
from tomoformer.io import atomic_path
from tomoformer.models.protocol import requires_fit

FORMATS = {"onnx": ".onnx", "torchscript": ".pt2", "safetensors": ".safetensors"}
DEFAULT_SIZE = 100
INPUT_NAMES = ("signals", "tx_pos")
OUTPUT_NAME = "logits"
METADATA_KEY = "tomoformer"
TOLERANCE = 1e-4
_EXPORT_BATCH, _EXPORT_FRAMES = 2, 3  # not 1: torch.export specialises dimensions of size 0 or 1
_CHECK_BATCH, _CHECK_FRAMES = 3, 5  # checked at other sizes than traced, so dynamic axes are tested too


def export_model(
    checkpoint: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    height: int | None = None,
    width: int | None = None,
    opset: int | None = None,
    optimize: bool = True,
) -> Path:
    """Export ``checkpoint`` as ``fmt`` (onnx | torchscript | safetensors) to ``out``, atomically.

    Args:
        checkpoint: a ``.ckpt`` or ``.safetensors`` checkpoint.
        fmt: output format; ``out`` must end in its suffix (``.onnx``, ``.pt2``, ``.safetensors``).
        out: output file.
        height, width: map size in cells baked into ONNX/torch.export graphs (default: ``height``/``width`` of
            the checkpoint's data attributes, else 100).
        opset: ONNX opset (default: the exporter's).
        optimize: run onnxscript's graph optimiser (constant folding, fusions); ``False`` exports a large model
            several times faster, and onnxruntime still applies its own optimisations when it loads the graph.

    Returns:
        ``out`` as a Path.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix.lower() != FORMATS[fmt]:
        raise ConfigError(f"{out}: a {fmt} export must end in {FORMATS[fmt]}")
    loaded = load_checkpoint(checkpoint)
    if fmt == "safetensors":
        return save_checkpoint(out, loaded.model, loaded.hparams)
    if requires_fit(loaded.model):
        raise ConfigError(
            f"model {loaded.name!r} is fitted, not a network, and cannot be exported to {fmt}; "
            "export it as safetensors or use the checkpoint directly"
        )
    size = _map_size(loaded, height, width)
    metadata = export_metadata(loaded, size)
    if fmt == "onnx":
        return export_onnx(loaded.calibrated(), out, size, metadata, opset=opset, optimize=optimize)
    return export_program(loaded.calibrated(), out, size, metadata)


def export_metadata(loaded: LoadedModel, size: tuple[int, int]) -> dict[str, str]:
    """String metadata for exported files: the full record under ``tomoformer`` (JSON) plus flat copies of the
    values a user needs to feed the graph (``tx_pos`` conversion, map size)."""
    attrs = {**{k: DEFAULT_ATTRS[k] for k in ("cell_size_m", "rx_height_m")}, **loaded.data_attrs}
    record = {
        "model": loaded.name,
        "model_kwargs": loaded.model_kwargs,
        "data_attrs": attrs,
        "height": size[0],
        "width": size[1],
        "temperature": loaded.temperature,  # already applied: the graph's logits are divided by it
    }
    return {
        METADATA_KEY: json.dumps(record, default=str),
        "tomoformer.model": loaded.name,
        "tomoformer.cell_size_m": str(attrs["cell_size_m"]),
        "tomoformer.rx_height_m": str(attrs["rx_height_m"]),
        "tomoformer.tx_pos": "row, col (cells), (tx_height_m - rx_height_m) / cell_size_m; NaN = unknown",
    }


def example_inputs(batch: int, frames: int, size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plausible random inputs: signals [B, T, H, W] dB with a missing frame and missing cells, tx_pos [B, T, 3]
    cells with one unknown row."""
    generator = torch.Generator().manual_seed(seed)
    H, W = size
    signals = -80.0 + 10.0 * torch.randn(batch, frames, H, W, generator=generator)
    signals[torch.rand(signals.shape, generator=generator) < 0.1] = float("nan")
    tx_pos = torch.rand(batch, frames, 3, generator=generator) * torch.tensor([H, W, 5.0])
    if frames > 1:
        signals[0, -1] = float("nan")
        tx_pos[-1, 0] = float("nan")
    return signals, tx_pos


def export_onnx(
    model: nn.Module,
    out: str | os.PathLike[str],
    size: tuple[int, int],
    metadata: dict[str, str],
    opset: int | None,
    optimize: bool = True,
) -> Path:
    """Export ``model`` to ONNX (dynamic B, T; fixed H, W) and check it with onnxruntime before it is written."""
    _require_onnx()
    out = Path(out)
    args = example_inputs(_EXPORT_BATCH, _EXPORT_FRAMES, size)
    dims = {"signals": {0: "B", 1: "T"}, "tx_pos": {0: "B", 1: "T"}}
    try:
        with _quiet(), _frozen(model):
            program = torch.onnx.export(
                model.eval(),
                args,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dims,
                opset_version=opset,
                dynamo=True,
                optimize=optimize,
                verbose=False,
            )
    except Exception as err:
        raise TomoFormerError(f"ONNX export failed: {type(err).__name__}: {_first_line(err)}") from None
    assert program is not None
    program.model.metadata_props.update(metadata)
    with atomic_path(out) as tmp:
        program.save(tmp, external_data=False)
        signals, tx_pos = example_inputs(_CHECK_BATCH, _CHECK_FRAMES, size, seed=1)
        with torch.no_grad():
            expected = model(signals, tx_pos).numpy()
        got = OnnxPredictor(tmp)(signals.numpy(), tx_pos.numpy())
        _check_close(got, expected, "ONNX")
    return out


def export_program(
    model: nn.Module, out: str | os.PathLike[str], size: tuple[int, int], metadata: dict[str, str]
) -> Path:
    """Save a ``torch.export`` program (dynamic B, T; fixed H, W) with ``metadata`` as extra files, checked on
    new inputs before it is written."""
    from torch.export import Dim

    out = Path(out)
    args = example_inputs(_EXPORT_BATCH, _EXPORT_FRAMES, size)
    dims = {"signals": {0: Dim.DYNAMIC, 1: Dim.DYNAMIC}, "tx_pos": {0: Dim.DYNAMIC, 1: Dim.DYNAMIC}}
    try:
        with _frozen(model):
            program = torch.export.export(model.eval(), args, dynamic_shapes=dims)
    except Exception as err:
        raise TomoFormerError(f"torch.export failed: {type(err).__name__}: {_first_line(err)}") from None
    with atomic_path(out) as tmp:
        torch.export.save(program, tmp, extra_files={f"{METADATA_KEY}.json": metadata[METADATA_KEY]})
        signals, tx_pos = example_inputs(_CHECK_BATCH, _CHECK_FRAMES, size, seed=1)
        with torch.no_grad():
            expected = model(signals, tx_pos).numpy()
            got = torch.export.load(tmp).module()(signals, tx_pos).numpy()
        _check_close(got, expected, "torch.export")
    return out


def load_program_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``tomoformer`` record stored in a ``.pt2`` export."""
    extra = {f"{METADATA_KEY}.json": ""}
    torch.export.load(path, extra_files=extra)
    return json.loads(extra[f"{METADATA_KEY}.json"])


class OnnxPredictor:
    """Runs an exported ``.onnx`` file with onnxruntime; needs no PyTorch model.

    ``predictor(signals, tx_pos) -> logits``: numpy float32 ``[B, T, H, W]`` dB and ``[B, T, 3]`` in the model
    convention (or None: all unknown) to ``[B, H, W]`` logits. :meth:`model_tx_pos` converts dataset positions
    (height in metres) with the data attributes stored in the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        ort = _require_onnx()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise CheckpointError(f"{self.path}: not a readable ONNX file ({_first_line(err)})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise CheckpointError(f"{self.path}: ONNX file has no 'tomoformer' metadata (not a tomoformer export)")
        self.metadata: dict[str, Any] = json.loads(props[METADATA_KEY])
        self.size = (int(self.metadata["height"]), int(self.metadata["width"]))

    @property
    def model_name(self) -> str:
        return str(self.metadata["model"])

    @property
    def data_attrs(self) -> dict[str, Any]:
        return dict(self.metadata.get("data_attrs") or {})

    def model_tx_pos(self, tx_pos: np.ndarray) -> np.ndarray:
        """Dataset ``tx_pos [..., 3]`` (height in metres) to the model convention, with this file's data attrs."""
        from tomoformer.data.datamodule import model_tx_pos

        attrs = self.data_attrs
        return model_tx_pos(tx_pos, float(attrs["cell_size_m"]), float(attrs["rx_height_m"])).numpy()

    def __call__(self, signals: np.ndarray, tx_pos: np.ndarray | None = None) -> np.ndarray:
        """signals [B, T, H, W] dB, tx_pos [B, T, 3] cells (model convention) | None -> logits [B, H, W]."""
        signals = np.ascontiguousarray(signals, dtype=np.float32)
        if signals.ndim != 4 or signals.shape[-2:] != self.size:
            raise DataError(
                f"{self.path}: expects signals [B, T, {self.size[0]}, {self.size[1]}], got {list(signals.shape)} "
                "(export again with --height/--width for another map size)"
            )
        if tx_pos is None:
            tx_pos = np.full((*signals.shape[:2], 3), np.nan, dtype=np.float32)
        tx_pos = np.ascontiguousarray(tx_pos, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {"signals": signals, "tx_pos": tx_pos})[0]

    def predict_probabilities(self, dataset: Any, batch_size: int = 8) -> np.ndarray:
        """Building probabilities [N, H, W] float32 for every sample of a ``SignalMapDataset`` (in its order);
        the dataset converts ``tx_pos`` with its own attributes, exactly as for a PyTorch checkpoint."""
        from torch.utils.data import DataLoader

        from tomoformer.data.datamodule import collate

        _, _, h, w = dataset.source.shape
        out = np.empty((len(dataset), h, w), dtype=np.float32)
        position = 0
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
            tx_pos = batch["tx_pos"].numpy() if "tx_pos" in batch else None
            logits = self(batch["signals"].numpy(), tx_pos)
            out[position : position + len(logits)] = 1.0 / (1.0 + np.exp(-logits))
            position += len(logits)
        return out


def _map_size(loaded: LoadedModel, height: int | None, width: int | None) -> tuple[int, int]:
    attrs = loaded.data_attrs
    size = (int(height or attrs.get("height") or DEFAULT_SIZE), int(width or attrs.get("width") or DEFAULT_SIZE))
    if min(size) < 1:
        raise ConfigError(f"map size must be at least 1x1, got {size[0]}x{size[1]}")
    return size


def _check_close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    if got.shape != expected.shape or not np.allclose(got, expected, atol=TOLERANCE, rtol=TOLERANCE):
        diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("nan")
        raise TomoFormerError(
            f"{what} export does not reproduce PyTorch (shape {list(got.shape)} vs {list(expected.shape)}, "
            f"max |difference| {diff:.3g} > {TOLERANCE}); nothing was written"
        )


def _require_onnx() -> Any:
    """Import the optional ONNX stack; returns ``onnxruntime``."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            raise TomoFormerError(
                f"ONNX needs the optional package {name!r}: pip install 'tomoformer[export]'"
            ) from None
    return module


@contextlib.contextmanager
def _quiet():
    # The dynamo exporter prints progress lines to stdout; the CLI prints its own summary.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@contextlib.contextmanager
def _frozen(model: nn.Module):
    # Parameters that require grad send torch.export's scan (convgru's recurrence) down its autograd path, which
    # the ONNX decomposition cannot lower; an export needs no gradients anyway.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else ""
