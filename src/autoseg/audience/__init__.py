"""Audience integration: attach clusters to a Treasure Data CDP parent segment as segments.

:mod:`autoseg.audience.cdp` holds a small CDP API client and :func:`sync_audience`, which adds
the ``cluster_id`` attribute to a parent segment and keeps one segment per cluster in a folder,
idempotently across reruns.
"""

from autoseg.audience.cdp import (
    CDPClient,
    cdp_client_from_environment,
    cdp_endpoint_from_td_server,
    cluster_rule,
    sync_audience,
)

__all__ = [
    "CDPClient",
    "cdp_client_from_environment",
    "cdp_endpoint_from_td_server",
    "cluster_rule",
    "sync_audience",
]
