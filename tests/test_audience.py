"""sync_audience and CDPClient against the loopback CDP emulator, linked to a TD emulator.

The link makes the CDP emulator check what the real service checks: the attribute's table and
columns exist in TD, the foreign key is a master-table column, and rules only name known fields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from autoseg.audience import (
    CDPClient,
    cdp_client_from_environment,
    cdp_endpoint_from_td_server,
    cluster_rule,
    sync_audience,
)
from autoseg.errors import ServiceError, UsageError

try:
    from emulators.cdp_api import CDPEmulator, start_cdp_emulator
    from emulators.td_api import TDEmulator, start_td_emulator
except ImportError:  # tests/ imported as a package
    from tests.emulators.cdp_api import CDPEmulator, start_cdp_emulator
    from tests.emulators.td_api import TDEmulator, start_td_emulator

APIKEY = "1/SENTINEL-cdp-key-8e2d41b7a9c0f315"
WRONG_KEY = "1/WRONG-cdp-sentinel-5a7e19d3c2b4"
AUDIENCE = "Customers 360"
AGE_ATTRIBUTE = {
    "name": "age",
    "type": "number",
    "parentDatabaseName": "cdp_db",
    "parentTableName": "customers",
    "parentColumn": "age",
    "parentKey": "customer_id",
    "foreignKey": "customer_id",
    "groupingName": "demographics",
}


@pytest.fixture
def td() -> Iterator[TDEmulator]:
    emulator = start_td_emulator(apikey=APIKEY)
    emulator.seed_table("cdp_db", "customers",
                        pd.DataFrame({"customer_id": ["a", "b", "c"], "age": [30, 40, 50]}))
    emulator.seed_table("autoseg_db", "clusters",
                        pd.DataFrame({"customer_id": ["a", "b", "c"], "cluster_id": [0, 1, 2]}))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def cdp(td: TDEmulator) -> Iterator[CDPEmulator]:
    emulator = start_cdp_emulator(apikey=APIKEY, td=td)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def parent_id(cdp: CDPEmulator) -> str:
    return cdp.seed_parent_segment(AUDIENCE, attributes=[AGE_ATTRIBUTE])


@pytest.fixture
def client(cdp: CDPEmulator) -> CDPClient:
    return CDPClient(APIKEY, cdp.endpoint, max_retries=2, backoff_base=0.0, timeout=5.0)


def _profiles(k: int, tag: str = "high") -> list[dict[str, Any]]:
    return [
        {"cluster_id": i, "size": 10 * (i + 1), "share": (i + 1) / 6,
         "description": f"annual_spend {tag}, orders_90d {'low' if i % 2 else 'high'}"}
        for i in range(k)
    ]


def _sync(client: CDPClient, clusters: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return sync_audience(
        client, audience_name=AUDIENCE, output_database="autoseg_db", output_table="clusters",
        rowid_column="customer_id", foreign_key="customer_id", clusters=clusters, **kw)


def _folder_segments(cdp: CDPEmulator, parent: str, folder_id: str) -> list[dict[str, Any]]:
    return sorted((s for s in cdp.segments(parent) if s["segmentFolderId"] == folder_id),
                  key=lambda s: s["name"])


# -- the sync ---------------------------------------------------------------------------------


def test_sync_twice_gives_three_segments_and_one_attribute(
    cdp: CDPEmulator, client: CDPClient, parent_id: str
) -> None:
    first = _sync(client, _profiles(3))
    assert first["parent_segment_id"] == parent_id
    assert (first["created"], first["updated"], first["deleted"]) == (3, 0, 0)
    assert first["attribute_changed"] and first["folder_created"]
    assert sorted(first["segments"]) == [0, 1, 2]

    second = _sync(client, _profiles(3))
    assert (second["created"], second["updated"], second["unchanged"], second["deleted"]) == (
        0, 0, 3, 0)
    assert not second["attribute_changed"] and not second["folder_created"]
    assert second["segments"] == first["segments"]  # same segments, not new ones
    assert second["folder_id"] == first["folder_id"]

    audience = cdp.audience(parent_id)
    names = [a["name"] for a in audience["attributes"]]
    assert sorted(names) == ["age", "cluster_id"]  # present once, the other one kept
    attr = next(a for a in audience["attributes"] if a["name"] == "cluster_id")
    assert attr["type"] == "number" and attr["groupingName"] == "autoseg"
    assert (attr["parentDatabaseName"], attr["parentTableName"]) == ("autoseg_db", "clusters")
    assert (attr["parentColumn"], attr["parentKey"], attr["foreignKey"]) == (
        "cluster_id", "customer_id", "customer_id")

    folders = [f for f in cdp.folders(parent_id) if f["name"] == "autoseg: clusters"]
    assert len(folders) == 1 and folders[0]["parentFolderId"] == audience["rootFolderId"]
    segments = _folder_segments(cdp, parent_id, first["folder_id"])
    assert len(segments) == 3 and len(cdp.segments(parent_id)) == 3
    assert segments[0]["name"] == "Cluster 0: annual_spend high, orders_90d high"
    assert segments[1]["name"] == "Cluster 1: annual_spend high, orders_90d low"
    assert segments[0]["description"].startswith("annual_spend high, orders_90d high. 10 rows")
    for k, segment in enumerate(segments):
        assert segment["rule"] == cluster_rule("cluster_id", k)
        value = segment["rule"]["conditions"][0]["conditions"][0]
        assert value["leftValue"] == {"name": "cluster_id"}
        assert value["operator"] == {"type": "Equal", "rightValue": str(k), "not": False}


def test_rerun_with_fewer_clusters_removes_the_stale_segment(
    cdp: CDPEmulator, client: CDPClient, parent_id: str
) -> None:
    first = _sync(client, _profiles(3))
    second = _sync(client, _profiles(2, tag="low"))
    assert (second["created"], second["updated"], second["deleted"]) == (0, 2, 1)
    segments = _folder_segments(cdp, parent_id, first["folder_id"])
    assert [s["name"] for s in segments] == [
        "Cluster 0: annual_spend low, orders_90d high",
        "Cluster 1: annual_spend low, orders_90d low",
    ]
    assert [s["id"] for s in segments] == [first["segments"][0], first["segments"][1]]
    assert second["segments"] == {0: first["segments"][0], 1: first["segments"][1]}


def test_existing_cluster_attribute_is_updated_in_place(
    cdp: CDPEmulator, td: TDEmulator, client: CDPClient
) -> None:
    td.seed_table("autoseg_db", "old_clusters",
                  pd.DataFrame({"customer_id": ["a"], "cluster_id": [0]}))
    old = dict(AGE_ATTRIBUTE, name="cluster_id", parentDatabaseName="autoseg_db",
               parentTableName="old_clusters", parentColumn="cluster_id", groupingName="old")
    parent = cdp.seed_parent_segment(AUDIENCE, attributes=[AGE_ATTRIBUTE, old])
    before = {a["name"]: a for a in cdp.audience(parent)["attributes"]}
    result = _sync(client, _profiles(2))
    assert result["attribute_changed"]
    after = {a["name"]: a for a in cdp.audience(parent)["attributes"]}
    assert sorted(after) == ["age", "cluster_id"]
    assert after["cluster_id"]["id"] == before["cluster_id"]["id"]
    assert after["cluster_id"]["parentTableName"] == "clusters"
    assert after["cluster_id"]["groupingName"] == "autoseg"
    # Every field of the other attribute survives (the service may add its own fields).
    assert {k: after["age"][k] for k in before["age"]} == before["age"]


def test_user_segments_are_kept_and_duplicates_removed(
    cdp: CDPEmulator, client: CDPClient, parent_id: str
) -> None:
    first = _sync(client, _profiles(2))
    folder = first["folder_id"]
    for name in ("Cluster 0: an older copy", "my own segment"):
        client.post("/entities/segments", {
            "type": "segment-batch",
            "attributes": {"name": name, "rule": cluster_rule("cluster_id", 0)},
            "relationships": {"parentFolder": {"data": {"id": folder, "type": "folder-segment"}}},
        })
    second = _sync(client, _profiles(2))
    assert second["deleted"] == 1 and second["segments"] == first["segments"]
    names = [s["name"] for s in _folder_segments(cdp, parent_id, folder)]
    assert names == ["Cluster 0: annual_spend high, orders_90d high",
                     "Cluster 1: annual_spend high, orders_90d low", "my own segment"]


def test_custom_folder_and_parent_segment_run(
    cdp: CDPEmulator, client: CDPClient, parent_id: str
) -> None:
    result = _sync(client, _profiles(2), folder_name="Nightly clusters",
                   run_parent_segment=True)
    assert result["folder_name"] == "Nightly clusters" and result["run_started"]
    assert [f["name"] for f in cdp.folders(parent_id) if f["id"] == result["folder_id"]] == [
        "Nightly clusters"]
    assert cdp.runs == [parent_id]


def test_parent_segment_not_found(cdp: CDPEmulator, client: CDPClient, parent_id: str) -> None:
    with pytest.raises(ServiceError) as info:
        sync_audience(client, audience_name="No Such Parent", output_database="autoseg_db",
                      output_table="clusters", rowid_column="customer_id",
                      foreign_key="customer_id", clusters=_profiles(2))
    message = str(info.value)
    assert message.startswith("--audience-name='No Such Parent': no parent segment of that name")
    assert "(1 visible)" in message and "Audience Studio" in message
    assert APIKEY not in message
    assert cdp.segments() == [] and cdp.folders(parent_id) == [cdp.folders(parent_id)[0]]


def test_segment_name_taken_outside_the_folder(
    cdp: CDPEmulator, client: CDPClient, parent_id: str
) -> None:
    root = cdp.audience(parent_id)["rootFolderId"]
    client.post("/entities/segments", {
        "type": "segment-batch",
        "attributes": {"name": "Cluster 0: annual_spend high, orders_90d high", "rule": {}},
        "relationships": {"parentFolder": {"data": {"id": root, "type": "folder-segment"}}},
    })
    with pytest.raises(ServiceError, match=r"segment name 'Cluster 0: .*' is already used in "
                                           r"parent segment 'Customers 360' outside the folder"):
        _sync(client, _profiles(1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clusters": []}, "no clusters"),
        ({"clusters": [{"cluster_id": 0}, {"cluster_id": 0}]}, "cluster_id 0 is given twice"),
        ({"clusters": [{"cluster_id": "0"}]}, "cluster_id '0' is not a non-negative integer"),
        ({"output_table": "Bad-Name"}, "--output-table='autoseg_db.Bad-Name'"),
        ({"rowid_column": ""}, "--rowid-column is empty"),
        ({"audience_name": " "}, "--audience-name is empty"),
    ],
)
def test_invalid_arguments_are_usage_errors_before_any_call(
    cdp: CDPEmulator, client: CDPClient, kwargs: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {
        "audience_name": AUDIENCE, "output_database": "autoseg_db", "output_table": "clusters",
        "rowid_column": "customer_id", "foreign_key": "customer_id", "clusters": _profiles(1)}
    args.update(kwargs)
    with pytest.raises(UsageError, match=match):
        sync_audience(client, **args)
    assert cdp.requests == []


# -- the client: retries, errors, secrets -----------------------------------------------------


def test_transient_failures_of_idempotent_calls_are_retried(
    cdp: CDPEmulator, client: CDPClient, parent_id: str
) -> None:
    cdp.fail_next("GET", r"^/entities/parent_segments$", status=429)
    cdp.fail_next("PUT", rf"^/audiences/{parent_id}$", status=503)
    cdp.fail_next("GET", r"^/entities/by-folder/", drop_connection=True)
    result = _sync(client, _profiles(2))
    assert result["created"] == 2
    assert [r.status for r in cdp.requests_matching("PUT", r"^/audiences/")] == [503, 200]
    assert [r.status for r in cdp.requests_matching("GET", r"^/entities/parent_segments$")] == [
        429, 200]


def test_failed_create_is_not_resent_and_a_rerun_finishes_without_duplicates(
    cdp: CDPEmulator, client: CDPClient, parent_id: str
) -> None:
    cdp.fail_next("POST", r"^/entities/segments$", status=503, skip=1)
    with pytest.raises(ServiceError) as info:
        _sync(client, _profiles(3))
    assert str(info.value) == (
        "the CDP API failed (HTTP 503) while creating the segment "
        "'Cluster 1: annual_spend high, orders_90d low': rerun later"
    )
    assert len(cdp.requests_matching("POST", r"^/entities/segments$")) == 2
    result = _sync(client, _profiles(3))
    assert (result["created"], result["unchanged"]) == (2, 1)
    assert len(cdp.segments(parent_id)) == 3


def test_persistent_503_gives_up_after_bounded_retries(
    cdp: CDPEmulator, client: CDPClient, parent_id: str
) -> None:
    cdp.fail_next("GET", r"^/entities/parent_segments$", status=503, times=100)
    with pytest.raises(ServiceError) as info:
        _sync(client, _profiles(2))
    assert str(info.value) == (
        "the CDP API failed (HTTP 503) while listing parent segments, gave up after 2 retries: "
        "rerun later"
    )
    assert len(cdp.requests_matching("GET", r"^/entities/parent_segments$")) == 3


def test_validation_error_detail_is_shown(
    cdp: CDPEmulator, client: CDPClient, parent_id: str
) -> None:
    with pytest.raises(ServiceError, match=r"HTTP 400\): Column nope does not exist in the master "
                                           r"table$"):
        sync_audience(client, audience_name=AUDIENCE, output_database="autoseg_db",
                      output_table="clusters", rowid_column="customer_id", foreign_key="nope",
                      clusters=_profiles(1))


def test_redirects_are_refused(cdp: CDPEmulator, client: CDPClient) -> None:
    cdp.fail_next("GET", r"^/entities/parent_segments$", status=302)
    with pytest.raises(ServiceError, match=r"redirected listing parent segments \(HTTP 302\)"):
        client.get("/entities/parent_segments", action="listing parent segments")


def test_wrong_key_is_a_401_without_the_key(
    cdp: CDPEmulator, parent_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = CDPClient(WRONG_KEY, cdp.endpoint, max_retries=1, backoff_base=0.0)
    with pytest.raises(ServiceError, match=r"rejected the API key \(HTTP 401\)") as info:
        _sync(bad, _profiles(1))
    assert WRONG_KEY not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert all(WRONG_KEY not in r.getMessage() for r in caplog.records)


def test_unreachable_endpoint(cdp: CDPEmulator) -> None:
    endpoint = cdp.endpoint
    cdp.stop()
    client = CDPClient(APIKEY, endpoint, max_retries=1, backoff_base=0.0, timeout=2.0)
    with pytest.raises(ServiceError, match=r"^cannot reach the CDP API at 127\.0\.0\.1 \(\w+\) "
                                           r"while GET /audiences/1, gave up after 1 retries"):
        client.get("/audiences/1")


# -- endpoints and environment ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("https://api.treasuredata.com", "https://api-cdp.treasuredata.com"),
        ("https://api.treasuredata.com/", "https://api-cdp.treasuredata.com"),
        ("api.treasuredata.com", "https://api-cdp.treasuredata.com"),
        ("https://api.treasuredata.co.jp", "https://api-cdp.treasuredata.co.jp"),
        ("https://api.eu01.treasuredata.com", "https://api-cdp.eu01.treasuredata.com"),
        ("https://api.ap02.treasuredata.com", "https://api-cdp.ap02.treasuredata.com"),
        ("https://api.ap03.treasuredata.com", "https://api-cdp.ap03.treasuredata.com"),
        ("", "https://api-cdp.treasuredata.com"),
    ],
)
def test_cdp_endpoint_from_td_server(server: str, expected: str) -> None:
    assert cdp_endpoint_from_td_server(server) == expected


@pytest.mark.parametrize("server", ["http://127.0.0.1:8080", "https://td-proxy.example.com",
                                    "https://api-import.treasuredata.com"])
def test_unknown_td_server_asks_for_cdp_endpoint(server: str) -> None:
    with pytest.raises(UsageError, match="give it with --cdp-endpoint"):
        cdp_endpoint_from_td_server(server)


def test_client_from_environment() -> None:
    with pytest.raises(UsageError, match="^TD_API_KEY is not set"):
        cdp_client_from_environment({})
    client = cdp_client_from_environment(
        {"TD_API_KEY": APIKEY, "TD_API_SERVER": "https://api.eu01.treasuredata.com"})
    assert client.endpoint == "https://api-cdp.eu01.treasuredata.com"
    client = cdp_client_from_environment({"TD_API_KEY": APIKEY}, "http://127.0.0.1:9/")
    assert client.endpoint == "http://127.0.0.1:9"
    with pytest.raises(UsageError, match="--cdp-endpoint='ftp://x' is not a URL"):
        cdp_client_from_environment({"TD_API_KEY": APIKEY}, "ftp://x")
