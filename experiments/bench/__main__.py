"""``python -m experiments.bench``: the grid of micro-benchmarks (``experiments.bench.grid``)."""
import sys

from .grid import main

sys.exit(main())
