"""Fine-tuning policies: which parameters of a pretrained model train, and at which learning rate.

A policy is parsed from a short string (``--policy`` on the command line):

* ``full``: everything trains.
* ``head``: linear probe; only ``model.get_classifier()`` trains.
* ``freeze:K``: the stem and the first K layer groups after it are frozen (see
  :func:`tomoformer.models.adapt.layer_groups`).
* ``llrd:G``: everything trains; group i of n (stem = 0, head = n-1) gets lr x G**(n-1-i).
* ``lora:R``: LoRA adapters of rank R (``peft``) on the attention and MLP projections; only the adapters and the
  head train. :func:`tomoformer.models.adapt.merge_lora` folds them back into the plain registry model.
* ``lp-ft`` or ``lp-ft:F``: linear probe for the first fraction F (default 0.5) of the optimisation steps, then
  full fine-tuning (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features").

The model-level primitives (freezing, layer groups, LoRA injection and merging, LLRD groups) are in
:mod:`tomoformer.models.adapt`; this module is the grammar on top of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tomoformer.errors import ConfigError
from tomoformer.models.adapt import freeze_all_but_head, freeze_parameters, inject_lora, layer_groups
from tomoformer.tasks.options import POLICY_HELP  # spelled once, in tasks/options.py

__all__ = ["POLICY_HELP", "Policy", "apply_policy", "parse_policy", "require_kind"]


@dataclass(frozen=True)
class Policy:
    """A parsed policy: ``kind`` in {full, head, freeze, llrd, lora, lp-ft} and its numeric ``value`` (or None)."""

    kind: str
    value: float | int | None = None

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value}"

    @property
    def phased(self) -> bool:
        """Whether the trainable set changes during the run (``lp-ft``: the probe phase, then everything)."""
        return self.kind == "lp-ft"


def parse_policy(text: str) -> Policy:
    """``"lora:8"`` → ``Policy("lora", 8)``; a bad string raises ConfigError with one line."""
    kind, sep, raw = str(text).strip().partition(":")
    kind = kind.lower()

    def bad(why: str) -> ConfigError:
        return ConfigError(f"bad fine-tuning policy {text!r}: {why} (expected {POLICY_HELP})")

    if kind in ("full", "head"):
        if sep:
            raise bad(f"{kind!r} takes no value")
        return Policy(kind)
    if kind == "lp-ft" and not sep:
        return Policy(kind, 0.5)
    if kind not in ("freeze", "llrd", "lora", "lp-ft"):
        raise bad("unknown kind")
    if not raw:
        raise bad(f"{kind!r} needs a value")
    try:
        value = int(raw) if kind in ("freeze", "lora") else float(raw)
    except ValueError:
        raise bad(f"{raw!r} is not a{'n integer' if kind in ('freeze', 'lora') else ' number'}") from None
    if kind == "freeze" and value < 0:
        raise bad("K must be >= 0")
    if kind == "lora" and value < 1:
        raise bad("rank R must be >= 1")
    if kind == "llrd" and not 0 < value <= 1:
        raise bad("decay G must lie in (0, 1]")
    if kind == "lp-ft" and not 0 < value < 1:
        raise bad("probe fraction F must lie in (0, 1)")
    return Policy(kind, value)


def apply_policy(model: nn.Module, policy: Policy | str) -> nn.Module:
    """Freeze / adapt ``model`` in place as ``policy`` says (LoRA wraps layers); returns ``model``.

    ``llrd`` changes no parameters here (see :func:`layer_decay_groups`); ``lp-ft`` starts in its probe phase.
    """
    policy = parse_policy(policy) if isinstance(policy, str) else policy
    if policy.kind in ("head", "lp-ft"):
        freeze_all_but_head(model)
    elif policy.kind == "freeze":
        groups = layer_groups(model)
        k = int(policy.value or 0)
        if k > len(groups) - 2:
            raise ConfigError(f"freeze:{k}: model {type(model).__name__} has only {len(groups) - 2} blocks")
        freeze_parameters(model, {name for group in groups[: k + 1] for name in group})
    elif policy.kind == "lora":
        inject_lora(model, int(policy.value or 1))
    elif policy.kind == "llrd":
        layer_groups(model)  # fail early for a model without layer groups
    return model


def require_kind(text: str, kinds: tuple[str, ...], what: str, why: str = "") -> Policy:
    """Parse ``text`` and refuse, with one line naming ``what`` (an option), a policy whose kind is not in
    ``kinds``; for options that admit only some policies (an experts run's ``global_policy``, say)."""
    policy = parse_policy(text)
    if policy.kind not in kinds:
        allowed = ", ".join(f"{k}:K" if k == "freeze" else f"{k}:R" if k == "lora" else k for k in kinds)
        raise ConfigError(f"{what} must be {allowed}{why}, got {text!r}")
    return policy
