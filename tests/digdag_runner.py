"""A stand-in for Digdag's Python runner (``py>``), written from its documented and read behaviour.

Digdag runs a ``py>`` task as ``python runner.py COMMAND input.json output.json``
(``digdag-standards/src/main/resources/digdag/standards/py/runner.py``). What the runner
does, and what this stand-in does the same way:

* ``input.json`` is ``{"params": {...}}``: every task parameter (exported, ``-p``, the task's
  own keys, Digdag's built-ins such as ``session_time``).
* It puts two fake modules in ``sys.modules``: ``digdag_env`` and ``digdag``, whose ``env`` has
  ``params``, ``store(params={}, **kw)``, ``export(params={}, **kw)``, ``set_state`` and
  ``add_subtask``; then it appends the working directory (the project) to ``sys.path``.
* ``COMMAND`` is ``module.function`` or ``module.Class.method``: the module is imported with
  ``__import__``; when that fails, the last part but one is taken as a class name.
* Arguments are filled by name from the params, with ``inspect.getfullargspec``: each
  positional-or-keyword argument present in the params is passed; a missing one without a
  default is a ``TypeError`` ("Method 'f' requires parameter 'x' but not set"); keyword-only
  arguments are never filled. If the function takes ``**kwargs``, *all* params are passed.
* ``SystemExit`` is caught and replaced by a generic "Failed to call python command with
  code:N ..." error; any other exception's ``str`` and class name are recorded as
  ``output.json``'s ``error`` (with the formatted traceback), ``output.json`` is written
  (``subtask_config``, ``export_params``, ``store_params``) and the exception is raised again,
  so the process exits 1 and Digdag fails the task with "Python command failed with code 1".
* The function's return value is ignored.

Use :func:`run_task` in-process, or ``python tests/digdag_runner.py COMMAND IN OUT`` as Digdag
would run it. :func:`render` is Digdag's ``${a.b}`` substitution for plain names (enough to
check a later task's text against the stored params).
"""

from __future__ import annotations

import collections
import inspect
import json
import os
import re
import sys
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class _Env:
    """``digdag.env`` as the runner defines it."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.subtask_config: dict[str, Any] = collections.OrderedDict()
        self.export_params: dict[str, Any] = {}
        self.store_params: dict[str, Any] = {}
        self.state_params: dict[str, Any] = {}
        self.subtask_index = 0

    def set_state(self, params: Mapping[str, Any] | None = None, **kwds: Any) -> None:
        self.state_params.update(params or {})
        self.state_params.update(kwds)

    def export(self, params: Mapping[str, Any] | None = None, **kwds: Any) -> None:
        self.export_params.update(params or {})
        self.export_params.update(kwds)

    def store(self, params: Mapping[str, Any] | None = None, **kwds: Any) -> None:
        self.store_params.update(params or {})
        self.store_params.update(kwds)

    def add_subtask(self, function: Any = None, **params: Any) -> None:
        config = dict(function) if isinstance(function, dict) else {}
        if function is not None and not isinstance(function, dict):
            config["py>"] = f"{function.__module__}.{function.__qualname__}"
        config.update(params)
        json.dumps(config)  # the runner refuses parameters JSON cannot hold
        self.subtask_config[f"+subtask{self.subtask_index}"] = config
        self.subtask_index += 1


@dataclass
class TaskOutcome:
    """What the runner writes to ``output.json``, and the exception it raised again."""

    output: dict[str, Any]
    error: BaseException | None = None
    stored: dict[str, Any] = field(default_factory=dict)


def _arguments(func: Callable[..., Any], exclude_self: bool,
               params: Mapping[str, Any]) -> dict[str, Any]:
    """The runner's argument filling: by name; a function with ``**kwargs`` gets everything."""
    if func is object.__init__:
        return {}
    spec = inspect.getfullargspec(func)
    args: dict[str, Any] = {}
    required = len(spec.args) - len(spec.defaults or ())
    for index, name in enumerate(spec.args):
        if exclude_self and index == 0:
            continue
        if name in params:
            args[name] = params[name]
        elif index < required:
            raise TypeError(f"Method '{func.__qualname__}' requires parameter '{name}' but not set")
    return dict(params) if spec.varkw else args


def _call(command: str, params: dict[str, Any]) -> None:
    """Import ``module.function`` or ``module.Class.method`` and call it with the params."""
    fragments = command.split(".")
    method_name = fragments.pop()
    cls: Any = None
    func: Any = None
    try:
        func = getattr(__import__(".".join(fragments), fromlist=[method_name]), method_name)
    except ImportError:
        class_name = fragments.pop()
        cls = getattr(__import__(".".join(fragments), fromlist=[class_name]), class_name)
    if isinstance(func, type):  # `py>: module.Class` runs Class().run()
        cls, method_name = func, "run"
    if cls is not None:
        instance = cls(**_arguments(cls.__init__, True, params))
        method = getattr(instance, method_name)
        method(**_arguments(method, True, params))
    else:
        func(**_arguments(func, False, params))


def run_task(command: str, params: Mapping[str, Any]) -> TaskOutcome:
    """Run ``command`` the way the runner does, in this process.

    Parameters
    ----------
    command
        The ``py>`` value, e.g. ``autoseg.workflow.run``.
    params
        The task parameters (``input.json``'s ``params``).

    Returns
    -------
    TaskOutcome
        ``output`` is what ``output.json`` would hold; ``error`` the exception the runner
        would raise again (``None`` on success); ``stored`` the ``store_params``.
    """
    params = json.loads(json.dumps(dict(params)))  # what survives input.json
    env = _Env(params)
    digdag_env = types.ModuleType("digdag_env")
    digdag = types.ModuleType("digdag")
    for name in ("params", "subtask_config", "export_params", "store_params", "state_params"):
        setattr(digdag_env, name, getattr(env, name))
    digdag.env = env  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("digdag", "digdag_env")}
    sys.modules["digdag_env"] = digdag_env
    sys.modules["digdag"] = digdag
    error: BaseException | None = None
    output: dict[str, Any] = {}
    try:
        try:
            _call(command, params)
        except SystemExit as exc:
            error = Exception(f"Failed to call python command with code:{exc.code}",
                              "Possible cause: Invalid python module call, duplicate module "
                              "name with standard library")
            message = f"{error.args[0]} {error.args[1]}"
            output["error"] = {"class": "Exception", "message": message,
                               "backtrace": traceback.format_exception(exc)}
        except Exception as exc:
            error = exc
            output["error"] = {"class": type(exc).__name__, "message": str(exc),
                               "backtrace": traceback.format_exception(exc)}
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    output.update(subtask_config=env.subtask_config, export_params=env.export_params,
                  store_params=env.store_params)
    json.dumps(output)  # output.json must be JSON
    return TaskOutcome(output=output, error=error, stored=env.store_params)


_VARIABLE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


def render(text: str, params: Mapping[str, Any]) -> str:
    """Digdag's ``${name}`` / ``${a.b}`` substitution for plain (nested) names."""
    def value(match: re.Match[str]) -> str:
        current: Any = params
        for part in match.group(1).split("."):
            current = current[part]
        return str(current)
    return _VARIABLE.sub(value, text)


def main(argv: list[str]) -> None:
    """``python digdag_runner.py COMMAND IN OUT``: the runner's command line."""
    command, in_file, out_file = argv
    with open(in_file, encoding="utf-8") as handle:
        params = json.load(handle)["params"]
    sys.path.append(os.path.abspath(os.getcwd()))
    outcome = run_task(command, params)
    with open(out_file, "w", encoding="utf-8") as handle:
        json.dump(outcome.output, handle)
    if outcome.error is not None:
        raise outcome.error


if __name__ == "__main__":
    main(sys.argv[1:])
