"""The fit pipeline in-process: region experts started from a pretrained checkpoint under a policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import toy_arrays
from tomoformer.checkpoint import load_checkpoint, save_checkpoint
from tomoformer.data.format import write_dataset
from tomoformer.errors import ConfigError
from tomoformer.experts.config import ExpertsConfig
from tomoformer.experts.fit import run_experts_fit
from tomoformer.models.registry import create_model

UNET = {"base_channels": 4, "depth": 1}
# Options every fit in this file shares: tiny batches, a quarter of the samples validating, CPU, quiet.
TINY_RUN = {"batch_size": 4, "val_fraction": 0.25, "accelerator": "cpu", "progress": False}


def toy_data_and_pretrained_unet(folder: Path) -> torch.nn.Module:
    """Writes folder/toy.zarr (12 samples) and folder/pre.ckpt (a seeded tiny unet); returns the unet."""
    write_dataset(folder / "toy.zarr", toy_arrays(n=12), {"cell_size_m": 2.0})
    torch.manual_seed(0)
    pretrained = create_model("unet", **UNET)
    save_checkpoint(folder / "pre.ckpt", pretrained, {"model": "unet", "model_kwargs": UNET})
    return pretrained


def test_region_experts_from_pretrained_with_head_policy(tmp_path: Path) -> None:
    pretrained = toy_data_and_pretrained_unet(tmp_path)
    config = ExpertsConfig(
        data=str(tmp_path / "toy.zarr"),
        out=str(tmp_path / "run"),
        clusterer="gmm",
        k=2,
        partition="region",
        regions=[1, 2],
        halo=2,
        expert_models=[{"model": "init"}],
        init_checkpoint=str(tmp_path / "pre.ckpt"),
        policy="head",
        epochs=1,
        lr=1e-2,
        **TINY_RUN,
    )
    result = run_experts_fit(config)
    model = load_checkpoint(result.model_path, expect_model="experts").model
    assert len(model.experts) == 2 and model.partition == "region"
    for i, expert in enumerate(model.experts):
        assert json.loads((tmp_path / "run" / "experts" / str(i) / "done.json").read_text())["n_train"] == 9
        new, old = expert.state_dict(), pretrained.state_dict()
        # The head policy trained the head only: every other weight is the pretrained one.
        assert not torch.equal(new["head.weight"], old["head.weight"])
        for key in (k for k in old if not k.startswith("head.")):
            torch.testing.assert_close(new[key], old[key], msg=key)
    assert set(result.metrics) >= {"iou", "per_cluster"} and (tmp_path / "run" / "metrics.csv").exists()


def test_encoder_features_with_dbscan(tmp_path: Path) -> None:
    write_dataset(tmp_path / "toy.zarr", toy_arrays(n=12), {"cell_size_m": 2.0})
    torch.manual_seed(0)
    tiny = dict(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_heads=2, patch_size=4)
    encoder = create_model("tomoformer_tiny", **tiny)
    save_checkpoint(tmp_path / "enc.ckpt", encoder, {"model": "tomoformer_tiny", "model_kwargs": tiny})
    config = ExpertsConfig(
        data=str(tmp_path / "toy.zarr"),
        out=str(tmp_path / "run"),
        features="encoder",
        encoder_checkpoint=str(tmp_path / "enc.ckpt"),
        clusterer="dbscan",
        dbscan_min_samples=3,
        expert_models=[{"model": "unet", "model_kwargs": UNET}],
        combine="hard",
        epochs=1,
        **TINY_RUN,
    )
    model = load_checkpoint(run_experts_fit(config).model_path).model
    assert model.features.kind == "encoder" and model.features.num_features == 16
    # The frozen encoder inside the model is the checkpoint's, so routing at inference uses the same embedding.
    torch.testing.assert_close(model.features.encoder.model.state_dict(), encoder.state_dict())
    assert len(model.experts) == model.num_clusters >= 1


def test_config_refuses_bad_options() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        ExpertsConfig.from_dict({"clusters": 3})
    for bad in ({"combine": "vote"}, {"features": "encoder"}, {"expert_models": [{"model": "init"}]}):
        with pytest.raises(ConfigError):
            ExpertsConfig.from_dict(bad)
    with pytest.raises(ConfigError):
        ExpertsConfig.from_dict({"global_policy": "lora:4"})
    assert ExpertsConfig.from_dict({"augment": {"d4": False}}).augment.d4 is False


def test_lora_experts_share_one_backbone(tmp_path: Path) -> None:
    pretrained = toy_data_and_pretrained_unet(tmp_path)
    config = ExpertsConfig(
        data=str(tmp_path / "toy.zarr"),
        out=str(tmp_path / "run"),
        k=2,
        expert_models=[{"model": "init"}],
        init_checkpoint=str(tmp_path / "pre.ckpt"),
        policy="lora:2",
        share_backbone=True,
        combine="soft",
        epochs=2,
        global_epochs=1,
        global_policy="head",
        lr=1e-2,
        **TINY_RUN,
    )
    result = run_experts_fit(config)
    model = load_checkpoint(result.model_path, expect_model="experts").model
    assert model.backbone is not None and len(model.experts) == 2
    # One copy of the pretrained weights, untouched by either stage.
    base = {k.replace(".base_layer.", "."): v for k, v in model.backbone.model.state_dict().items() if "lora_" not in k}
    for key, value in pretrained.state_dict().items():
        if not key.startswith("head."):
            torch.testing.assert_close(base[key], value, msg=key)
    assert not any(k.startswith("experts.0.") and "lora_" in k for k in model.state_dict())
    # Before the global stage each expert is exactly its own LoRA run: its merged checkpoint gives the same maps;
    # the global stage (policy head) then moved the heads only.
    stage1 = load_checkpoint(tmp_path / "run" / "stage1.ckpt").model
    adapters = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert adapters and all(torch.equal(v, stage1.state_dict()[k]) for k, v in adapters.items())
    assert not torch.equal(model.experts[0].head.weight, stage1.experts[0].head.weight)
    signals = torch.randn(3, 4, 16, 16) * 10 - 70
    for i, expert in enumerate(stage1.experts):
        done = json.loads((tmp_path / "run" / "experts" / str(i) / "done.json").read_text())
        run = load_checkpoint(tmp_path / "run" / "experts" / str(i) / done["checkpoint"]).model
        torch.testing.assert_close(expert(signals), run(signals), atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < 2 * sum(p.numel() for p in pretrained.parameters())


def test_share_backbone_needs_lora_and_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lora"):
        ExpertsConfig(share_backbone=True, policy="full", init_checkpoint="x.ckpt", expert_models=[{"model": "init"}])
    with pytest.raises(ConfigError, match="init"):
        ExpertsConfig(share_backbone=True, policy="lora:4", init_checkpoint="x.ckpt")


def test_fit_honours_num_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``num_workers`` reaches every training and validation loader of the fit (the shared datamodule path and
    each expert's subset loaders); the loaders are then built in-process here to keep the test light."""
    import tomoformer.data.datamodule as datamodule

    write_dataset(tmp_path / "toy.zarr", toy_arrays(n=12), {"cell_size_m": 2.0})
    asked: list[int] = []
    original = datamodule.make_loader

    def spy(dataset, batch_size=1, num_workers=0, sampler=None, batch_sampler=None):  # type: ignore[no-untyped-def]
        asked.append(num_workers)
        return original(dataset, batch_size, 0, sampler, batch_sampler)

    monkeypatch.setattr(datamodule, "make_loader", spy)
    config = ExpertsConfig(
        data=str(tmp_path / "toy.zarr"),
        out=str(tmp_path / "run"),
        k=2,
        expert_models=[{"model": "unet", "model_kwargs": UNET}],
        epochs=1,
        global_epochs=1,
        num_workers=3,
        **TINY_RUN,
    )
    run_experts_fit(config)
    # Two experts and the global stage, each with a training and a validation loader, all with 3 workers.
    assert len(asked) >= 6 and set(asked) == {3}


@pytest.mark.parametrize(("values", "named"), [({"k": 0}, "k"), ({"k_max": 1}, "k_max"), ({"epochs": 0}, "epochs")])
def test_range_checks_name_the_option(values: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=f"option {named} is"):
        ExpertsConfig.from_dict(values)
