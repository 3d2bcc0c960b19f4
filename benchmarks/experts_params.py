"""Parameter counts of K experts as separate copies vs LoRA experts sharing one frozen backbone.

Builds ``ExpertsModel`` both ways (``shared_lora=0``: K full copies; ``shared_lora=R``: one frozen backbone, a
rank-R LoRA adapter and a head per expert, what ``tomoformer experts fit --share-backbone`` with ``policy: lora:R``
trains) and prints the experts' parameters (each tensor counted once), the trainable ones, and the whole model
(router and combiner included). Nothing is trained; the counts depend only on the settings.

    python benchmarks/experts_params.py                                    # 3 tomoformer_tiny experts, lora:8
    python benchmarks/experts_params.py --model unet --experts 4 --rank 4 --combine soft
"""

from __future__ import annotations

import argparse
import json

from torch import nn

from tomoformer.models.experts.model import ExpertsModel


def unique_count(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of ``module``, each tensor once (shared backbones are reachable from every expert)."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def counts(model: str, kwargs: dict, experts: int, rank: int, combine: str) -> dict[str, dict[str, int]]:
    spec = {"model": model, "model_kwargs": kwargs}
    out = {}
    for label, shared in (("copies", 0), (f"shared lora:{rank}", rank)):
        built = ExpertsModel(experts=[spec] * experts, combine=combine, shared_lora=shared)
        # The views register only their heads; the shared backbone is registered once, on the model.
        parts = nn.ModuleList([built.experts, *([built.backbone] if built.backbone is not None else [])])
        out[label] = {
            "experts": unique_count(parts),
            "experts_trainable": unique_count(parts, trainable_only=True),
            "whole_model": unique_count(built),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tomoformer_tiny")
    parser.add_argument("--model-kwargs", default="{}", help="JSON options of the expert model")
    parser.add_argument("--experts", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--combine", default="soft")
    args = parser.parse_args()
    result = counts(args.model, json.loads(args.model_kwargs), args.experts, args.rank, args.combine)
    print(f"{args.experts} x {args.model} {args.model_kwargs}, combine={args.combine}")
    print(f"{'':20s} {'experts':>12s} {'trainable':>12s} {'whole model':>12s}")
    for label, c in result.items():
        print(f"{label:20s} {c['experts']:12,d} {c['experts_trainable']:12,d} {c['whole_model']:12,d}")


if __name__ == "__main__":
    main()
