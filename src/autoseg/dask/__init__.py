"""The Dask engine: the same run on a Dask cluster, for tables larger than one machine.

Modules by job: :mod:`~autoseg.dask.dataset` (the input dataset, its schema, rows by
position), :mod:`~autoseg.dask.fit` (the all-rows Lloyd refit, sizes and silhouette as
reductions), :mod:`~autoseg.dask.output` (the staged dataset output, rows streamed to the
stores), :mod:`~autoseg.dask.cluster` (the client) and :mod:`~autoseg.dask.engine` (the
:class:`~autoseg.dask.engine.DaskEngine` the run skeleton drives). Run it with
``autoseg.pipeline.run`` (``--dask local`` / ``--dask-scheduler``) or, on a client of your own,
``autoseg.pipeline.run_on_dask``.

Dask is an optional dependency (``autoseg[dask]``); these modules import it at import time, so
import them only when a Dask run was asked for.
"""
