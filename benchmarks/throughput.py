"""Training / inference throughput, TFLOP/s, peak memory and data-path stalls: ``tomoformer bench``.

python benchmarks/throughput.py                      # CUDA: 5 models x T=64/256/1000, 100x100; CPU: a small grid
python benchmarks/throughput.py --models tomoformer_small,unet --frames 1000 --batch-size 32 --out runs/tp.json
python benchmarks/throughput.py --models tomoformer_small --frames 1000 --data sim --data-on-device

Every flag of ``tomoformer bench --help`` works here; this script only forwards them.
"""

from __future__ import annotations

import sys

from tomoformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
