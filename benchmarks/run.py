"""Run the mlx-caption benchmark suite (the same as ``mlx-caption bench``).

python benchmarks/run.py              # full run, results in benchmarks/results/
python benchmarks/run.py --quick      # about 3 minutes on 2 cores
python benchmarks/run.py --json --profile --out /tmp/bench
"""

import sys

import mlx_caption  # noqa: F401  (loads the optimized BLAS before mlx.core)
from mlx_caption.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
