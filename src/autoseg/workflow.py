"""autoseg as a Digdag / Treasure Workflow ``py>`` task: ``py>: autoseg.workflow.run``.

Digdag's Python runner (``digdag-standards/.../py/runner.py``) imports this module by its
dotted name, injects a ``digdag`` module (``digdag.env.params``, ``digdag.env.store()``,
``digdag.env.export()``) and calls :func:`run`. Because :func:`run` takes ``**params``, the
runner passes it *every* task parameter (the workflow's ``_export`` values, ``-p`` values, the
task's own keys and Digdag's built-ins such as ``session_time``); only the names of
:data:`autoseg.config.PARAMETERS` are read, the others are ignored. ``store`` defaults to
``td`` here. ``AUTOSEG_*`` environment variables are not read (an image's defaults must not
override the workflow); only ``TD_API_KEY`` / ``TD_API_SERVER`` come from the environment,
which a task sets with ``_env``.

After a run the task stores a small result for later tasks (``${autoseg.chosen_k}`` ...)::

    digdag.env.store({"autoseg": {"chosen_k": ..., "output_table": ..., "cluster_sizes": [...],
                                  "mean_silhouette": ..., "summary_path": ...}})

How a failure reaches the operator, and why it is raised rather than exited: the runner catches
``SystemExit`` and replaces it with "Failed to call python command with code:N Possible cause:
Invalid python module call, duplicate module name with standard library" (wrong and unhelpful),
while any other exception's ``str`` becomes the task's error message ("Python command failed
with code 1 / Error messages from python: <str> (<class>)"). So a user error (an
:class:`~autoseg.errors.AutosegError`) is raised again as :class:`TaskFailed`, whose ``str`` is
the CLI's one line with the flags spelled as task parameters and the CLI's exit code appended
(``autoseg: error: max_clusters='x' is not an integer [exit code 2: usage]``), raised from
:func:`run`'s own frame with no chained cause, so the traceback the runner attaches is two
frames long and holds none of autoseg's internals. Under the runner, a ``sys.excepthook``
prints just that line on stderr (the workflow log) instead of Python's traceback. The process
exits 1 (the task fails); the category (the CLI's exit code, see :mod:`autoseg.errors`) is in
the message and in :attr:`TaskFailed.exit_code`. Bugs (any other exception) keep their full
traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType, TracebackType
from typing import Any

# As in the CLI, before NumPy / scikit-learn load (see autoseg.process_env).
import autoseg.process_env  # noqa: F401
from autoseg.config import PARAMETERS, RunConfig, build_config
from autoseg.errors import EXIT_INTERNAL, Interrupted, UsageError, classify
from autoseg.logs import configure_logging

log = logging.getLogger("autoseg.workflow")

#: Key under which the result is stored: ``${autoseg.chosen_k}``.
STORE_KEY = "autoseg"
#: Defaults that differ from the CLI's: a workflow task reads and writes Treasure Data.
WORKFLOW_DEFAULTS: dict[str, Any] = {"store": "td"}
_CATEGORY = {1: "internal", 2: "usage", 3: "input data", 4: "external service",
             5: "local file system", 130: "interrupted"}


class TaskFailed(Exception):
    """A run stopped for a reason the user can fix; ``str()`` is the one-line message.

    Parameters
    ----------
    message
        The CLI's line, ``autoseg: error: ...``.
    exit_code
        The exit code the CLI would have used (see :mod:`autoseg.errors`).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run(**params: Any) -> dict[str, Any]:
    """Run one segmentation with the task's parameters; the ``py>`` entry point.

    Parameters
    ----------
    **params
        Task parameters. Those named like the params file's keys (every name in
        :data:`autoseg.config.PARAMETERS`) configure the run; ``store`` defaults to ``td``.
        Any other key (Digdag's own variables) is ignored.

    Returns
    -------
    dict
        The stored result: ``chosen_k``, ``output_table``, ``cluster_sizes``,
        ``mean_silhouette`` (``None`` when a saved model was reused), ``summary_path``.
        Under Digdag it is also stored as ``autoseg`` (``${autoseg.chosen_k}``).

    Raises
    ------
    TaskFailed
        For every user-fixable problem (a bad parameter, unusable input, a failing service),
        with the CLI's one-line message; nothing is stored.
    """
    env = _digdag_env()
    try:
        with _sigterm_interrupts():
            result = _run(params, os.environ)
    except Exception as exc:
        # The CLI's mapping (autoseg.errors.classify); a bug keeps its traceback.
        code, message = classify(exc)
        if code == EXIT_INTERNAL:
            raise
        category = _CATEGORY.get(code, "error")
        failure = TaskFailed(f"autoseg: error: {_workflow_wording(message)} "
                             f"[exit code {code}: {category}]", code)
    else:
        if env is not None:
            env.store({STORE_KEY: result})
        log.info("stored %s: chosen_k=%s output_table=%s", STORE_KEY, result["chosen_k"],
                 result["output_table"])
        return result
    if env is not None:
        _install_excepthook()
    # Raised outside the except block: no chained context, a one-frame traceback of ours.
    raise failure


def workflow_config(params: Mapping[str, Any]) -> RunConfig:
    """The validated run configuration for a task's parameters.

    Parameters
    ----------
    params
        Task parameters; keys that are not autoseg parameters are ignored.

    Returns
    -------
    RunConfig
        Built by :func:`autoseg.config.build_config`, the CLI's validation.

    Raises
    ------
    UsageError
        For a missing, invalid or inconsistent parameter.
    """
    given = {p.name: params.get(p.name) for p in PARAMETERS}
    for name, default in WORKFLOW_DEFAULTS.items():
        if given[name] is None:
            given[name] = default
    if given["input_table"] is None or not str(given["input_table"]).strip():
        # Checked here: the CLI's message suggests AUTOSEG_INPUT_TABLE, which a task ignores.
        raise UsageError("input_table is required: give the task parameter input_table "
                         "(`dbname.table_name`), e.g. in _export or with -p")
    config = build_config(given)
    if config.on_dask:
        raise UsageError("dask and dask_scheduler are not supported in a py> task: run "
                         "`autoseg run` with its Dask options in a container task instead")
    return config


def _run(params: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Build the config, run the pipeline, and read the small result from the summary."""
    from autoseg.pipeline import run as run_pipeline

    config = workflow_config(params)
    configure_logging(config.log_format, logging.INFO)
    result = run_pipeline(config, environ=environ)
    # The summary file's format is stable; the in-memory summary may change shape.
    summary = json.loads(result.summary_path.read_text(encoding="utf-8"))
    scores = [c.get("silhouette") for c in summary.get("k_search") or []
              if c.get("k") == result.chosen_k]
    silhouette = scores[0] if scores else None
    return {
        "chosen_k": int(result.chosen_k),
        "output_table": result.output_table,
        "cluster_sizes": [int(s) for s in summary.get("cluster_sizes", [])],
        "mean_silhouette": None if silhouette is None else float(silhouette),
        "summary_path": str(result.summary_path.resolve()),
    }


def _digdag_env() -> Any | None:
    """``digdag.env`` when the Digdag runner injected its module, else ``None``.

    Only ``sys.modules`` is looked at: the runner puts the module there, and importing an
    unrelated ``digdag`` package from the environment would be wrong.
    """
    module = sys.modules.get("digdag")
    env = getattr(module, "env", None) if isinstance(module, ModuleType) else None
    return env if callable(getattr(env, "store", None)) else None


# `--min-clusters` in a message is `min_clusters` in a workflow; longest flags first so that
# `--export-shap-values` is not read as a prefix of something else.
_FLAG_NAMES = sorted(((p.flag, p.name) for p in PARAMETERS), key=lambda f: -len(f[0]))
_FLAG_RE = re.compile("|".join(rf"(?<![\w-]){re.escape(flag)}(?![\w-])"
                               for flag, _ in _FLAG_NAMES))
_FLAG_TO_NAME = dict(_FLAG_NAMES)
_NEGATED = {"--no-force-refit": "force_refit: false", "--show-table-contents":
            "hide_table_contents: false"}


def _workflow_wording(message: str) -> str:
    """The CLI's message with its flags spelled as the task parameters (``--min-clusters``
    becomes ``min_clusters``); everything else is unchanged."""
    for flag, words in _NEGATED.items():
        message = message.replace(flag, words)
    return _FLAG_RE.sub(lambda m: _FLAG_TO_NAME[m.group(0)], message)


def _excepthook(kind: type[BaseException], value: BaseException,
                traceback: TracebackType | None) -> None:
    """Print a :class:`TaskFailed` as its one line; anything else as Python would."""
    if isinstance(value, TaskFailed):
        print(str(value), file=sys.stderr, flush=True)
        return
    sys.__excepthook__(kind, value, traceback)


def _install_excepthook() -> None:
    """Under the runner (which re-raises our exception at top level) keep the log clean."""
    sys.excepthook = _excepthook


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a killed task) stops the run like the CLI: ``Interrupted``, nothing written.

    Only in the main thread (signal handlers cannot be set elsewhere); the previous handler is
    restored afterwards, so calling :func:`run` from a notebook leaves no trace.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, _frame: Any) -> None:
        raise Interrupted(f"stopped by signal {signal.Signals(signum).name}; nothing was written")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
