"""Audience integration: attach clusters to a Treasure Data CDP parent segment as segments.

:mod:`autoseg.audience.client` holds a small CDP API client; :mod:`autoseg.audience.sync` holds
:func:`sync_audience`, which adds the ``cluster_id`` attribute to a parent segment and keeps one
segment per cluster in a folder, idempotently across reruns.
"""

from autoseg.audience.client import (
    CDPClient,
    cdp_client_from_environment,
    cdp_endpoint_from_td_server,
)
from autoseg.audience.sync import cluster_rule, sync_audience

__all__ = [
    "CDPClient",
    "cdp_client_from_environment",
    "cdp_endpoint_from_td_server",
    "cluster_rule",
    "sync_audience",
]
