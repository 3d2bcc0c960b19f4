import math

import pytest
import torch

from tomoformer.data.transforms import Augment, apply_d4, random_frame_subset, random_sparsity


def _marker_sample(H, W, T=3, batch=()):
    """Signals with one hot cell per frame at that frame's transmitter position; buildings marks frame 0's."""
    g = torch.Generator().manual_seed(H * 100 + W)
    rows = torch.randint(0, H, (T,), generator=g).float()
    cols = torch.randint(0, W, (T,), generator=g).float()
    tx = torch.stack([rows, cols, torch.arange(T).float() + 10], dim=-1)
    signals = torch.zeros(*batch, T, H, W)
    for t in range(T):
        signals[..., t, int(rows[t]), int(cols[t])] = 1.0
    signals[..., 0, (int(rows[0]) + 1) % H, :] = float("nan")  # a NaN row must travel with the grid
    buildings = torch.zeros(*batch, H, W, dtype=torch.uint8)
    buildings[..., int(rows[0]), int(cols[0])] = 1
    return signals, buildings, tx.expand(*batch, T, 3).clone()


@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (7, 4)])
@pytest.mark.parametrize("k", range(8))
def test_d4_moves_markers_where_tx_pos_says(shape, k):
    H, W = shape
    signals, buildings, tx = _marker_sample(H, W)
    s, b, p = apply_d4(signals, buildings, tx, k)
    expected = (W, H) if k % 2 else (H, W)
    assert tuple(s.shape[-2:]) == expected and tuple(b.shape) == expected
    for t in range(s.shape[0]):
        finite = torch.nan_to_num(s[t], nan=0.0)
        r, c = divmod(int(finite.argmax()), expected[1])
        assert (r, c) == (p[t, 0].item(), p[t, 1].item())
    assert torch.equal(b.nonzero()[0].float(), p[0, :2])
    assert torch.equal(p[:, 2], tx[:, 2])  # height untouched
    assert torch.isnan(s).sum() == torch.isnan(signals).sum()


def test_d4_has_eight_distinct_elements_and_batches():
    signals = torch.arange(12.0).reshape(1, 3, 4)
    images = {tuple(apply_d4(signals, k=k)[0].flatten().tolist()) for k in range(8)}
    assert len(images) == 8
    assert torch.equal(apply_d4(signals, k=1)[0], torch.rot90(signals, 1, dims=(-2, -1)))
    batch_s, batch_b, batch_p = _marker_sample(4, 6, batch=(2,))
    s, b, p = apply_d4(batch_s, batch_b, batch_p, 5)
    one = apply_d4(batch_s[1], batch_b[1], batch_p[1], 5)
    assert torch.equal(torch.nan_to_num(s[1]), torch.nan_to_num(one[0]))
    assert torch.equal(b[1], one[1]) and torch.equal(p[1], one[2])


def test_d4_nan_tx_and_errors():
    signals = torch.zeros(2, 4, 6)
    tx = torch.tensor([[float("nan")] * 3, [1.0, 2.0, 3.0]])
    _, _, p = apply_d4(signals, None, tx, 3)
    assert torch.isnan(p[0]).all() and p[1].tolist() == [2.0, 2.0, 3.0]
    # One counter-clockwise quarter turn: (r, c) -> (W - 1 - c, r).
    assert apply_d4(signals, None, tx, 1)[2][1].tolist() == [6 - 1 - 2.0, 1.0, 3.0]
    with pytest.raises(ValueError):
        apply_d4(signals, k=8)
    with pytest.raises(ValueError):
        apply_d4(signals, torch.zeros(6, 4), k=1)


def test_random_frame_subset():
    signals = torch.arange(10.0).reshape(10, 1, 1).expand(10, 2, 2)
    tx = torch.arange(10.0).reshape(10, 1).expand(10, 3)
    s, p = random_frame_subset(signals, tx, 4, torch.Generator().manual_seed(0))
    kept = s[:, 0, 0]
    assert s.shape == (4, 2, 2) and torch.equal(kept, p[:, 0])
    assert torch.all(kept[1:] > kept[:-1])  # order kept, no repeats
    s2, _ = random_frame_subset(signals, tx, 4, torch.Generator().manual_seed(0))
    assert torch.equal(s, s2)
    same, same_tx = random_frame_subset(signals, tx, 12, torch.Generator())
    assert same is signals and same_tx is tx
    assert random_frame_subset(signals, None, 3, None)[1] is None


def test_random_sparsity_fraction_and_determinism():
    signals = torch.zeros(2, 3, 10, 10)
    out = random_sparsity(signals, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(torch.isnan(out).sum(dim=(-2, -1)), torch.full((2, 3), 70))
    again = random_sparsity(signals, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(torch.isnan(out), torch.isnan(again))
    assert not torch.equal(torch.isnan(out[0, 0]), torch.isnan(out[0, 1]))  # independent per frame
    assert random_sparsity(signals, 1.0, None) is signals
    assert torch.isnan(signals).sum() == 0  # input untouched
    with pytest.raises(ValueError):
        random_sparsity(signals, 1.5, None)


def test_augment_deterministic_and_consistent():
    T, H, W = 8, 6, 9
    signals = torch.randn(T, H, W)
    buildings = torch.zeros(H, W, dtype=torch.uint8)
    buildings[1, 7] = 1  # every transmitter stands on this one building
    tx = torch.tensor([1.0, 7.0, 0.0]).repeat(T, 1)
    tx[:, 2] = torch.arange(T).float()  # heights identify the frames
    signals[:, 0, 0] = tx[:, 2]  # so does the corner cell
    sample = {"signals": signals, "buildings": buildings, "tx_pos": tx, "group": 3}

    def make():
        return Augment(frames=(2, 5), keep_fraction=(0.5, 1.0), generator=torch.Generator().manual_seed(7))

    aug, again = make(), make()
    outs = [aug(sample) for _ in range(8)]
    for a in outs:
        b = again(sample)
        assert torch.equal(torch.nan_to_num(a["signals"], 99.0), torch.nan_to_num(b["signals"], 99.0))
        assert a["group"] == 3 and 2 <= a["signals"].shape[0] <= 5
        heights = a["tx_pos"][:, 2]
        assert torch.all(heights[1:] > heights[:-1])  # frames kept in order, tx rows follow them
        cell = a["buildings"].nonzero()
        assert len(cell) == 1 and torch.equal(a["tx_pos"][:, :2], cell.float().expand(len(heights), 2))
        keep = (~torch.isnan(a["signals"])).float().mean().item()
        assert 0.45 <= keep <= 1.0
    assert len({tuple(o["signals"].shape) for o in outs}) > 1  # the draws do vary
    assert sample["signals"] is signals and not torch.isnan(signals).any()  # input untouched


def test_augment_per_call_generator_and_no_optional_keys():
    aug = Augment(d4=True)
    sample = {"signals": torch.randn(2, 4, 6)}
    a = aug(sample, generator=torch.Generator().manual_seed(3))
    b = aug(sample, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a["signals"], b["signals"]) and set(a) == {"signals"}
    with pytest.raises(ValueError):
        Augment(frames=(0, 3))
    with pytest.raises(ValueError):
        Augment(keep_fraction=(0.8, 0.2))
    assert not math.isnan(float(a["signals"].sum()))


def test_random_floor_drops_the_weakest_cells() -> None:
    from tomoformer.data.transforms import random_floor

    signals = torch.arange(40.0).reshape(2, 4, 5) - 100.0
    signals[0, 0, 0] = float("nan")
    floored = random_floor(signals, 0.25)
    kept = torch.isfinite(floored)
    assert int(kept.sum()) == 29  # the 25 % quantile of -99..-61 is -89.5: ten cells fall below it
    assert floored[kept].min() > signals[torch.isfinite(signals) & ~kept].max()  # only the weakest went
    assert random_floor(signals, 0.0) is signals
    with pytest.raises(ValueError, match="fraction"):
        random_floor(signals, 1.0)
    out = Augment(d4=False, floor_fraction=(0.5, 0.5))({"signals": signals.clone()})["signals"]
    assert int(torch.isfinite(out).sum()) == 20  # the median, -80, stays


def test_augment_keeps_non_square_grids_and_uses_every_flip() -> None:
    """On H != W only the four shape-keeping symmetries are drawn (a quarter turn would swap H and W and break
    batching); all four occur, and the markers still sit where tx_pos says."""
    signals, buildings, tx = _marker_sample(4, 7)
    augment = Augment(d4=True, generator=torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(40):
        out = augment({"signals": signals, "buildings": buildings, "tx_pos": tx})
        assert tuple(out["signals"].shape[-2:]) == (4, 7) and tuple(out["buildings"].shape) == (4, 7)
        seen.add(tuple(out["tx_pos"][0, :2].tolist()))
        r, c = (int(v) for v in out["tx_pos"][0, :2])
        assert out["buildings"][r, c] == 1
    assert len(seen) == 4  # identity, left-right mirror, up-down mirror, half turn of frame 0's transmitter


def test_augment_on_square_grids_still_draws_quarter_turns() -> None:
    signals = torch.arange(25.0).reshape(1, 5, 5)  # no symmetry: each of the 8 elements gives another grid
    augment = Augment(d4=True, generator=torch.Generator().manual_seed(0))
    grids = {tuple(augment({"signals": signals})["signals"].flatten().tolist()) for _ in range(80)}
    assert len(grids) == 8


def test_crop_keeps_transmitters_on_their_cells_and_leaves_small_maps_alone():
    signals, buildings, tx = _marker_sample(12, 9, T=4)
    augment = Augment(d4=False, crop=5, generator=torch.Generator().manual_seed(3))
    seen = set()
    for _ in range(20):
        out = augment({"signals": signals, "buildings": buildings, "tx_pos": tx})
        assert out["signals"].shape == (4, 5, 5) and out["buildings"].shape == (5, 5)
        shift = tx[:, :2] - out["tx_pos"][:, :2]  # one window offset for every frame
        assert torch.equal(shift, shift[:1].expand_as(shift)) and torch.equal(out["tx_pos"][:, 2], tx[:, 2])
        top, left = (int(v) for v in shift[0])
        assert torch.equal(out["buildings"], buildings[top : top + 5, left : left + 5])
        seen.add((top, left))
    assert len(seen) > 5  # windows move
    small = Augment(d4=False, crop=32)({"signals": signals, "buildings": buildings, "tx_pos": tx})
    assert torch.equal(small["tx_pos"], tx) and small["signals"].shape == signals.shape
    with pytest.raises(ValueError, match="crop"):
        Augment(crop=0)
