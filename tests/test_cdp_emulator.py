"""The CDP API emulator answers the calls an audience-integration client makes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import requests

try:
    from emulators.cdp_api import CDPEmulator, start_cdp_emulator
    from emulators.td_api import start_td_emulator
except ImportError:  # tests/ imported as a package
    from tests.emulators.cdp_api import CDPEmulator, start_cdp_emulator
    from tests.emulators.td_api import start_td_emulator

APIKEY = "1/test-key-0123456789abcdef"


@pytest.fixture
def cdp() -> Iterator[CDPEmulator]:
    """A CDP emulator with no TD link (no table checks)."""
    emulator = start_cdp_emulator(apikey=APIKEY)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A requests session sending the CDP auth header."""
    with requests.Session() as s:
        s.headers.update({"Authorization": f"TD1 {APIKEY}", "Content-Type": "application/json"})
        yield s


def _rule(column: str, value: str) -> dict[str, Any]:
    return {
        "type": "And",
        "conditions": [
            {
                "type": "And",
                "conditions": [
                    {
                        "type": "Value",
                        "leftValue": {"name": column},
                        "operator": {"type": "Equal", "rightValue": value, "not": False},
                        "arrayMatching": None,
                        "exclude": False,
                    }
                ],
            }
        ],
        "expr": "",
    }


def _attribute(name: str = "cluster_id", **over: Any) -> dict[str, Any]:
    return {
        "name": name,
        "parentDatabaseName": "autoseg_db",
        "parentTableName": "clusters",
        "parentColumn": "cluster_id",
        "parentKey": "customer_id",
        "foreignKey": "customer_id",
        "groupingName": "autoseg",
    } | over


def test_list_parent_segments_and_find_root_folder(
    cdp: CDPEmulator, http: requests.Session
) -> None:
    ps_id = cdp.seed_parent_segment(
        "Customers 360", master_database="cdp_db", master_table="customers"
    )
    cdp.seed_parent_segment("Other")
    res = http.get(f"{cdp.endpoint}/entities/parent_segments")
    assert res.status_code == 200
    assert res.headers["Content-Type"] == "application/vnd.treasuredata.v1+json"
    data = res.json()["data"]
    match = [d for d in data if d["attributes"]["name"] == "Customers 360"]
    assert [d["id"] for d in match] == [ps_id]
    assert match[0]["type"] == "parentSegment"

    one = http.get(f"{cdp.endpoint}/entities/parent_segments/{ps_id}").json()["data"]
    root = one["relationships"]["parentFolder"]["data"]["id"]
    assert root == cdp.audience(ps_id)["rootFolderId"]
    assert http.get(f"{cdp.endpoint}/entities/parent_segments/999999").status_code == 404


def test_put_audience_adds_attributes(cdp: CDPEmulator, http: requests.Session) -> None:
    ps_id = cdp.seed_parent_segment("Customers 360")
    audience = http.get(f"{cdp.endpoint}/audiences/{ps_id}").json()
    assert audience["master"] == {"parentDatabaseName": "cdp_db", "parentTableName": "customers"}
    assert audience["attributes"] == []

    # Some clients read the audience with an empty-body PUT.
    assert http.put(f"{cdp.endpoint}/audiences/{ps_id}").json() == audience

    audience["attributes"].append(_attribute())
    res = http.put(f"{cdp.endpoint}/audiences/{ps_id}", json=audience)
    assert res.status_code == 200, res.text
    attrs = res.json()["attributes"]
    assert len(attrs) == 1
    assert attrs[0]["audienceId"] == ps_id and attrs[0]["id"]
    assert attrs[0]["groupingName"] == "autoseg" and attrs[0]["type"] == "string"
    assert cdp.audience(ps_id)["attributes"] == attrs

    # Putting the same attributes back keeps their ids.
    again = http.put(f"{cdp.endpoint}/audiences/{ps_id}", json=res.json()).json()
    assert again["attributes"][0]["id"] == attrs[0]["id"]

    dup = dict(res.json(), attributes=attrs + [_attribute()])
    bad = http.put(f"{cdp.endpoint}/audiences/{ps_id}", json=dup)
    assert bad.status_code == 400 and "not unique" in bad.json()["base"][0]

    missing = dict(res.json(), attributes=[_attribute(parentKey="")])
    assert http.put(f"{cdp.endpoint}/audiences/{ps_id}", json=missing).status_code == 400


def test_put_audience_checks_tables_when_linked_to_td(http: requests.Session) -> None:
    with start_td_emulator(apikey=APIKEY) as td, start_cdp_emulator(apikey=APIKEY, td=td) as cdp:
        td.seed_table("cdp_db", "customers", pd.DataFrame({"customer_id": ["a", "b"]}))
        td.seed_table(
            "autoseg_db",
            "clusters",
            pd.DataFrame({"customer_id": ["a", "b"], "cluster_id": [0, 1]}),
        )
        ps_id = cdp.seed_parent_segment("Customers 360")
        audience = cdp.audience(ps_id)

        ok = http.put(
            f"{cdp.endpoint}/audiences/{ps_id}", json=audience | {"attributes": [_attribute()]}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["attributes"][0]["type"] == "number"  # from the TD column type

        for bad_attr in (
            _attribute(parentTableName="nope"),
            _attribute(parentColumn="nope"),
            _attribute(foreignKey="nope"),
        ):
            res = http.put(
                f"{cdp.endpoint}/audiences/{ps_id}", json=audience | {"attributes": [bad_attr]}
            )
            assert res.status_code == 400, bad_attr

        root = cdp.audience(ps_id)["rootFolderId"]
        seg = {
            "attributes": {"name": "bad", "rule": _rule("not_a_field", "0")},
            "relationships": {"parentFolder": {"data": {"id": root, "type": "folder-segment"}}},
        }
        res = http.post(f"{cdp.endpoint}/entities/segments", json=seg)
        assert res.status_code == 400 and "not_a_field" in res.text
        seg["attributes"]["rule"] = _rule("cluster_id", "0")
        assert http.post(f"{cdp.endpoint}/entities/segments", json=seg).status_code == 200


def test_folders_legacy_and_entities(cdp: CDPEmulator, http: requests.Session) -> None:
    ps_id = cdp.seed_parent_segment("Customers 360")
    root = cdp.audience(ps_id)["rootFolderId"]

    res = http.post(
        f"{cdp.endpoint}/audiences/{ps_id}/folders", json={"name": "autoseg", "description": "x"}
    )
    assert res.status_code == 200
    folder_id = res.json()["id"]
    dup = http.post(
        f"{cdp.endpoint}/audiences/{ps_id}/folders", json={"name": "autoseg", "description": ""}
    )
    assert dup.status_code == 400 and dup.json()["errors"]["name"] == ["has already been taken"]
    listed = http.get(f"{cdp.endpoint}/audiences/{ps_id}/folders").json()
    assert {f["name"]: f["id"] for f in listed}["autoseg"] == folder_id

    body = {
        "type": "folder-segment",
        "attributes": {"name": "run 2024-01", "description": None},
        "relationships": {"parentFolder": {"data": {"id": folder_id, "type": "folder-segment"}}},
    }
    sub = http.post(f"{cdp.endpoint}/entities/folders", json=body)
    assert sub.status_code == 200
    sub_id = sub.json()["data"]["id"]
    shown = http.get(f"{cdp.endpoint}/entities/folders/{sub_id}").json()["data"]
    assert shown["relationships"]["parentFolder"]["data"]["id"] == folder_id
    assert shown["attributes"]["audienceId"] == ps_id

    tree = http.get(f"{cdp.endpoint}/entities/by-folder/{root}", params={"depth": 2}).json()["data"]
    assert [(e["id"], e["type"]) for e in tree] == [
        (root, "folder-segment"),
        (folder_id, "folder-segment"),
        (sub_id, "folder-segment"),
    ]
    not_empty = http.delete(f"{cdp.endpoint}/entities/folders/{folder_id}")
    assert not_empty.status_code == 409
    assert http.delete(f"{cdp.endpoint}/entities/folders/{sub_id}").status_code == 200


def test_segment_lifecycle(cdp: CDPEmulator, http: requests.Session) -> None:
    ps_id = cdp.seed_parent_segment("Customers 360")
    folder_id = http.post(
        f"{cdp.endpoint}/audiences/{ps_id}/folders", json={"name": "autoseg", "description": ""}
    ).json()["id"]
    seg = {
        "type": "segment-batch",
        "attributes": {
            "name": "Cluster 0",
            "description": "cluster_id = 0",
            "rule": _rule("cluster_id", "0"),
        },
        "relationships": {"parentFolder": {"data": {"id": folder_id, "type": "folder-segment"}}},
    }
    res = http.post(f"{cdp.endpoint}/entities/segments", json=seg)
    assert res.status_code == 200, res.text
    data = res.json()["data"]
    seg_id = data["id"]
    assert data["type"] == "segment-batch"
    assert data["attributes"]["audienceId"] == ps_id
    assert data["attributes"]["rule"] == _rule("cluster_id", "0")

    dup = http.post(f"{cdp.endpoint}/entities/segments", json=seg)
    assert dup.status_code == 400 and dup.json()["errors"]["name"][0] == "has already been taken"

    patch = {"attributes": {"rule": _rule("cluster_id", "1"), "description": "now 1"}}
    patched = http.patch(f"{cdp.endpoint}/entities/segments/{seg_id}", json=patch).json()["data"]
    assert (
        patched["attributes"]["rule"]["conditions"][0]["conditions"][0]["operator"]["rightValue"]
        == "1"
    )
    got = http.get(f"{cdp.endpoint}/entities/segments/{seg_id}").json()["data"]
    assert got["attributes"]["description"] == "now 1"

    children = http.get(
        f"{cdp.endpoint}/entities/by-folder/{folder_id}", params={"depth": 1}
    ).json()["data"]
    assert [(e["id"], e["type"]) for e in children] == [
        (folder_id, "folder-segment"),
        (seg_id, "segment-batch"),
    ]
    no_rule = http.get(
        f"{cdp.endpoint}/entities/by-folder/{folder_id}", params={"depth": 1, "with_rule": "false"}
    ).json()["data"]
    assert "rule" not in no_rule[1]["attributes"]

    assert http.delete(f"{cdp.endpoint}/entities/segments/{seg_id}").status_code == 200
    assert http.get(f"{cdp.endpoint}/entities/segments/{seg_id}").status_code == 404
    assert cdp.segments(ps_id) == []


def test_legacy_segment_endpoints_and_rerun(cdp: CDPEmulator, http: requests.Session) -> None:
    ps_id = cdp.seed_parent_segment("Customers 360")
    body = {
        "name": "Cluster 2",
        "kind": 0,
        "description": "",
        "countPopulation": True,
        "rule": _rule("c", "2"),
    }
    res = http.post(f"{cdp.endpoint}/audiences/{ps_id}/segments", json=body)
    assert res.status_code == 200
    seg = res.json()
    assert seg["segmentFolderId"] == cdp.audience(ps_id)["rootFolderId"]
    assert [s["id"] for s in http.get(f"{cdp.endpoint}/audiences/{ps_id}/segments").json()] == [
        seg["id"]
    ]
    assert http.post(f"{cdp.endpoint}/audiences/{ps_id}/run").status_code == 200
    assert cdp.runs == [ps_id]


def test_auth_failures_and_request_log(cdp: CDPEmulator, http: requests.Session) -> None:
    ps_id = cdp.seed_parent_segment("Customers 360")
    assert requests.get(f"{cdp.endpoint}/entities/parent_segments", timeout=5).status_code == 401
    wrong = requests.get(
        f"{cdp.endpoint}/entities/parent_segments", headers={"Authorization": "TD1 nope"}, timeout=5
    )
    assert wrong.status_code == 401

    cdp.fail_next("PUT", rf"^/audiences/{ps_id}$", status=503, body={"error": "busy"})
    res = http.put(f"{cdp.endpoint}/audiences/{ps_id}", json=cdp.audience(ps_id))
    assert res.status_code == 503 and res.json() == {"error": "busy"}
    assert (
        http.put(f"{cdp.endpoint}/audiences/{ps_id}", json=cdp.audience(ps_id)).status_code == 200
    )

    cdp.fail_next("POST", r"^/entities/segments$", drop_connection=True)
    with pytest.raises(requests.ConnectionError):
        http.post(f"{cdp.endpoint}/entities/segments", json={"attributes": {"name": "x"}})

    log = [(r.method, r.path, r.status) for r in cdp.requests]
    assert log[:2] == [("GET", "/entities/parent_segments", 401)] * 2
    assert ("PUT", f"/audiences/{ps_id}", 503) in log
    assert log[-1] == ("POST", "/entities/segments", None)
    assert cdp.requests_matching("PUT", r"^/audiences/")[-1].injected is False
