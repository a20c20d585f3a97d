"""Both cores for independent work on the CPU.

The machines this runs on often have few cores, and several stages are a handful of
independent tasks (the k-means fits of every candidate k, blocks of silhouette points, one rule
per cluster) whose libraries use the cores poorly one task at a time: scikit-learn's k-means
on a 20,000-50,000-row sample, NumPy's single-threaded element-wise passes. Running the tasks
side by side, each with single-threaded BLAS and OpenMP, keeps every core busy (measured in
benchmarks/RESULTS.md, speed: the fits of k = 2..9 at 50,000 x 30 in 1.0 s instead of 1.55 s,
the same labels, centroids within 4e-6).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def cpu_cores() -> int:
    """CPU cores this process may use: its affinity mask, so a CPU-limited container or
    ``taskset`` is respected (``os.cpu_count()`` where the platform has no mask)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def map_on_cores(function: Callable[[Item], Result], items: Iterable[Item], *,
                 in_turn: bool = False) -> list[Result]:
    """``[function(item) for item in items]``, the items side by side on the process's cores.

    Each task runs with single-threaded BLAS and OpenMP (``threadpoolctl``), so the tasks do
    not oversubscribe the cores; results come back in the order of ``items``. With one core,
    or one item, or with ``in_turn`` (work for a GPU, which runs one task at a time), the
    items simply run in turn. The BLAS limit is process-wide while the tasks
    run, so nothing else should compute meanwhile.
    """
    items = list(items)
    workers = 1 if in_turn else min(cpu_cores(), len(items))
    if workers < 2:
        return [function(item) for item in items]
    from threadpoolctl import threadpool_limits

    def one_openmp_thread() -> None:
        # OpenMP's thread count is per thread (a new thread starts from the process default),
        # so it is limited in each worker thread as it starts, and the limit ends with the
        # pool's threads; BLAS's is process-wide, limited below. Once per thread, not per
        # item: threadpoolctl inspects every loaded library each time (about 2 ms with
        # scikit-learn loaded, which made 600 small blocks cost 1.2 s more).
        threadpool_limits(limits=1, user_api="openmp")

    with (threadpool_limits(limits=1, user_api="blas"),
          ThreadPoolExecutor(max_workers=workers, initializer=one_openmp_thread) as pool):
        return list(pool.map(function, items))
