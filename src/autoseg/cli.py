"""The command line: a thin shell over :func:`autoseg.pipeline.run`.

Every parameter is a ``--kebab-case`` flag and an ``AUTOSEG_*`` environment variable (the flag
wins), and may come from ``--params FILE``; :func:`autoseg.config.build_config` merges them.
Library errors become one-line messages and the documented exit codes (see
:mod:`autoseg.errors`); no traceback is shown for a user's mistake.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

# Before NumPy, scikit-learn or XGBoost load their OpenMP runtime: idle OpenMP threads sleep
# instead of spinning. Measured on a 2-core host with another process busy: 8 k-means fits took
# 5.3-10.7 s with spinning threads and 2.4-3.9 s with passive ones (a CPU-limited container is
# this case). Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402

from autoseg import __version__
from autoseg.atomic import forget_signals, note_signal
from autoseg.config import PARAMETERS, PARAMETERS_BY_NAME, RunConfig, build_config
from autoseg.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Interrupted,
    UsageError,
    classify,
)
from autoseg.logs import configure_logging

log = logging.getLogger("autoseg.cli")


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _options_epilog() -> str:
    """Every ``autoseg run`` option with its default, listed in ``autoseg --help``.

    Returns
    -------
    str
        A click paragraph (``\\b`` keeps one option per line) naming each flag and default.
    """
    lines = [
        "\b",
        "Options of `autoseg run` (each is also an AUTOSEG_<NAME> environment variable and a",
        "key of a --params YAML/JSON file; flag > environment > params file > default):",
    ]
    for param in PARAMETERS:
        flag = param.flag
        if param.kind == "bool":
            flag = f"{param.flag}/{_NEGATIVE_FLAGS.get(param.name, '--no-' + param.flag[2:])}"
        lines.append(f"  {flag} [default: {_default_text(param.default)}]")
    lines.append("  --params FILE [default: none]")
    return "\n".join(lines)


# Negative forms of boolean flags that do not read `--no-<name>`.
_NEGATIVE_FLAGS = {"hide_table_contents": "--show-table-contents"}

app = typer.Typer(
    name="autoseg",
    help=(
        "Segment any table with k-means, pick k by mean silhouette, and write the labelled "
        "table, a run summary and a saved model. Exit codes: 0 ok, 1 internal error, "
        "2 usage, 3 input data, 4 external service, 5 local file system, 130 interrupted."
    ),
    epilog=_options_epilog(),
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


def _opt(name: str, negative: str | None = None) -> Any:
    """A typer option for parameter ``name``: flag, env var and help from the parameter table."""
    param = PARAMETERS_BY_NAME[name]
    decl = param.flag
    if param.kind == "bool":
        negative = negative or _NEGATIVE_FLAGS.get(name, "--no-" + param.flag[2:])
        decl = f"{param.flag}/{negative}"
    return typer.Option(
        None, decl, envvar=param.envvar, show_default=False, show_envvar=True,
        help=f"{param.help} [default: {_default_text(param.default)}]",
    )


_PARAMS_OPTION: Any = typer.Option(
    None, "--params", envvar="AUTOSEG_PARAMS", show_envvar=True, show_default=False,
    help="YAML or JSON file of parameters (keys as the option names with underscores); "
    "flags and environment variables take precedence. [default: none]",
)


@app.command("run")
def run_command(
    input_table: str = _opt("input_table"),
    output_table: str = _opt("output_table"),
    model_name: str = _opt("model_name"),
    force_refit: bool = _opt("force_refit"),
    output_mode: str = _opt("output_mode"),
    min_clusters: int = _opt("min_clusters"),
    max_clusters: int = _opt("max_clusters"),
    num_clusters: int = _opt("num_clusters"),
    ignore_columns: str = _opt("ignore_columns"),
    dimension_reduction_threshold: int = _opt("dimension_reduction_threshold"),
    min_cluster_size: str = _opt("min_cluster_size"),
    prefer_stable: bool = _opt("prefer_stable"),
    stability_runs: int = _opt("stability_runs"),
    export_feature_importance: str = _opt("export_feature_importance"),
    export_shap_values: str = _opt("export_shap_values"),
    export_segment_rules: str = _opt("export_segment_rules"),
    segment_rules: bool = _opt("segment_rules"),
    hide_table_contents: bool = _opt("hide_table_contents"),
    audience_name: str = _opt("audience_name"),
    foreign_key: str = _opt("foreign_key"),
    rowid_column: str = _opt("rowid_column"),
    store: str = _opt("store"),
    lock_timeout: int = _opt("lock_timeout"),
    td_engine: str = _opt("td_engine"),
    cdp_endpoint: str = _opt("cdp_endpoint"),
    output_dir: str = _opt("output_dir"),
    model_dir: str = _opt("model_dir"),
    seed: int = _opt("seed"),
    device: str = _opt("device"),
    kmeans_restarts: int = _opt("kmeans_restarts"),
    search_sample_size: int = _opt("search_sample_size"),
    silhouette_exact_max_rows: int = _opt("silhouette_exact_max_rows"),
    silhouette_sample_size: int = _opt("silhouette_sample_size"),
    log_format: str = _opt("log_format"),
    dask: str = _opt("dask"),
    dask_scheduler: str = _opt("dask_scheduler"),
    dask_workers: int = _opt("dask_workers"),
    dask_output: str = _opt("dask_output"),
    params: Path = _PARAMS_OPTION,
) -> None:
    """Segment a table: read, prepare, choose k, assign, write outputs."""
    given = {k: v for k, v in locals().items() if k != "params"}
    config = build_config(given, params)
    _execute(config)


@app.command("demo")
def demo_command(
    store: str = typer.Option(
        "duckdb:autoseg.duckdb", "--store", envvar="AUTOSEG_STORE", show_envvar=True,
        help="DuckDB file the sample table is written to.",
    ),
    output_dir: str = typer.Option("autoseg-output", "--output-dir", envvar="AUTOSEG_OUTPUT_DIR",
                                   show_envvar=True, help="Directory for the run summary."),
    model_dir: str = typer.Option("autoseg-models", "--model-dir", envvar="AUTOSEG_MODEL_DIR",
                                  show_envvar=True, help="Directory for saved models."),
    rows: int = typer.Option(5000, "--rows", min=20, help="Rows of the sample table."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed."),
    log_format: str = typer.Option("text", "--log-format", help="`text` or `json` log lines."),
) -> None:
    """Create a sample customer table in the embedded DuckDB and segment it end to end."""
    from autoseg.demo import DEMO_MODEL, DEMO_OUTPUT_TABLE, DEMO_TABLE, make_customers, to_arrow
    from autoseg.io import TableWrite, open_store
    from autoseg.names import parse_table_name

    config = build_config(
        {
            "input_table": DEMO_TABLE, "output_table": DEMO_OUTPUT_TABLE,
            "model_name": DEMO_MODEL, "store": store, "output_dir": output_dir,
            "model_dir": model_dir, "seed": seed, "log_format": log_format,
            "ignore_columns": "time",
        }
    )
    configure_logging(config.log_format)
    frame, _ = make_customers(rows, seed=seed + 7)
    sample_store = open_store(config.store)
    try:
        sample_store.write_tables(
            [TableWrite(parse_table_name(DEMO_TABLE, "demo"), to_arrow(frame), "overwrite")]
        )
    finally:
        sample_store.close()
    typer.echo(f"sample table {DEMO_TABLE} ({rows} rows) written to {config.store}")
    _execute(config)


@app.command("version")
def version_command() -> None:
    """Print the version."""
    typer.echo(__version__)


def _execute_on_dask(config: RunConfig) -> None:
    """Run on a Dask cluster (autoseg[dask]); the summary is printed from the result dict."""
    try:
        from autoseg.dask_run import client_from_options, default_output_path, run_on_dask
    except ImportError as exc:
        raise UsageError(
            f"--dask/--dask-scheduler need Dask ({exc.name} is not installed): "
            "pip install 'autoseg[dask]'"
        ) from None
    configure_logging(config.log_format)
    client = client_from_options(config.dask_scheduler, config.dask == "local",
                                 config.dask_workers)
    try:
        # With --output-table the rows go to the table; a dataset only when asked for.
        output = config.dask_output or (None if config.output_table
                                        else default_output_path(config.input_table))
        summary = run_on_dask(config, client, input_path=config.input_table,
                              output_path=output, environ=os.environ)
    finally:
        cluster = getattr(client, "cluster", None)  # None when connected to a remote scheduler
        client.close()
        if cluster is not None:
            cluster.close()
    from autoseg.summary_console import print_summary

    print_summary(summary)


def _execute(config: RunConfig) -> None:
    from autoseg.pipeline import run
    from autoseg.summary_console import print_run_summary

    if config.on_dask:
        _execute_on_dask(config)
        return

    interactive = sys.stderr.isatty() and config.log_format == "text"
    # On a terminal a spinner names the running stage and only warnings are logged; in a
    # container or a pipe every stage is a plain (or JSON) log line instead.
    configure_logging(config.log_format, logging.WARNING if interactive else logging.INFO)
    if interactive:
        from rich.console import Console

        with Console(stderr=True).status("autoseg: starting") as status:
            result = run(config, on_stage=lambda name: status.update(f"autoseg: {name}"),
                         environ=os.environ)
    else:
        result = run(config, environ=os.environ)
    print_run_summary(result)


def _raise_interrupted(signum: int, _frame: Any) -> None:
    note_signal(signum)  # in case the exception below is swallowed (inside a log write, say)
    raise Interrupted(f"stopped by signal {signal.Signals(signum).name}; nothing was written")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and turn errors into exit codes.

    The exit code and message of every error come from :func:`autoseg.errors.classify`; only
    an error it calls internal (a bug) is logged with its traceback.
    """
    signal.signal(signal.SIGTERM, _raise_interrupted)
    forget_signals()
    try:
        # Without standalone mode click does not exit: it returns the code of an Exit it
        # caught, and turns Ctrl-C (KeyboardInterrupt) into Exit(130).
        returned = app(args=argv, standalone_mode=False, prog_name="autoseg")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # its message is the help text
            typer.echo(exc.format_message())
            sys.exit(0)
        print(f"autoseg: error: {exc.format_message()} (see autoseg --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except typer.Abort:
        print("autoseg: error: interrupted; nothing was written", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every error ends in one line and a code
        code, message = classify(exc)
        if code == EXIT_INTERNAL:
            log.error("internal error", exc_info=exc)
        print(f"autoseg: error: {message}", file=sys.stderr)
        sys.exit(code)
    if returned == EXIT_INTERRUPTED:
        print("autoseg: error: interrupted; nothing was written", file=sys.stderr)
    if isinstance(returned, int) and returned:
        sys.exit(returned)
