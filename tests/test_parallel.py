"""Independent tasks side by side on the CPU's cores, each with single-threaded BLAS/OpenMP."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from autoseg import parallel
from autoseg.parallel import cpu_cores, map_on_cores


def test_results_come_back_in_the_order_of_the_items() -> None:
    assert map_on_cores(lambda i: i * i, range(10)) == [i * i for i in range(10)]
    assert map_on_cores(lambda i: i, []) == []


def test_tasks_run_on_threads_with_one_blas_thread_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "cpu_cores", lambda: 2)
    before = {info["user_api"]: info["num_threads"] for info in threadpool_info()}

    def task(_: int) -> tuple[str, dict[str, int]]:
        np.ones((64, 64)) @ np.ones((64, 64))
        return threading.current_thread().name, {
            info["user_api"]: info["num_threads"] for info in threadpool_info()}

    results = map_on_cores(task, range(4))
    assert all(name != threading.main_thread().name for name, _ in results)
    assert all(set(limits.values()) == {1} for _, limits in results)
    # the limits end with the tasks
    assert {info["user_api"]: info["num_threads"] for info in threadpool_info()} == before


def test_one_core_runs_the_items_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "cpu_cores", lambda: 1)
    names = map_on_cores(lambda _: threading.current_thread().name, range(3))
    assert names == [threading.main_thread().name] * 3


def test_cpu_cores_is_the_affinity_mask() -> None:
    assert cpu_cores() >= 1
    if hasattr(os, "sched_getaffinity"):
        assert cpu_cores() == len(os.sched_getaffinity(0))
