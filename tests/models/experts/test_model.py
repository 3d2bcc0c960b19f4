import copy

import numpy as np
import pytest
import torch

from tomoformer.checkpoint import load_checkpoint, save_checkpoint
from tomoformer.errors import ConfigError
from tomoformer.experts.clustering import fit_clusters
from tomoformer.models.experts.model import COMBINES, ExpertsModel, region_boxes
from tomoformer.models.registry import create_model
from tomoformer.tasks.policy import apply_policy

UNET = {"model": "unet", "model_kwargs": {"base_channels": 4, "depth": 1}}
GRU = {"model": "convgru", "model_kwargs": {"hidden_channels": 4, "decoder_channels": 4}}
TF = {
    "model": "tomoformer_tiny",
    "model_kwargs": dict(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_heads=2, patch_size=4),
}


def _batch(B: int = 6, T: int = 4, H: int = 16, W: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    signals = torch.randn(B, T, H, W, generator=gen) * 10 - 70
    signals[: B // 2] += torch.randn(B // 2, T, H, W, generator=gen) * 15  # two kinds of sample
    return signals, torch.rand(B, T, 3, generator=gen) * H


def _fitted(**kwargs) -> ExpertsModel:
    """A model whose router was fitted on a batch (k-means, k=2)."""
    torch.manual_seed(0)
    model = create_model("experts", experts=[UNET, GRU], **kwargs)
    signals, tx = _batch(B=12, seed=1)
    fit = fit_clusters(model.features.raw(signals, tx).numpy(), "kmeans", k=2)
    model.features.set_scaler(fit.mean, fit.scale)
    model.router.load_fit(fit)
    return model.eval()


@pytest.mark.parametrize("combine", COMBINES)
def test_every_combination_any_size(combine: str) -> None:
    model = _fitted(combine=combine, film=True, aux=True)
    signals, tx = _batch(H=17, W=13)
    signals[0, 1] = float("nan")
    out = model.forward_all(signals, tx)
    assert out["logits"].shape == (6, 17, 13) and torch.isfinite(out["logits"]).all()
    assert out["aux_member"].shape == (6, 2) and out["aux_offset"].shape == out["z"].shape
    assert model(signals[:1, :1]).shape == (1, 17, 13)  # B=1, T=1, no positions
    loss = out["logits"].mean() + model.aux_loss(out)
    loss.backward()
    assert all(e.get_classifier().weight.grad is not None for e in model.experts)


def test_hard_routing_runs_only_the_assigned_expert() -> None:
    model = _fitted(combine="hard")
    signals, tx = _batch()
    out = model.forward_all(signals, tx)
    assert len(set(out["assign"].tolist())) == 2  # the batch spans both clusters
    for k, expert in enumerate(model.experts):
        sel = out["assign"] == k
        torch.testing.assert_close(out["logits"][sel], expert(signals[sel], tx[sel]))


def test_zero_initialised_options_start_as_the_soft_average() -> None:
    signals, tx = _batch()
    soft = _fitted(combine="soft")
    member = soft.route(signals, tx)[1].exp()
    expected = sum(member[:, k, None, None] * e(signals, tx) for k, e in enumerate(soft.experts))
    torch.testing.assert_close(soft(signals, tx), expected)
    for options in ({"combine": "gate"}, {"combine": "fusion"}, {"combine": "soft", "film": True}):
        torch.testing.assert_close(_fitted(**options)(signals, tx), expected, msg=str(options))


def test_film_conditions_on_the_offset() -> None:
    model = _fitted(combine="hard", film=True)
    signals, tx = _batch()
    before = model(signals, tx)
    for film in model.film:
        torch.nn.init.normal_(film.weight, std=0.5)
    assert not torch.allclose(model(signals, tx), before)
    twin = copy.deepcopy(model)  # hooks are module-level functions: a copy runs on its own weights
    torch.testing.assert_close(twin(signals, tx), model(signals, tx))


def test_region_experts_stitch_their_cores() -> None:
    torch.manual_seed(0)
    model = create_model("experts", experts=[UNET, GRU, UNET, TF], partition="region", regions=[2, 2], halo=2).eval()
    signals, tx = _batch(H=15, W=18)
    out = model(signals, tx)
    assert out.shape == (6, 15, 18)
    boxes = region_boxes(15, 18, (2, 2), 2)
    (rows, cols), (core_r, core_c), (full_r, full_c) = boxes[3]
    shifted = tx - torch.tensor([rows.start, cols.start, 0.0])
    crop = model.experts[3](signals[..., rows, cols], shifted)
    torch.testing.assert_close(out[:, full_r, full_c], crop[:, core_r, core_c])
    cover = np.zeros((15, 18), int)
    for box in boxes:
        cover[box[2]] += 1
    assert (cover == 1).all()
    assert model(signals[..., :1, :1]).shape == (6, 1, 1)  # maps smaller than the grid


def test_checkpoint_round_trip(tmp_path) -> None:
    model = _fitted(combine="attention", aux=True)
    spec = {"experts": [UNET, GRU], "combine": "attention", "aux": True}
    path = save_checkpoint(tmp_path / "m.ckpt", model, {"model": "experts", "model_kwargs": spec})
    loaded = load_checkpoint(path, expect_model="experts")
    signals, tx = _batch()
    torch.testing.assert_close(loaded.model(signals, tx), model(signals, tx))


def test_bad_options() -> None:
    with pytest.raises(ConfigError):
        create_model("experts", combine="vote")
    with pytest.raises(ConfigError):
        create_model("experts", experts=[UNET], num_clusters=2)
    with pytest.raises(ConfigError):
        create_model("experts", experts=[UNET, UNET], partition="region", regions=[2, 2])
    with pytest.raises(ConfigError, match="Conv2d head"):
        create_model("experts", experts=[{"model": "threshold"}] * 2, film=True)


@pytest.mark.parametrize(("clusterer", "combine"), [("kmeans", "hard"), ("dbscan", "soft"), ("gmm", "attention")])
def test_exports_to_onnx_with_every_router(tmp_path, clusterer: str, combine: str) -> None:
    # Hard routing runs every expert on the whole batch while exporting (no data-dependent sub-batches);
    # the convgru expert exports its frame loop as a scan, so B and T stay dynamic.
    pytest.importorskip("onnxruntime")
    from tomoformer.export import OnnxPredictor, export_model

    torch.manual_seed(0)
    probe = create_model("experts", experts=[UNET, GRU])
    signals, tx = _batch(B=24, seed=1)
    fit = fit_clusters(probe.features.raw(signals, tx).numpy(), clusterer, k=2, min_samples=3)
    spec = {
        # One router exports the convgru scan; the others use unet experts only, which export several times faster.
        "experts": [UNET, GRU] if fit.k == 2 and clusterer == "kmeans" else [UNET] * fit.k,
        "combine": combine,
        "clusterer": clusterer,
        "num_clusters": fit.k,
        "num_points": len(fit.points),
    }
    model = create_model("experts", **spec).eval()
    model.features.set_scaler(fit.mean, fit.scale)
    model.router.load_fit(fit)
    path = save_checkpoint(tmp_path / "e.ckpt", model, {"model": "experts", "model_kwargs": spec})
    predictor = OnnxPredictor(export_model(path, "onnx", tmp_path / "e.onnx", height=16, width=16, optimize=False))
    signals, tx = _batch(B=5, T=6, seed=3)
    tx[0, 1] = float("nan")
    with torch.no_grad():
        expected = model.forward_all(signals, tx)
    assert combine != "hard" or len(set(expected["assign"].tolist())) > 1  # both experts are exercised
    got = predictor(signals.numpy(), tx.numpy())
    np.testing.assert_allclose(got, expected["logits"].numpy(), atol=1e-4, rtol=1e-4)


def test_shared_lora_experts_hold_one_backbone(tmp_path) -> None:
    torch.manual_seed(0)
    spec = {"experts": [TF] * 2, "num_clusters": 2, "shared_lora": 2, "combine": "hard", "film": True}
    model = create_model("experts", **spec)
    separate = create_model("experts", **{**spec, "shared_lora": 0})
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) < 0.6 * count(separate)  # one backbone plus small adapters instead of two backbones
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".head." in n or not n.startswith("backbone.") for n in trainable)
    signals, tx = _batch(B=12, seed=1)
    fit = fit_clusters(model.features.raw(signals, tx).numpy(), "kmeans", k=2)
    model.features.set_scaler(fit.mean, fit.scale)
    model.router.load_fit(fit)
    with torch.no_grad():  # give the adapters distinct weights: the experts must then differ
        for k in range(2):
            for param in model.backbone.adapter_parameters(k):
                param.normal_(0, 0.2, generator=torch.Generator().manual_seed(k))
    model.eval().requires_grad_(False)
    a, b = model.experts[0](signals, tx), model.experts[1](signals, tx)
    assert (a - b).abs().max() > 1e-3
    out = model.forward_all(signals, tx)
    for k, expert in enumerate(model.experts):
        sel = out["assign"] == k
        if sel.any():
            torch.testing.assert_close(out["logits"][sel], expert(signals[sel], tx[sel]))
    path = save_checkpoint(tmp_path / "m.ckpt", model, {"model": "experts", "model_kwargs": spec})
    loaded = load_checkpoint(path, expect_model="experts").model
    torch.testing.assert_close(loaded(signals, tx), out["logits"])
    with pytest.raises(ConfigError, match="already carries LoRA"):
        apply_policy(copy.deepcopy(model), "lora:2")
    pytest.importorskip("onnxruntime")
    from tomoformer.export import OnnxPredictor, export_model

    predictor = OnnxPredictor(export_model(path, "onnx", tmp_path / "m.onnx", height=16, width=16, optimize=False))
    np.testing.assert_allclose(predictor(signals.numpy(), tx.numpy()), out["logits"].numpy(), atol=1e-4, rtol=1e-4)
