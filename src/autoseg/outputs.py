"""What a run writes besides files: the tables (labelled rows, exports) and the CDP audience.

The tables of a run are written together, all or nothing (``TableStore.write_tables``); the
model is staged beside its folder before them; the audience is synced after them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from autoseg.config import RunConfig
from autoseg.describe import Description
from autoseg.explain import Explanation
from autoseg.io import TableWrite
from autoseg.model import SegmentationModel, StagedModel
from autoseg.names import TableName, parse_table_name
from autoseg.rules import ClusterRule, rules_to_cdp
from autoseg.timing import Timer

if TYPE_CHECKING:
    from autoseg.audience import CDPClient
    from autoseg.io import RowChunks

log = logging.getLogger(__name__)


def table_writes(
    config: RunConfig, output_name: TableName | None,
    labelled: pa.Table | RowChunks | None, described: Description,
) -> list[TableWrite]:
    """Every table the run writes: the labelled rows (when an output table is named), the
    requested exports and the segment-rules table, written together, all or nothing."""
    writes: list[TableWrite] = []
    if output_name is not None and labelled is not None:
        writes.append(TableWrite(output_name, labelled, config.output_mode))
    writes.extend(export_writes(config, output_name, described.explanation))
    if config.export_segment_rules:
        writes.append(rules_write(config, output_name, described.rules))
    return writes


def export_writes(
    config: RunConfig, output_name: TableName | None, explanation: Explanation | None
) -> list[TableWrite]:
    """Feature-importance and SHAP tables, named ``[dbname.]table`` (default: the output's db)."""
    database = output_name.database if output_name else None
    writes = []
    for option, attribute in (("export_feature_importance", "feature_importance"),
                              ("export_shap_values", "shap_by_cluster")):
        target = getattr(config, option)
        if not target:
            continue
        if explanation is None:
            log.warning("--%s: no explanation to export; table not written",
                        option.replace("_", "-"))
            continue
        name = parse_table_name(target, "--" + option.replace("_", "-"), database)
        frame = getattr(explanation, attribute).reset_index(drop=True)
        writes.append(TableWrite(name, frame, config.output_mode))
    return writes


def rules_write(config: RunConfig, output_name: TableName | None,
                 rules: list[ClusterRule]) -> TableWrite:
    name = parse_table_name(str(config.export_segment_rules), "--export-segment-rules",
                            output_name.database if output_name else None)
    frame = pd.DataFrame({
        "cluster_id": [r.cluster_id for r in rules],
        "rule": [r.text for r in rules],
        "precision": [r.precision for r in rules],
        "recall": [r.recall for r in rules],
        "support": [r.support for r in rules],
    })
    return TableWrite(name, frame, config.output_mode)


def stage_model(model: SegmentationModel, config: RunConfig,
                described: Description) -> StagedModel:
    """Write a newly fitted model (with its surrogate and its drift reference) beside its
    ``--model-name`` folder; the caller commits it once the tables are written, or discards
    it."""
    assert config.model_name is not None
    if described.reference is not None:
        model.extra["reference"] = described.reference()
    explanation = described.explanation
    surrogate = (explanation.booster.save_raw(raw_format="json")
                 if explanation is not None else None)
    return model.stage(config.model_dir / config.model_name, surrogate)


def sync_audiences(cdp: CDPClient, config: RunConfig, output_name: TableName,
                   described: Description, timer: Timer) -> dict[str, Any]:
    """Create or update the CDP audience (one segment per cluster; with ``--segment-rules``
    also the rule segments); returns the summary entries ``audience`` (``audience_rules``)."""
    from autoseg.audience import sync_audience  # the HTTP client: loaded when needed

    found: dict[str, Any] = {}
    with timer.stage("audience"):
        audience = sync_audience(
            cdp, audience_name=str(config.audience_name),
            output_database=str(output_name.database), output_table=output_name.table,
            rowid_column=str(config.rowid_column), foreign_key=str(config.foreign_key),
            clusters=described.profiles,
        )
    found["audience"] = audience
    if config.segment_rules:
        with timer.stage("audience_rules"):
            found["audience_rules"] = sync_audience(
                cdp, audience_name=str(config.audience_name),
                output_database=str(output_name.database), output_table=output_name.table,
                rowid_column=str(config.rowid_column), foreign_key=str(config.foreign_key),
                clusters=described.profiles, folder_name=f"autoseg rules: {output_name.table}",
                rules={r.cluster_id: rules_to_cdp(r) for r in described.rules if r.conditions},
                rule_attributes=rule_attributes(described.rules),
            )
    log.info("audience %r: %d segments created, %d updated, %d removed",
             config.audience_name, audience.get("created", 0), audience.get("updated", 0),
             audience.get("deleted", 0))
    return found


def rule_attributes(rules: list[ClusterRule]) -> dict[str, tuple[str, str]]:
    """CDP attributes the rule segments test: the output column and its CDP type."""
    types = {"numeric": "number", "binary": "number", "date": "timestamp"}
    found: dict[str, tuple[str, str]] = {}
    for rule in rules:
        for condition in rule.conditions:
            kind = ("string" if condition.operator in ("in", "not in")
                    else types.get(condition.kind, "number"))
            found[condition.feature] = (condition.feature, kind)
    return found
