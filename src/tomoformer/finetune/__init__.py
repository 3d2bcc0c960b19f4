"""Fine-tuning a pretrained checkpoint: policies (which parameters train, at which rate) and the runner."""

from tomoformer.finetune.policies import (
    POLICY_HELP,
    Policy,
    apply_policy,
    count_parameters,
    layer_decay_groups,
    layer_groups,
    merge_lora,
    parse_policy,
)

__all__ = [
    "POLICY_HELP",
    "Policy",
    "apply_policy",
    "count_parameters",
    "layer_decay_groups",
    "layer_groups",
    "merge_lora",
    "parse_policy",
]
