"""The Dask client of a run: a local cluster started for it, or an existing scheduler."""

from __future__ import annotations

import logging
from typing import Any

from distributed import Client

from autoseg.errors import UsageError

log = logging.getLogger(__name__)

def workers(client: Client) -> dict[str, Any]:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address"),
        "n_workers": len(workers),
        "threads": int(sum(w.get("nthreads", 0) for w in workers.values())),
        "memory_limit_bytes": int(sum(w.get("memory_limit", 0) or 0
                                      for w in workers.values())),
    }


def client_from_options(scheduler: str | None, local: bool,
                        n_workers: int | None = None) -> Client | None:
    """A Dask client for ``--dask-scheduler ADDRESS`` or ``--dask local``; ``None`` for neither.

    Parameters
    ----------
    scheduler
        Address of a running scheduler (``tcp://host:8786``); connects to that cluster.
    local
        Start a cluster on this machine: ``LocalCUDACluster`` (one worker per GPU) when
        ``dask_cuda`` is importable and sees GPUs, else ``LocalCluster``.
    n_workers
        Workers of the local cluster (default: Dask's choice from the CPU count).

    Returns
    -------
    distributed.Client or None
        The caller closes it (and its local cluster) with ``client.close()`` /
        ``client.cluster.close()``, or uses it as a context manager.

    Raises
    ------
    UsageError
        Both options given, or the scheduler cannot be reached.
    """
    if scheduler and local:
        raise UsageError("--dask-scheduler and --dask local exclude each other: give one")
    if scheduler:
        try:
            return Client(scheduler, timeout="30s")
        except OSError as exc:
            raise UsageError(f"--dask-scheduler={scheduler!r} cannot be reached ({exc}): check "
                             "the address and that the scheduler is running") from exc
    if not local:
        return None
    cluster = _local_cuda_cluster(n_workers)
    if cluster is None:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=n_workers)
    return Client(cluster)


def _local_cuda_cluster(n_workers: int | None) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
        from dask_cuda.utils import get_n_gpus
    except Exception:
        return None
    try:
        if get_n_gpus() < 1:
            return None
    except Exception:  # no driver
        return None
    log.info("dask: starting LocalCUDACluster (one worker per GPU)")
    return LocalCUDACluster(n_workers=n_workers) if n_workers else LocalCUDACluster()
