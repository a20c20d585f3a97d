"""The run configuration: every parameter's rules written as data and checked in one place.

A :class:`RunConfig` is built once at the CLI edge by :func:`build_config` from the values given
as flags or environment variables (already merged by the CLI: flag wins over environment), the
params file, and the defaults, in that order of precedence. The library never reads ``sys.argv``
or the environment itself.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from autoseg.backend import DEVICES
from autoseg.errors import UsageError
from autoseg.names import parse_table_name, validate_td_table_name

OUTPUT_MODES = {"overwrite": "overwrite", "replace": "overwrite", "append": "append"}
LOG_FORMATS = ("text", "json")
ENV_PREFIX = "AUTOSEG_"
FILE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".csv.gz", ".tsv.gz")

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Parameter:
    """One run parameter: its name, type, default, help and validity rule."""

    name: str
    kind: str  # "str", "int", "bool", "list", "choice", "path"
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--input-table``."""
        return "--" + self.name.replace("_", "-")

    @property
    def envvar(self) -> str:
        """The environment variable, e.g. ``AUTOSEG_INPUT_TABLE``."""
        return ENV_PREFIX + self.name.upper()


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("input_table", "str", None,
              "Table to cluster: `dbname.table_name` in --store, or a .parquet/.csv path."),
    Parameter("output_table", "str", None,
              "Where to write the input rows plus `cluster_id` (`dbname.table_name`); "
              "none writes no table."),
    Parameter("model_name", "str", None,
              "Name under which the fitted model is saved in --model-dir (and reused)."),
    Parameter("force_refit", "bool", True,
              "Always fit; --no-force-refit reuses the saved model of --model-name and only "
              "assigns clusters."),
    Parameter("output_mode", "choice", "overwrite",
              "`overwrite` (alias `replace`) or `append`, for every table written.",
              choices=tuple(OUTPUT_MODES)),
    Parameter("min_clusters", "int", 2, "Smallest k tried.", minimum=2),
    Parameter("max_clusters", "int", 9, "Largest k tried.", minimum=2),
    Parameter("num_clusters", "int", None, "Fixed k; skips the search.", minimum=2),
    Parameter("ignore_columns", "list", ("time",),
              "Comma-separated columns left out of clustering (still copied to the output)."),
    Parameter("keep_columns", "list", None,
              "Comma-separated columns always clustered on, even when independent of every "
              "other column (which are otherwise left out: they share no segment structure)."),
    Parameter("dimension_reduction_threshold", "int", 50,
              "Project the prepared features to this many PCA components when there are more.",
              minimum=1),
    Parameter("min_cluster_size", "str", None,
              "Smallest allowed cluster, a row count (500) or a share of rows (0.02); a k "
              "producing a smaller cluster is rejected during the search."),
    Parameter("prefer_stable", "bool", False,
              "Pick the most stable k (subsample agreement) among those within 0.02 of the "
              "best silhouette."),
    Parameter("stability_runs", "int", 3,
              "Subsample refits per k used to measure stability (0 skips it).", minimum=0),
    Parameter("export_feature_importance", "str", None,
              "`[dbname.]table_name` for the feature-importance table."),
    Parameter("export_shap_values", "str", None,
              "`[dbname.]table_name` for the per-cluster SHAP table."),
    Parameter("export_segment_rules", "str", None,
              "`[dbname.]table_name` for the readable rule of every cluster."),
    Parameter("segment_rules", "bool", False,
              "With audience integration, also create one segment per cluster from its "
              "readable rule (editable in the segment builder)."),
    Parameter("hide_table_contents", "bool", False,
              "Never print or render row-level values of the input, only aggregates."),
    Parameter("audience_name", "str", None, "Master (parent) segment to attach the result to."),
    Parameter("foreign_key", "str", None,
              "Key column of the master segment that joins to --rowid-column."),
    Parameter("rowid_column", "str", None,
              "Primary key column of the input table; join key of the attribute table."),
    Parameter("store", "str", "duckdb:autoseg.duckdb",
              "Where `dbname.table_name` names live: `duckdb:PATH`, or `td` for Treasure Data "
              "(TD_API_KEY and TD_API_SERVER from the environment)."),
    Parameter("lock_timeout", "int", 1800,
              "Seconds a run waits for a DuckDB store file that another process has locked "
              "(another run writing to it) before it fails; 0 fails at once.", minimum=0),
    Parameter("td_engine", "choice", "presto",
              "Treasure Data engine that reads the input: `presto` or `hive`.",
              choices=("presto", "hive")),
    Parameter("cdp_endpoint", "str", None,
              "CDP API endpoint for the audience integration; derived from TD_API_SERVER when "
              "not given."),
    Parameter("output_dir", "path", "autoseg-output",
              "Directory for the run summary and report."),
    Parameter("model_dir", "path", "autoseg-models", "Directory for saved models."),
    Parameter("seed", "int", 0, "Random seed for sampling and k-means.", minimum=0),
    Parameter("device", "choice", "auto",
              "`auto` (GPU when usable, else CPU), `cpu` or `gpu`.", choices=DEVICES),
    Parameter("kmeans_restarts", "int", 5,
              "k-means++ starts per k; the best is refined by centroid swaps.", minimum=1),
    Parameter("search_sample_size", "int", 20_000,
              "Rows the k search runs on when the table has more than "
              "--silhouette-exact-max-rows; the chosen k is then fitted on all rows, "
              "warm-started from the sample's centroids.", minimum=100),
    Parameter("silhouette_exact_max_rows", "int", 50_000,
              "Up to this many searched rows, the k that sampled silhouettes cannot separate "
              "are scored exactly; beyond, the estimate decides.",
              minimum=2),
    Parameter("silhouette_sample_size", "int", 20_000,
              "Most rows whose silhouette is computed (against all rows) when estimating it; "
              "the k search starts with 2,000 and adds rows only while the leading k are too "
              "close to call.",
              minimum=100),
    Parameter("log_format", "choice", "text", "`text` or `json` log lines.", choices=LOG_FORMATS),
    Parameter("dask", "choice", None,
              "`local`: run on a Dask LocalCluster started for the run (input: a partitioned "
              "Parquet dataset; output: --dask-output and/or --output-table).",
              choices=("local",)),
    Parameter("dask_scheduler", "str", None,
              "Address of an existing Dask scheduler (tcp://host:8786) to run on."),
    Parameter("dask_workers", "int", None, "Workers of the --dask local cluster.", minimum=1),
    Parameter("dask_output", "str", None,
              "Dataset folder or URL for the labelled rows of a Dask run (default: the input "
              "path + `-clustered`, or none when --output-table is given)."),
)
PARAMETERS_BY_NAME: dict[str, Parameter] = {p.name: p for p in PARAMETERS}


# Python types of the parameter kinds: RunConfig's fields are derived from PARAMETERS.
_KIND_TYPES: dict[str, Any] = {
    "str": str, "int": int, "bool": bool, "list": tuple[str, ...], "choice": str, "path": Path,
}


def _field_default(param: Parameter) -> Any:
    """The dataclass default of a parameter (paths and lists converted to their types)."""
    if param.kind == "path":
        return field(default_factory=lambda: Path(param.default))
    if param.kind == "list":
        return tuple(param.default or ())
    return param.default


class _RunConfigMethods:
    """What a run asks of its configuration beyond the parameters themselves."""

    @property
    def on_dask(self) -> bool:
        """Whether the run goes to a Dask cluster (``--dask local`` or ``--dask-scheduler``)."""
        return bool(self.dask or self.dask_scheduler)

    @property
    def input_is_file(self) -> bool:
        """Whether ``input_table`` names a Parquet or CSV file rather than a table."""
        return is_file_input(self.input_table)

    def min_cluster_rows(self, n_rows: int) -> int:
        """``min_cluster_size`` as a row count for a table of ``n_rows`` rows (0: no limit)."""
        if not self.min_cluster_size:
            return 0
        value = float(self.min_cluster_size)
        return int(np.ceil(value * n_rows)) if value < 1 else int(value)

    @property
    def audience_enabled(self) -> bool:
        """Whether audience integration runs (all three of its parameters are given)."""
        return bool(self.audience_name and self.foreign_key and self.rowid_column)

    def public_dict(self) -> dict[str, Any]:
        """Parameters as plain JSON-able values (no secrets live in the config)."""
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["model_dir"] = str(self.model_dir)
        data["ignore_columns"] = list(self.ignore_columns)
        data["keep_columns"] = list(self.keep_columns)
        return data


# The parameter table is the only list of the parameters: RunConfig is derived from it, as are
# the CLI's options (cli.py) and the demo's defaults. ``input_table`` is required; every other
# field has the table's default.
def _config_field(param: Parameter) -> tuple[str, Any] | tuple[str, Any, Any]:
    """One RunConfig field: name, type (optional when the default is none) and default."""
    kind = _KIND_TYPES[param.kind]
    if param.name == "input_table":
        return (param.name, kind)
    return (param.name, kind if param.default is not None else kind | None, _field_default(param))


RunConfig = dataclasses.make_dataclass(
    "RunConfig", [_config_field(p) for p in PARAMETERS], bases=(_RunConfigMethods,),
    frozen=True,
)
RunConfig.__module__ = __name__  # so it pickles (Dask) and shows as autoseg.config.RunConfig
RunConfig.__doc__ = "Every setting of one run, validated. Build it with :func:`build_config`."


def is_file_input(value: str) -> bool:
    """Whether an ``input_table`` value is a file path (``.parquet``, ``.csv``, ``.tsv``)."""
    lowered = value.lower()
    return lowered.endswith(FILE_SUFFIXES)


def load_params_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON params file whose keys are parameter names.

    Raises
    ------
    UsageError
        When the file is missing, unreadable, not a mapping, or has unknown keys.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--params: file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise UsageError(f"--params: cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        is_json = str(path).lower().endswith(".json")
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}"
        elif isinstance(exc, json.JSONDecodeError):
            where = f" at line {exc.lineno}"
        raise UsageError(
            f"--params: {str(path)!r} is not valid YAML/JSON{where}: fix the syntax"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"--params: {str(path)!r} must hold a mapping of parameter names to values"
        )
    normalized = {str(k).replace("-", "_").lower(): v for k, v in data.items()}
    unknown = sorted(set(normalized) - set(PARAMETERS_BY_NAME))
    if unknown:
        raise UsageError(
            f"--params: unknown parameter {unknown[0]!r} in {str(path)!r}; known: "
            + ", ".join(p.name for p in PARAMETERS)
        )
    return normalized


def _coerce(param: Parameter, value: Any, source: str) -> Any:
    """Convert a raw value to the parameter's type, naming ``source`` in errors."""
    if value is None:
        return None
    where = f"{source} {param.name}" if source == "params file" else param.flag

    def fail(expected: str) -> UsageError:
        return UsageError(f"{where}={value!r} is not {expected}")

    converters: dict[str, Callable[[Any], Any]] = {}

    def to_int(v: Any) -> int:
        if isinstance(v, bool):
            raise fail("an integer")
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        try:
            return int(str(v).strip())
        except ValueError:
            raise fail("an integer") from None

    def to_bool(v: Any) -> bool:
        if isinstance(v, bool):
            return v
        text = str(v).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise fail("a boolean (true/false)")

    def to_list(v: Any) -> tuple[str, ...]:
        items = [str(x) for x in v] if isinstance(v, list | tuple) else str(v).split(",")
        return tuple(i.strip() for i in items if i.strip())

    def to_choice(v: Any) -> str:
        text = str(v).strip().lower()
        if text not in param.choices:
            raise UsageError(
                f"{where}={value!r} is not one of: {', '.join(param.choices)}"
            )
        return text

    def to_str(v: Any) -> str:
        if isinstance(v, dict | list):
            raise fail("a string")
        return str(v).strip()

    converters.update(
        int=to_int, bool=to_bool, list=to_list, choice=to_choice, str=to_str,
        path=lambda v: Path(str(v)),
    )
    converted = converters[param.kind](value)
    if param.minimum is not None and converted < param.minimum:
        raise UsageError(f"{where}={converted} must be >= {param.minimum}")
    return converted


def build_config(given: Mapping[str, Any], params_file: Path | None = None) -> RunConfig:
    """Merge flag/environment values, the params file and defaults into a checked config.

    Parameters
    ----------
    given
        Values from flags or environment variables, keyed by parameter name; ``None`` means
        "not given". Flags already took precedence over the environment.
    params_file
        Optional YAML/JSON file of parameter values (lower precedence than ``given``).

    Returns
    -------
    RunConfig
        The validated configuration.

    Raises
    ------
    UsageError
        For any invalid, missing or inconsistent parameter.
    """
    from_file = load_params_file(params_file) if params_file else {}
    values: dict[str, Any] = {}
    for param in PARAMETERS:
        raw = given.get(param.name)
        if raw is not None:
            values[param.name] = _coerce(param, raw, "flag")
        elif from_file.get(param.name) is not None:
            values[param.name] = _coerce(param, from_file[param.name], "params file")
        else:
            values[param.name] = param.default
    for name in ("output_dir", "model_dir"):
        values[name] = Path(values[name])
    values["output_mode"] = OUTPUT_MODES[values["output_mode"]]
    values["ignore_columns"] = tuple(values["ignore_columns"])
    values["keep_columns"] = tuple(values["keep_columns"] or ())
    _check_consistency(values)
    return RunConfig(**values)


def _check_consistency(values: dict[str, Any]) -> None:
    """Rules that involve more than one parameter, checked before any work starts."""
    if not values.get("input_table"):
        raise UsageError(
            "--input-table is required: give `dbname.table_name` or a .parquet/.csv path "
            "(or set AUTOSEG_INPUT_TABLE)"
        )
    if values["min_clusters"] > values["max_clusters"]:
        raise UsageError(
            f"--min-clusters={values['min_clusters']} must be <= "
            f"--max-clusters={values['max_clusters']}"
        )
    both = [c for c in values["keep_columns"] if c in values["ignore_columns"]]
    if both:
        default = " (--ignore-columns is `time` unless given)" if both[0] == "time" else ""
        raise UsageError(
            f"--keep-columns and --ignore-columns both name {both[0]!r}{default}: remove it "
            "from one"
        )
    on_dask = bool(values["dask"] or values["dask_scheduler"])
    if on_dask:
        # the input is a Parquet dataset (folder or URL), not a table name
        _check_dask(values)
    elif not is_file_input(values["input_table"]):
        parse_table_name(values["input_table"], "--input-table")
    if values["output_table"]:
        parse_table_name(values["output_table"], "--output-table")
    for name in ("export_feature_importance", "export_shap_values", "export_segment_rules"):
        if values[name]:
            parse_table_name(values[name], PARAMETERS_BY_NAME[name].flag)
    if values["min_cluster_size"]:
        _check_min_cluster_size(values["min_cluster_size"])
    if values["model_name"] and not MODEL_NAME_RE.match(values["model_name"]):
        raise UsageError(
            f"--model-name={values['model_name']!r} must use letters, digits, '_', '-' and '.'"
            " only (it names a folder)"
        )
    if not values["force_refit"] and not values["model_name"]:
        raise UsageError("--no-force-refit needs --model-name: the saved model to reuse")
    audience = ("audience_name", "foreign_key", "rowid_column")
    given = [n for n in audience if values[n]]
    if given and len(given) < 3:
        missing = [PARAMETERS_BY_NAME[n].flag for n in audience if not values[n]]
        raise UsageError(
            "audience integration needs all of --audience-name, --foreign-key and "
            f"--rowid-column: also give {', '.join(missing)}"
        )
    if values["prefer_stable"] and values["stability_runs"] < 2:
        raise UsageError(
            f"--prefer-stable needs --stability-runs >= 2 (got {values['stability_runs']}): "
            "stability compares refits with each other"
        )
    if values["stability_runs"] == 1:
        raise UsageError("--stability-runs=1 cannot measure agreement: use 0 (off) or >= 2")
    if values["segment_rules"] and not given:
        raise UsageError(
            "--segment-rules creates CDP segments: also give --audience-name, --foreign-key "
            "and --rowid-column"
        )
    store = values["store"]
    if store != "td" and not store.startswith("duckdb:"):
        raise UsageError(f"--store={store!r} is not supported: use `duckdb:PATH` or `td`")
    if store == "td":
        _check_td_names(values, input_is_table=not on_dask)
    if given and store != "td":
        raise UsageError(
            "audience integration (--audience-name) needs --store td: the attribute table "
            "must live in Treasure Data"
        )
    if given and not values["output_table"]:
        raise UsageError(
            "audience integration needs --output-table: the segments are built on that table"
        )


def _check_td_names(values: dict[str, Any], input_is_table: bool = True) -> None:
    """Treasure Data names need a database and TD's characters; checked before any call."""
    output_db = None
    if values["output_table"]:
        output = parse_table_name(values["output_table"], "--output-table")
        validate_td_table_name(output, "--output-table")
        output_db = output.database
    if input_is_table and not is_file_input(values["input_table"]):
        validate_td_table_name(parse_table_name(values["input_table"], "--input-table"),
                               "--input-table")
    for name in ("export_feature_importance", "export_shap_values", "export_segment_rules"):
        if values[name]:
            flag = PARAMETERS_BY_NAME[name].flag
            validate_td_table_name(parse_table_name(values[name], flag, output_db), flag)


def _check_min_cluster_size(text: str) -> None:
    """A positive row count or a share strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 < value < 1 or (value >= 1 and value.is_integer())):
        raise UsageError(
            f"--min-cluster-size={text!r} must be a row count (e.g. 500) or a share of rows "
            "between 0 and 1 (e.g. 0.02)"
        )


def _check_dask(values: dict[str, Any]) -> None:
    """A Dask run reads a Parquet dataset: the cluster options exclude each other."""
    if values["dask"] and values["dask_scheduler"]:
        raise UsageError("give either --dask local or --dask-scheduler, not both")
