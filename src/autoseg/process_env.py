"""Settings of the process that must be made before NumPy, scikit-learn or XGBoost load.

Importing this module applies the settings; the two entry points (the CLI and the Digdag
``py>`` task) import it first. It imports nothing heavy itself. Each setting is a default: one
set by the user wins.

* ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep instead of spinning. Measured on a
  2-core host with another process busy: 8 k-means fits took 5.3-10.7 s with spinning threads
  and 2.4-3.9 s with passive ones (a CPU-limited container is this case).
* ``NUMPY_MADVISE_HUGEPAGE=0``: NumPy asks the kernel for transparent huge pages for every
  large array; where the kernel's THP ``defrag`` setting is ``madvise`` (the default of many
  distributions, and this project's CI machines), each such page fault may compact memory
  first, which stalls as soon as the input has fragmented it. Measured with
  ``benchmarks/whole_run.py``'s tables on the 2-core CI kind: the 10M-row run 17.2 s -> 12.4 s
  (feature preparation 3.2 -> 1.4 s, the all-rows refit 4.4 -> 2.0 s), 1M rows 5.1-5.2 ->
  4.6-5.0 s, 50,000 rows 6.3 -> 6.0 s (benchmarks/RESULTS.md, speed).
"""

from __future__ import annotations

import os

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "NUMPY_MADVISE_HUGEPAGE": "0"}


def tune_process_environment() -> None:
    """Set :data:`DEFAULTS` where the environment does not set them already."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


tune_process_environment()
