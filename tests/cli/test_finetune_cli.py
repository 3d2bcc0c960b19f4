"""`tomoformer finetune`: a tiny pretrained model fine-tuned with LoRA and with frozen blocks, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tomoformer.checkpoint import load_checkpoint
from tomoformer.cli import main
from tomoformer.models.adapt import count_parameters
from tomoformer.models.registry import create_model
from tomoformer.tasks.policy import apply_policy

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}
COMMON = ["--max-epochs", "1", "--batch-size", "4", "--accelerator", "cpu", "--no-progress"]


@pytest.fixture
def pretrained(toy_dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "pre"
    args = ["train", "--data", str(toy_dataset), "--out", str(out), "--model", "tomoformer_tiny", *COMMON]
    args += [arg for key, value in TINY.items() for arg in ("--model-opt", f"{key}={value}")]
    assert main(args) == 0
    return out / "checkpoints" / "best.ckpt"


def test_finetune_lora_and_freeze(
    pretrained: Path, toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = load_checkpoint(pretrained).model.state_dict()
    capsys.readouterr()
    for policy in ("lora:4", "freeze:1"):
        out = tmp_path / policy.replace(":", "-")
        args = ["finetune", "--from", str(pretrained), "--policy", policy, "--data", str(toy_dataset)]
        assert main([*args, "--out", str(out), *COMMON, "--lr", "1e-2"]) == 0
        printed = capsys.readouterr().out
        trainable, total = count_parameters(apply_policy(create_model("tomoformer_tiny", **TINY), policy))
        assert f"{trainable:,} trainable of {total:,} parameters" in printed
        assert 0 < trainable < total
        recorded = yaml.safe_load((out / "config.yaml").read_text())
        assert recorded["finetune"] == {"from": str(pretrained), "policy": policy}
        assert recorded["model"] == "tomoformer_tiny" and TINY.items() <= recorded["model_kwargs"].items()
        for name in ("best.ckpt", "last.ckpt"):
            loaded = load_checkpoint(out / "checkpoints" / name)
            assert loaded.name == "tomoformer_tiny" and loaded.hparams["policy"] == policy
            state = loaded.model.state_dict()
            assert state.keys() == base.keys()
            assert loaded.model(torch.randn(1, 3, 16, 16) - 80).shape == (1, 16, 16)
        frozen = [k for k in base if k.startswith(("patch_embed.", "blocks.0."))]
        changed = [k for k in base if not torch.equal(base[k], state[k])]
        if policy == "freeze:1":
            assert changed and not set(frozen) & set(changed)
        else:  # merged LoRA updates move the adapted projections, not the norms
            assert "blocks.0.attn.qkv.weight" in changed and "blocks.0.norm1.weight" not in changed


def test_finetune_bad_policy_is_one_line_error(
    pretrained: Path, toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    args = ["finetune", "--from", str(pretrained), "--policy", "lora:x", "--data", str(toy_dataset)]
    assert main([*args, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lora:x" in err[0]
    assert not (tmp_path / "bad").exists()


def test_finetune_takes_its_checkpoint_and_policy_from_yaml(
    pretrained: Path, toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({"init": str(pretrained), "policy": "freeze:1", "data": str(toy_dataset)}))
    out = tmp_path / "yaml_run"
    capsys.readouterr()
    assert main(["finetune", "--config", str(config), "--out", str(out), *COMMON]) == 0
    trainable, total = count_parameters(apply_policy(create_model("tomoformer_tiny", **TINY), "freeze:1"))
    assert f"{trainable:,} trainable of {total:,} parameters" in capsys.readouterr().out
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["policy"] == "freeze:1" and recorded["init"] == str(pretrained)
    assert load_checkpoint(out / "checkpoints" / "best.ckpt").hparams["policy"] == "freeze:1"
    # The policy is part of the run record: resuming under another one is refused, the run left alone.
    assert main(["finetune", "--config", str(config), "--out", str(out), *COMMON, "--policy", "head", "--resume"]) == 2
    assert "policy" in capsys.readouterr().err


def test_finetune_without_a_checkpoint_is_one_line_error(
    toy_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["finetune", "--data", str(toy_dataset), "--out", str(tmp_path / "none"), *COMMON]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--from" in err[0]
    assert not (tmp_path / "none").exists()
