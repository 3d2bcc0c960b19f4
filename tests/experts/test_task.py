import numpy as np
import torch

from tests.conftest import toy_arrays
from tomoformer.data.datamodule import SignalMapDataset
from tomoformer.data.format import open_dataset, write_dataset
from tomoformer.experts.task import RegionCrops, cluster_metrics, metrics_rows


def test_region_crops_cut_maps_and_shift_transmitters(tmp_path) -> None:
    write_dataset(tmp_path / "toy.zarr", toy_arrays(n=3), {"cell_size_m": 2.0, "rx_height_m": 1.5})
    with open_dataset(tmp_path / "toy.zarr") as source:
        base = SignalMapDataset(source)
        crops = RegionCrops(base, slice(4, 12), slice(2, 9))
        full, crop = base[1], crops[1]
    assert len(crops) == 3
    assert crop["signals"].shape == (4, 8, 7) and crop["buildings"].shape == (8, 7)
    torch.testing.assert_close(crop["signals"], full["signals"][:, 4:12, 2:9])
    torch.testing.assert_close(crop["tx_pos"], full["tx_pos"] - torch.tensor([4.0, 2.0, 0.0]))


def test_metrics_overall_and_per_cluster() -> None:
    truth = np.zeros((4, 2, 2), np.uint8)
    truth[:, 0] = 1
    probabilities = truth.astype(np.float32)
    probabilities[2:] = 1.0 - probabilities[2:]  # cluster 1 is all wrong
    scores = cluster_metrics(probabilities, truth, np.array([0, 0, 1, 1]))
    assert scores["per_cluster"][0]["iou"] == 1.0 and scores["per_cluster"][1]["iou"] == 0.0
    assert abs(scores["iou"] - 4 / 12) < 1e-9
    rows = metrics_rows(scores).splitlines()
    assert rows[0].startswith("scope,n_samples,iou") and rows[1].startswith("overall,4,")
    assert rows[2].startswith("cluster_0,2,1,") and rows[3].startswith("cluster_1,2,0,")
