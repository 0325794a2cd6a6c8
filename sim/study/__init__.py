"""What-if studies: sweeps over spec fields, workload parameters, dtypes, options and parallel
layouts (``sweep``), a results store that survives interruption (``Store``), executors (local
process pool, Dask, Ray), plots of the results, and a layout search.

>>> from sim.study import expand
>>> len(expand({"batch": [1, 8, 32], "dtype": ["bf16", "fp8"]}))
6
"""

from __future__ import annotations

from sim.study.axes import expand, parse_grid
from sim.study.store import Store, read_results
from sim.study.sweep import plan, sweep

__all__ = ["Store", "expand", "parse_grid", "plan", "read_results", "sweep"]
