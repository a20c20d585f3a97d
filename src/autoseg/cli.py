"""The command line: a thin shell over :func:`autoseg.pipeline.run`.

Every parameter is a ``--kebab-case`` flag and an ``AUTOSEG_*`` environment variable (the flag
wins), and may come from ``--params FILE``; :func:`autoseg.config.build_config` merges them.
Library errors become one-line messages and the documented exit codes (see
:mod:`autoseg.errors`); no traceback is shown for a user's mistake.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

# Before NumPy, scikit-learn or XGBoost load (typer loads none of them): importing it sets
# passive OpenMP threads and no huge-page requests (see the module for what each measured).
import autoseg.process_env  # noqa: F401
from autoseg import __version__
from autoseg.atomic import forget_signals, note_signal
from autoseg.config import PARAMETERS, PARAMETERS_BY_NAME, RunConfig, build_config
from autoseg.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Interrupted,
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
        "2 usage, 3 input data, 4 external service, 5 local file system, 6 out of memory, "
        "130 interrupted."
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


# The type typer parses each parameter kind as; config.build_config converts and checks it.
_CLI_TYPES: dict[str, type] = {
    "str": str, "int": int, "bool": bool, "list": str, "choice": str, "path": str,
}


def _with_parameter_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` one typer option per entry of the parameter table, plus --params.

    The parameter table (``config.PARAMETERS``) is the only list of the parameters; the
    command's signature is derived from it, so a new parameter is a new flag, environment
    variable and params-file key at once.
    """
    parameters = [
        inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=_opt(p.name),
                          annotation=_CLI_TYPES[p.kind])
        for p in PARAMETERS
    ]
    parameters.append(inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY,
                                        default=_PARAMS_OPTION, annotation=Path))
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


@app.command("run")
@_with_parameter_options
def run_command(**given: Any) -> None:
    """Segment a table: read, prepare, choose k, assign, write outputs."""
    params = given.pop("params", None)
    config = build_config(given, params)
    _execute(config)


def _demo_option(name: str, help_text: str) -> Any:
    """A demo option with the run parameter's flag, environment variable and default."""
    param = PARAMETERS_BY_NAME[name]
    return typer.Option(param.default, param.flag, envvar=param.envvar, show_envvar=True,
                        help=help_text)


@app.command("demo")
def demo_command(
    store: str = _demo_option("store", "DuckDB file the sample table is written to."),
    output_dir: str = _demo_option("output_dir", "Directory for the run summary."),
    model_dir: str = _demo_option("model_dir", "Directory for saved models."),
    rows: int = typer.Option(5000, "--rows", min=20, help="Rows of the sample table."),
    seed: int = _demo_option("seed", "Random seed."),
    log_format: str = _demo_option("log_format", "`text` or `json` log lines."),
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


def _execute(config: RunConfig) -> None:
    """Run (on one machine or on Dask: the pipeline picks the engine) and print the summary."""
    from autoseg.pipeline import run
    from autoseg.summary_console import print_run_summary

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


def console_main(argv: list[str] | None = None) -> None:
    """The ``autoseg`` command (and ``python -m autoseg``): :func:`main`, then a quick exit.

    When :func:`main` is done, every output is written and closed. The ``atexit`` handlers
    run (logging's flush among them), the standard streams are flushed, and the process ends
    without tearing the interpreter down: freeing the run's millions of Python objects one by
    one, module by module, took 0.36-0.7 s after a 1M-row run (``benchmarks/whole_run.py``),
    while the operating system frees the memory at once. Code that runs :func:`main` in its
    own process (tests, a notebook) is not ended this way, nor is a run under a profiler or
    a debugger (``python -m cProfile -m autoseg ...`` writes its profile after the run).
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        main(argv)
        return
    code: int = 0
    try:
        main(argv)
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:  # sys.exit("message"): printed, status 1
            print(exc.code, file=sys.stderr)
            code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing left to tell
            stream.flush()
    os._exit(code)
