"""The run configuration: parameter table, coercion, params files, precedence and checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from autoseg.config import (
    PARAMETERS,
    PARAMETERS_BY_NAME,
    RunConfig,
    build_config,
    is_file_input,
    load_params_file,
)
from autoseg.errors import EXIT_USAGE, UsageError
from autoseg.names import TableName, parse_table_name

# The parameters of SPEC.md ("every one is a CLI option, an environment variable and a key of
# a params file") with their documented defaults.
SPEC_DEFAULTS: dict[str, Any] = {
    "input_table": None,
    "output_table": None,
    "model_name": None,
    "force_refit": True,
    "output_mode": "overwrite",
    "min_clusters": 2,
    "max_clusters": 9,
    "num_clusters": None,
    "ignore_columns": ("time",),
    "dimension_reduction_threshold": 50,
    "export_feature_importance": None,
    "export_shap_values": None,
    "hide_table_contents": False,
    "audience_name": None,
    "foreign_key": None,
    "rowid_column": None,
}
BAD_TABLE_NAME = "db.t; drop table x"


def _config(**values: Any) -> RunConfig:
    values.setdefault("input_table", "db.customers")
    return build_config(values)


def _params(tmp_path: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the parameter table -------------------------------------------------------------------


def test_every_spec_parameter_is_declared_with_its_default() -> None:
    for name, default in SPEC_DEFAULTS.items():
        assert name in PARAMETERS_BY_NAME, name
        assert PARAMETERS_BY_NAME[name].default == default, name


def test_parameter_table_and_run_config_agree() -> None:
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    assert list(fields) == [p.name for p in PARAMETERS]
    config = RunConfig(input_table="x")
    for param in PARAMETERS:
        if param.name == "input_table":
            continue
        value = getattr(config, param.name)
        expected = Path(param.default) if param.kind == "path" else param.default
        if param.kind == "list":
            expected = tuple(param.default or ())  # a list parameter is a tuple, () for none
        assert value == expected, param.name


@pytest.mark.parametrize("param", PARAMETERS, ids=lambda p: p.name)
def test_flag_and_envvar_names(param: Any) -> None:
    assert param.flag == "--" + param.name.replace("_", "-")
    assert param.envvar == "AUTOSEG_" + param.name.upper()
    assert param.help.strip()
    if param.kind == "choice":
        assert param.default is None or param.default in param.choices


def test_defaults_with_only_an_input_table() -> None:
    config = _config()
    for name, default in SPEC_DEFAULTS.items():
        if name != "input_table":
            assert getattr(config, name) == default, name
    assert config.input_table == "db.customers"
    assert config.output_dir == Path("autoseg-output")
    assert config.model_dir == Path("autoseg-models")
    assert not config.audience_enabled
    assert not config.input_is_file


def test_config_is_frozen_and_public_dict_is_json() -> None:
    config = _config(ignore_columns="time,email", output_dir="o")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_clusters = 3  # type: ignore[misc]
    data = json.loads(json.dumps(config.public_dict()))
    assert data["ignore_columns"] == ["time", "email"]
    assert data["output_dir"] == "o"
    assert set(data) == {p.name for p in PARAMETERS}


# --- coercion --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("max_clusters", "7", 7),
        ("max_clusters", " 7 ", 7),
        ("max_clusters", 7.0, 7),
        ("force_refit", "false", False),
        ("force_refit", "0", False),
        ("force_refit", "off", False),
        ("force_refit", "YES", True),
        ("hide_table_contents", "true", True),
        ("hide_table_contents", False, False),
        ("ignore_columns", "a, b,,c ", ("a", "b", "c")),
        ("ignore_columns", ["a", " b"], ("a", "b")),
        ("ignore_columns", "", ()),
        ("output_mode", "REPLACE", "overwrite"),
        ("output_mode", "append", "append"),
        ("device", "CPU", "cpu"),
        ("output_dir", "some/dir", Path("some/dir")),
        ("input_table", "  db.t  ", "db.t"),
    ],
)
def test_values_are_coerced(name: str, raw: Any, expected: Any) -> None:
    values: dict[str, Any] = {name: raw}
    if name == "force_refit":
        values["model_name"] = "m"
    assert getattr(_config(**values), name) == expected


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"max_clusters": "many"}, r"^--max-clusters='many' is not an integer$"),
        ({"max_clusters": True}, r"--max-clusters=True is not an integer"),
        ({"max_clusters": 2.5}, r"--max-clusters=2.5 is not an integer"),
        ({"min_clusters": 1}, r"^--min-clusters=1 must be >= 2$"),
        ({"num_clusters": 1}, r"^--num-clusters=1 must be >= 2$"),
        ({"dimension_reduction_threshold": 0}, r"--dimension-reduction-threshold=0 must be >= 1"),
        ({"seed": -1}, r"--seed=-1 must be >= 0"),
        ({"force_refit": "maybe", "model_name": "m"}, r"--force-refit='maybe' is not a boolean"),
        ({"output_mode": "upsert"},
         r"^--output-mode='upsert' is not one of: overwrite, replace, append$"),
        ({"device": "tpu"}, r"--device='tpu' is not one of: auto, cpu, gpu"),
        ({"log_format": "xml"}, r"--log-format='xml' is not one of"),
        ({"min_clusters": 5, "max_clusters": 3},
         r"^--min-clusters=5 must be <= --max-clusters=3$"),
        ({"input_table": None}, r"^--input-table is required: .*AUTOSEG_INPUT_TABLE"),
        ({"input_table": ""}, r"^--input-table is required"),
        ({"input_table": BAD_TABLE_NAME},
         r"^--input-table='db\.t; drop table x' is not a valid table name"),
        ({"input_table": "a.b.c"}, r"--input-table='a\.b\.c' is not a valid table name"),
        ({"input_table": "db.1abc"}, r"--input-table='db\.1abc' is not a valid table name"),
        ({"output_table": BAD_TABLE_NAME}, r"^--output-table='db\.t; drop table x' is not a valid"),
        ({"output_table": 'db."t"'}, r"^--output-table=.* is not a valid table name"),
        ({"export_feature_importance": "x-y"},
         r"^--export-feature-importance='x-y' is not a valid table name"),
        ({"export_shap_values": "a b"}, r"^--export-shap-values='a b' is not a valid table name"),
        ({"model_name": "../evil"}, r"^--model-name='\.\./evil' must use letters, digits"),
        ({"force_refit": False}, r"^--no-force-refit needs --model-name"),
        ({"audience_name": "aud"},
         r"^audience integration needs all of .*: also give --foreign-key, --rowid-column$"),
        ({"foreign_key": "fk"}, r"also give --audience-name, --rowid-column$"),
        ({"rowid_column": "id"}, r"also give --audience-name, --foreign-key$"),
        ({"audience_name": "aud", "foreign_key": "fk"}, r"also give --rowid-column$"),
        ({"audience_name": "aud", "rowid_column": "id"}, r"also give --foreign-key$"),
        ({"foreign_key": "fk", "rowid_column": "id"}, r"also give --audience-name$"),
        ({"store": "postgres://db"},
         r"^--store='postgres://db' is not supported: use `duckdb:PATH` or `td`$"),
    ],
)
def test_invalid_values_raise_one_line_usage_errors(values: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        _config(**values)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == EXIT_USAGE == 2


def test_audience_enabled_needs_all_three() -> None:
    config = _config(audience_name="aud", foreign_key="fk", rowid_column="id", store="td",
                     input_table="shop.customers", output_table="shop.segments")
    assert config.audience_enabled


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"input_table": "shop.customers", "output_table": "shop.segments"},
      r"needs --store td"),
     ({"store": "td", "input_table": "shop.customers"}, r"needs --output-table")],
)
def test_audience_needs_td_and_an_output_table(extra: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _config(audience_name="aud", foreign_key="fk", rowid_column="id", **extra)


def test_file_inputs_skip_the_table_name_rule() -> None:
    for path in ("data/customers.parquet", "x.CSV", "a b/c.tsv.gz", "c.pq", "c.csv.gz"):
        config = _config(input_table=path)
        assert config.input_is_file and is_file_input(path)
    assert not is_file_input("db.table")
    assert not is_file_input("data.json")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("db.table_1", TableName("db", "table_1")),
        ("table", TableName(None, "table")),
        ("_x._y", TableName("_x", "_y")),
        (" Mixed.Case ", TableName("Mixed", "Case")),
    ],
)
def test_parse_table_name(value: str, expected: TableName) -> None:
    assert parse_table_name(value, "--output-table") == expected


def test_parse_table_name_default_database() -> None:
    name = parse_table_name("fi", "--export-feature-importance", default_database="db")
    assert name == TableName("db", "fi") and str(name) == "db.fi"
    assert str(TableName(None, "t")) == "t"


# --- params files ----------------------------------------------------------------------------


def test_yaml_params_file(tmp_path: Path) -> None:
    path = _params(
        tmp_path,
        "input_table: db.t\nmax-clusters: 5\nforce_refit: false\nmodel_name: m\n"
        "ignore_columns: [time, email]\noutput_mode: replace\nnum_clusters: null\n",
    )
    config = build_config({}, path)
    assert config.input_table == "db.t"
    assert config.max_clusters == 5
    assert config.force_refit is False
    assert config.ignore_columns == ("time", "email")
    assert config.output_mode == "overwrite"
    assert config.num_clusters is None


def test_json_params_file(tmp_path: Path) -> None:
    data = {"input_table": "db.t", "max_clusters": 4, "hide_table_contents": True,
            "ignore_columns": "a,b"}
    config = build_config({}, _params(tmp_path, json.dumps(data), "p.json"))
    assert (config.max_clusters, config.hide_table_contents) == (4, True)
    assert config.ignore_columns == ("a", "b")


def test_empty_params_file_is_no_parameters(tmp_path: Path) -> None:
    assert load_params_file(_params(tmp_path, "")) == {}
    assert build_config({"input_table": "db.t"}, _params(tmp_path, "# nothing\n")).max_clusters == 9


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad.yaml", "max_clusters: [1, 2\n", r"^--params: '.*bad\.yaml' is not valid YAML/JSON at "
                                              r"line \d+: fix the syntax$"),
        ("bad.json", '{"max_clusters": 3,}', r"^--params: '.*bad\.json' is not valid YAML/JSON at "
                                             r"line 1"),
        ("list.yaml", "- max_clusters\n- 3\n", r"^--params: '.*list\.yaml' must hold a mapping"),
        ("scalar.yaml", "hello\n", r"must hold a mapping of parameter names to values$"),
        ("unknown.yaml", "max_cluster: 3\n",
         r"^--params: unknown parameter 'max_cluster' in '.*unknown\.yaml'; known: input_table, "),
        ("params.yaml", "params: other.yaml\n", r"unknown parameter 'params'"),
    ],
)
def test_bad_params_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        build_config({"input_table": "db.t"}, _params(tmp_path, text, name))
    assert "\n" not in str(info.value)


def test_missing_and_unreadable_params_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--params: file '.*nope\.yaml' does not exist$"):
        build_config({"input_table": "db.t"}, tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match=r"^--params: cannot read '.*': "):
        build_config({"input_table": "db.t"}, tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("max_clusters: lots\n", r"^params file max_clusters='lots' is not an integer$"),
        ("min_clusters: 1\n", r"^params file min_clusters=1 must be >= 2$"),
        ("force_refit: maybe\nmodel_name: m\n",
         r"params file force_refit='maybe' is not a boolean"),
        ("output_mode: upsert\n", r"params file output_mode='upsert' is not one of"),
        ("output_table: {a: 1}\n", r"params file output_table=\{'a': 1\} is not a string"),
    ],
)
def test_bad_values_in_params_file_name_the_key(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        build_config({"input_table": "db.t"}, _params(tmp_path, text))


def test_params_file_alone_can_make_the_config_inconsistent(tmp_path: Path) -> None:
    path = _params(tmp_path, "min_clusters: 6\nmax_clusters: 4\n")
    with pytest.raises(UsageError, match=r"--min-clusters=6 must be <= --max-clusters=4"):
        build_config({"input_table": "db.t"}, path)


# --- precedence: given (flag or environment, merged by the CLI) > params file > default -------


@pytest.mark.parametrize(
    ("name", "file_value", "given_value", "expected_file", "expected_given"),
    [
        ("max_clusters", 5, "7", 5, 7),
        ("force_refit", False, True, False, True),
        ("hide_table_contents", True, False, True, False),
        ("ignore_columns", ["a", "b"], "c", ("a", "b"), ("c",)),
    ],
)
def test_precedence_given_over_file_over_default(
    tmp_path: Path, name: str, file_value: Any, given_value: Any, expected_file: Any,
    expected_given: Any,
) -> None:
    base = {"input_table": "db.t", "model_name": "m"}
    assert getattr(build_config(base), name) == SPEC_DEFAULTS[name]
    path = _params(tmp_path, json.dumps({name: file_value}), "p.json")
    assert getattr(build_config(base, path), name) == expected_file
    assert getattr(build_config({**base, name: given_value}, path), name) == expected_given


def test_none_in_given_means_not_given(tmp_path: Path) -> None:
    path = _params(tmp_path, "max_clusters: 4\n")
    assert build_config({"input_table": "db.t", "max_clusters": None}, path).max_clusters == 4


def test_given_value_fixes_an_inconsistent_params_file(tmp_path: Path) -> None:
    path = _params(tmp_path, "min_clusters: 6\nmax_clusters: 4\n")
    config = build_config({"input_table": "db.t", "max_clusters": 8}, path)
    assert (config.min_clusters, config.max_clusters) == (6, 8)


def test_dask_options_exclude_each_other() -> None:
    with pytest.raises(UsageError, match="either --dask local or --dask-scheduler, not both"):
        _config(dask="local", dask_scheduler="tcp://h:8786")


def test_dask_runs_take_the_table_and_model_options() -> None:
    config = _config(dask="local", output_table="db.out", prefer_stable=True, model_name="m",
                     force_refit=False)
    assert config.on_dask and config.output_table == "db.out" and config.prefer_stable
    assert config.force_refit is False


def test_dask_input_may_be_a_dataset_folder_or_url() -> None:
    config = _config(dask="local", input_table="s3://bucket/customers/")
    assert config.on_dask and config.input_table == "s3://bucket/customers/"
