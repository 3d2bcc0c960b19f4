"""``tomoformer export``: a checkpoint as ONNX, a ``torch.export`` program (.pt2) or safetensors."""

from __future__ import annotations

import argparse

from tomoformer.cli.common import add_overwrite_flag, positive_int
from tomoformer.outputs import claim_output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="export a checkpoint as ONNX, a torch.export program (.pt2) or safetensors",
        description=(
            "onnx: inputs signals [B,T,H,W] dB (NaN = missing) and tx_pos [B,T,3] in cells (NaN rows = unknown), "
            "output logits [B,H,W]; B and T dynamic, H and W fixed by --height/--width. "
            "torchscript: a torch.export program (.pt2) with the same interface. "
            "safetensors: weights and metadata, loadable as a checkpoint."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="a .ckpt or .safetensors checkpoint")
    p.add_argument("--format", required=True, dest="fmt", help="onnx | torchscript | safetensors")
    p.add_argument("--out", required=True, help="OUT.onnx, OUT.pt2 or OUT.safetensors")
    p.add_argument("--height", type=positive_int, help="map height in cells for onnx/torchscript (default 100)")
    p.add_argument("--width", type=positive_int, help="map width in cells for onnx/torchscript (default 100)")
    p.add_argument("--opset", type=positive_int, help="ONNX opset version (default: the exporter's)")
    p.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="skip onnxscript's graph optimiser: a large model exports several times faster",
    )
    add_overwrite_flag(p)
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from tomoformer.export import export_model

    with claim_output(args.out, overwrite=args.overwrite, command="export", inputs=(args.checkpoint,)):
        out = export_model(
            args.checkpoint, args.fmt, args.out, args.height, args.width, opset=args.opset, optimize=args.optimize
        )
    print(f"wrote {out}")
    return 0
