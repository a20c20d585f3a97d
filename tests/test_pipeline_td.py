"""A whole run on Treasure Data: the real pytd/td-client and our CDP client against loopback
emulators of both APIs, started here. Read, cluster, write, export, attach to a parent segment,
rerun idempotently, fail half-way and keep the old table, never leak the API key."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autoseg.config import build_config
from autoseg.demo import make_customers
from autoseg.errors import InputDataError, ServiceError
from autoseg.pipeline import RunResult, run

try:
    from emulators.cdp_api import CDPEmulator, start_cdp_emulator
    from emulators.td_api import TDEmulator, fast_client_sleeps, start_td_emulator
except ImportError:  # tests/ imported as a package
    from tests.emulators.cdp_api import CDPEmulator, start_cdp_emulator
    from tests.emulators.td_api import TDEmulator, fast_client_sleeps, start_td_emulator

APIKEY = "1/SENTINEL-pipeline-key-0d9c3b7a5e21"
AUDIENCE = "Customers 360"
ROWS = 400


@pytest.fixture(autouse=True)
def _fast_sleeps() -> Iterator[None]:
    with fast_client_sleeps():
        yield


@pytest.fixture
def td() -> Iterator[TDEmulator]:
    emulator = start_td_emulator(apikey=APIKEY, databases=["shop", "cdp_db"])
    frame, _ = make_customers(ROWS, seed=5)
    frame = frame.drop(columns=["last_feedback"])
    frame["signup_date"] = frame["signup_date"].dt.strftime("%Y-%m-%d")
    frame["is_member"] = frame["is_member"].astype(int)
    frame["age"] = frame["age"].astype("float64")
    emulator.seed_table("shop", "customers", frame)
    emulator.seed_table("cdp_db", "customers",
                        pd.DataFrame({"customer_id": frame["customer_id"], "email_ok": 1}))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def cdp(td: TDEmulator) -> Iterator[CDPEmulator]:
    emulator = start_cdp_emulator(apikey=APIKEY, td=td)
    emulator.seed_parent_segment(AUDIENCE)
    try:
        yield emulator
    finally:
        emulator.stop()


def _run(tmp_path: Path, td: TDEmulator, cdp: CDPEmulator | None, **values: Any) -> RunResult:
    params: dict[str, Any] = {
        "store": "td", "td_engine": "hive", "input_table": "shop.customers",
        "output_table": "shop.segments", "output_dir": str(tmp_path / "out"),
        "model_dir": str(tmp_path / "models"), "max_clusters": 5,
    }
    if cdp is not None:
        params.update(audience_name=AUDIENCE, foreign_key="customer_id",
                      rowid_column="customer_id", cdp_endpoint=cdp.endpoint)
    params.update(values)
    environ = {"TD_API_KEY": APIKEY, "TD_API_SERVER": td.endpoint}
    return run(build_config(params), environ=environ)


def _segments(cdp: CDPEmulator) -> list[dict[str, Any]]:
    return cdp.segments()


def test_run_on_td_with_exports_and_audience_twice(
    tmp_path: Path, td: TDEmulator, cdp: CDPEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = _run(tmp_path, td, cdp, export_feature_importance="importance",
                 export_shap_values="shop.shap")
    k = first.chosen_k
    out = td.read_table("shop", "segments")
    assert len(out) == ROWS
    assert sorted(out["cluster_id"].unique()) == list(range(k))
    assert set(out.columns) >= {"customer_id", "annual_spend", "region", "cluster_id", "time"}
    assert len(td.read_table("shop", "importance")) > 0  # default database: the output's
    assert set(td.read_table("shop", "shap")["cluster_id"]) == set(range(k))
    assert not [t for t in td.table_names("shop") if "tmp" in t]  # no staging left

    assert len(_segments(cdp)) == k
    assert first.summary["audience"]["created"] == k
    second = _run(tmp_path, td, cdp, export_feature_importance="importance",
                  export_shap_values="shop.shap")
    assert second.chosen_k == k
    assert len(_segments(cdp)) == k  # updated, not duplicated
    assert second.summary["audience"]["created"] == 0
    attributes = [a for a in cdp.audience(second.summary["audience"]["parent_segment_id"])
                  ["attributes"] if a["name"] == "cluster_id"]
    assert len(attributes) == 1

    # the API key reaches no log, summary or report
    out_dir = tmp_path / "out"
    for text in (caplog.text, (out_dir / "summary.json").read_text(),
                 (out_dir / "report.html").read_text()):
        assert APIKEY not in text
        assert APIKEY.split("/")[1] not in text


def test_failed_swap_keeps_the_old_output_table(tmp_path: Path, td: TDEmulator) -> None:
    _run(tmp_path, td, None, num_clusters=3)
    before = td.read_table("shop", "segments").sort_values("customer_id").reset_index(drop=True)
    # the rows are uploaded to the staging table; swapping it in fails (POSTs are not retried)
    td.fail_next("POST", r"/v3/table/swap/", status=500)
    with pytest.raises(ServiceError) as error:
        _run(tmp_path, td, None, num_clusters=4)
    assert APIKEY not in str(error.value)
    after = td.read_table("shop", "segments").sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert not [t for t in td.table_names("shop") if t not in ("customers", "segments")]


def test_rowid_must_exist_and_be_unique(tmp_path: Path, td: TDEmulator,
                                        cdp: CDPEmulator) -> None:
    with pytest.raises(InputDataError, match="--rowid-column='nope' is not a column"):
        _run(tmp_path, td, cdp, rowid_column="nope")
    with pytest.raises(InputDataError, match="--rowid-column='region' is not unique"):
        _run(tmp_path, td, cdp, rowid_column="region")
    assert not td.has_table("shop", "segments")
    assert _segments(cdp) == []


def test_missing_input_table_on_td(tmp_path: Path, td: TDEmulator) -> None:
    with pytest.raises(InputDataError, match="shop.nothing"):
        _run(tmp_path, td, None, input_table="shop.nothing")
    assert np.array_equal(sorted(td.table_names("shop")), ["customers"])


def test_segment_rules_create_editable_rule_segments(tmp_path: Path, td: TDEmulator,
                                                     cdp: CDPEmulator) -> None:
    result = _run(tmp_path, td, cdp, segment_rules=True, num_clusters=3)
    rule_folder = result.summary["audience_rules"]
    assert rule_folder["folder_name"] == "autoseg rules: segments"
    segments = _segments(cdp)
    assert len(segments) == 6  # three cluster_id segments and three rule segments
    rule_segments = [s for s in segments
                     if str(s["id"]) in {str(v) for v in rule_folder["segments"].values()}]
    assert len(rule_segments) == 3
    fields = {c["leftValue"]["name"] for s in rule_segments
              for c in s["rule"]["conditions"]}
    assert "cluster_id" not in fields  # rules on the original attributes
