"""Regenerate the README's pictures: ``python docs/make_figures.py`` (CPU, a few seconds)."""

from __future__ import annotations

from pathlib import Path

from tomoformer.evaluation.figures import city_figure, save_figure
from tomoformer.sim.config import SimConfig
from tomoformer.sim.simulate import simulate_samples

HERE = Path(__file__).parent


def main() -> None:
    config = SimConfig(size=100, frames=8, style="dense")
    sample = simulate_samples(config, seed=4, start=0, count=1)
    figure = city_figure(sample["heights"][0], sample["signals"][0], sample["tx_pos"][0], n_frames=3)
    save_figure(figure, HERE / "city.png")
    print(f"wrote {HERE / 'city.png'}")


if __name__ == "__main__":
    main()
