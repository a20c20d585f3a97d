"""The ``py>`` entry point (``autoseg.workflow.run``) called the way Digdag's Python runner calls
a task (tests/digdag_runner.py), against the loopback TD emulator with the real pytd/td-client;
the Treasure Workflow template (container/treasure-workflow) and the open-source Digdag ``py>``
workflow checked for the hosted constraints; and (slow) the per-run install into a Python 3.12
environment shaped like TD's image."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoseg.config import PARAMETERS, build_config
from autoseg.demo import make_customers
from autoseg.workflow import TaskFailed, workflow_config

try:
    from digdag_runner import render, run_task
    from emulators.td_api import TDEmulator, fast_client_sleeps, start_td_emulator
except ImportError:  # tests/ imported as a package
    from tests.digdag_runner import render, run_task
    from tests.emulators.td_api import TDEmulator, fast_client_sleeps, start_td_emulator

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TD_PROJECT = ROOT / "container" / "treasure-workflow"
TD_DIG = TD_PROJECT / "autoseg.dig"
OSS_DIG = ROOT / "container" / "digdag" / "autoseg-py.dig"
TD_IMAGE = "treasuredata/customscript-python:3.12.11-td1"
APIKEY = "1/SENTINEL-workflow-key-5b2f0c9e7d14"
ROWS = 300
# What Digdag adds to every task's params (a subset of its built-ins).
DIGDAG_BUILTINS = {
    "timezone": "UTC", "session_time": "2026-12-04T02:00:00+00:00",
    "session_date": "2026-12-04", "session_id": 7, "task_name": "+autoseg+segment",
    "attempt_id": 11, "project_id": 3, "_command": "autoseg.workflow.run",
}


@pytest.fixture(autouse=True)
def _fast_sleeps() -> Iterator[None]:
    with fast_client_sleeps():
        yield


@pytest.fixture
def td(monkeypatch: pytest.MonkeyPatch) -> Iterator[TDEmulator]:
    emulator = start_td_emulator(apikey=APIKEY, databases=["shop"])
    frame, _ = make_customers(ROWS, seed=3)
    frame = frame.drop(columns=["last_feedback"])
    frame["signup_date"] = frame["signup_date"].dt.strftime("%Y-%m-%d")
    frame["is_member"] = frame["is_member"].astype(int)
    frame["age"] = frame["age"].astype("float64")
    emulator.seed_table("shop", "customers", frame)
    # `_env` puts the credentials in the task's environment; the entry point reads os.environ.
    monkeypatch.setenv("TD_API_KEY", APIKEY)
    monkeypatch.setenv("TD_API_SERVER", emulator.endpoint)
    try:
        yield emulator
    finally:
        emulator.stop()


def _task_params(tmp_path: Path, **values: Any) -> dict[str, Any]:
    """Params as Digdag passes them: built-ins, the workflow's _export, values from `-p`
    (strings), and no `store` (the entry point defaults to td)."""
    params: dict[str, Any] = {
        **DIGDAG_BUILTINS,
        "input_table": "shop.customers", "output_table": "shop.segments",
        "max_clusters": "5",  # from `-p max_clusters=5`: a string
        "td_engine": "hive", "output_dir": str(tmp_path / "out"),
        "model_dir": str(tmp_path / "models"),
        "unrelated_workflow_variable": {"nested": [1, 2]},
    }
    params.update(values)
    return params


# --------------------------------------------------------------------------- success


def test_task_runs_on_td_and_stores_the_result_for_later_tasks(
    tmp_path: Path, td: TDEmulator, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    params = _task_params(tmp_path, export_feature_importance="importance",
                          export_shap_values="shop.shap")
    outcome = run_task("autoseg.workflow.run", params)
    assert outcome.error is None, outcome.output.get("error")

    stored = outcome.stored["autoseg"]
    assert set(stored) == {"chosen_k", "output_table", "cluster_sizes", "mean_silhouette",
                           "summary_path"}
    table = td.read_table("shop", "segments")
    assert len(table) == ROWS
    k = stored["chosen_k"]
    assert 2 <= k <= 5 and sorted(table["cluster_id"].unique()) == list(range(k))
    counts = table["cluster_id"].value_counts().sort_index().tolist()
    assert stored["cluster_sizes"] == counts
    assert stored["output_table"] == "shop.segments"
    summary = json.loads(Path(stored["summary_path"]).read_text())
    assert summary["parameters"]["store"] == "td"  # the workflow default
    assert summary["parameters"]["max_clusters"] == 5
    chosen = [c for c in summary["k_search"] if c["k"] == k]
    assert stored["mean_silhouette"] == pytest.approx(chosen[0]["silhouette"])
    assert td.has_table("shop", "importance") and td.has_table("shop", "shap")

    # output.json holds only JSON; a later task's `${autoseg.chosen_k}` renders to k.
    later = {**params, **outcome.output["store_params"]}
    assert render("k=${autoseg.chosen_k} in ${autoseg.output_table}", later) == \
        f"k={k} in shop.segments"
    assert outcome.output["export_params"] == {} and outcome.output["subtask_config"] == {}

    # the API key reaches no log, output, stored value or written file
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, json.dumps(outcome.output),
                 (tmp_path / "out" / "summary.json").read_text()):
        assert APIKEY.split("/")[1] not in text


def test_without_digdag_the_entry_point_returns_the_result(tmp_path: Path,
                                                           td: TDEmulator) -> None:
    from autoseg.workflow import run

    assert "digdag" not in sys.modules
    hook = sys.excepthook
    result = run(**_task_params(tmp_path, num_clusters=3))
    assert result["chosen_k"] == 3 and sum(result["cluster_sizes"]) == ROWS
    assert result["mean_silhouette"] is None or -1 <= result["mean_silhouette"] <= 1
    with pytest.raises(TaskFailed, match=r"^autoseg: error: min_clusters=4 must be <= "
                                         r"max_clusters=3 \[exit code 2: usage\]$"):
        run(**_task_params(tmp_path, min_clusters=4, max_clusters=3))
    assert sys.excepthook is hook  # only changed under the runner


def test_reused_model_stores_no_silhouette(tmp_path: Path, td: TDEmulator) -> None:
    first = run_task("autoseg.workflow.run", _task_params(tmp_path, model_name="nightly",
                                                          num_clusters=3))
    assert first.error is None
    again = run_task("autoseg.workflow.run", _task_params(
        tmp_path, model_name="nightly", force_refit=False, output_table="shop.reassigned"))
    assert again.error is None, again.output.get("error")
    stored = again.stored["autoseg"]
    assert stored["chosen_k"] == 3 and stored["mean_silhouette"] is None
    assert stored["output_table"] == "shop.reassigned"


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("values", "message"), [
    ({"min_clusters": "many"},
     r"autoseg: error: min_clusters='many' is not an integer \[exit code 2: usage\]"),
    ({"input_table": None},
     r"autoseg: error: input_table is required: give the task parameter input_table "),
    ({"audience_name": "Customers 360"},
     r"autoseg: error: audience integration needs all of audience_name, foreign_key and "
     r"rowid_column: also give foreign_key, rowid_column \[exit code 2: usage\]"),
    ({"force_refit": "false"},
     r"autoseg: error: force_refit: false needs model_name: the saved model to reuse"),
    ({"output_table": "Shop.Bad-Name"},
     r"autoseg: error: output_table='Shop.Bad-Name' is not a valid table name"),
    ({"dask": "local"},
     r"autoseg: error: dask and dask_scheduler are not supported in a py> task: run "
     r"`autoseg run` with its Dask options"),
])
def test_bad_parameter_fails_the_task_with_one_line(tmp_path: Path, values: dict[str, Any],
                                                    message: str) -> None:
    params = _task_params(tmp_path, **values)
    params = {k: v for k, v in params.items() if v is not None}
    outcome = run_task("autoseg.workflow.run", params)
    assert isinstance(outcome.error, TaskFailed)
    assert outcome.error.exit_code == 2
    error = outcome.output["error"]
    assert re.match(message, error["message"]), error["message"]
    assert "\n" not in error["message"] and "--" not in error["message"]
    assert error["class"] == "TaskFailed"
    assert outcome.output["store_params"] == {}  # a failed task stores nothing
    # The traceback the runner attaches holds no autoseg internals: our frame is run()'s raise.
    frames = "".join(error["backtrace"])
    assert "autoseg/config.py" not in frames and "autoseg/pipeline.py" not in frames
    assert "During handling of the above exception" not in frames
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_input_table_is_an_input_error(tmp_path: Path, td: TDEmulator) -> None:
    outcome = run_task("autoseg.workflow.run", _task_params(tmp_path,
                                                            input_table="shop.nothing"))
    assert isinstance(outcome.error, TaskFailed) and outcome.error.exit_code == 3
    assert re.match(r"autoseg: error: .*shop\.nothing.*\[exit code 3: input data\]$",
                    outcome.output["error"]["message"])
    assert APIKEY.split("/")[1] not in json.dumps(outcome.output)
    assert td.table_names("shop") == ["customers"]


def test_failed_task_process_shows_only_the_line_and_exits_nonzero(tmp_path: Path) -> None:
    """The runner's command line in a subprocess: Python's traceback is replaced by the line."""
    in_file, out_file = tmp_path / "input.json", tmp_path / "output.json"
    in_file.write_text(json.dumps({"params": _task_params(tmp_path, max_clusters="lots")}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TESTS)]),
           "TD_API_KEY": APIKEY, "TD_API_SERVER": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, str(TESTS / "digdag_runner.py"), "autoseg.workflow.run",
         str(in_file), str(out_file)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 1  # Digdag: "Python command failed with code 1"
    line = ("autoseg: error: max_clusters='lots' is not an integer [exit code 2: usage]")
    assert done.stderr.strip() == line, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert json.loads(out_file.read_text())["error"]["message"] == line


# --------------------------------------------------------------------------- parameters


def test_every_parameter_is_read_by_its_params_file_name(tmp_path: Path) -> None:
    # One valid non-default value per parameter, checked against the CLI's own config.
    values = {
        "input_table": "shop.customers", "output_table": "shop.segments", "model_name": "m1",
        "force_refit": True, "output_mode": "append", "min_clusters": 3, "max_clusters": 4,
        "num_clusters": 3, "ignore_columns": ["time", "customer_id"], "keep_columns": ["region"],
        "dimension_reduction_threshold": 7, "min_cluster_size": "0.05", "prefer_stable": True,
        "stability_runs": 2, "export_feature_importance": "imp", "export_shap_values": "shap",
        "export_segment_rules": "rules", "segment_rules": True, "hide_table_contents": True,
        "audience_name": "A", "foreign_key": "customer_id", "rowid_column": "customer_id",
        "store": "td", "lock_timeout": 60, "td_engine": "hive",
        "cdp_endpoint": "http://127.0.0.1:1",
        "output_dir": str(tmp_path / "o"), "model_dir": str(tmp_path / "m"), "seed": 5,
        "device": "cpu", "kmeans_restarts": 2, "search_sample_size": 500,
        "silhouette_exact_max_rows": 900, "silhouette_sample_size": 300, "log_format": "json",
        "dask": None, "dask_scheduler": None, "dask_workers": 2, "dask_output": "x",
    }
    assert set(values) == {p.name for p in PARAMETERS}, "a parameter is missing here"
    config = workflow_config({**DIGDAG_BUILTINS, **values})
    assert config == build_config(values)
    # store defaults to td; the CLI's default stays DuckDB
    assert workflow_config({"input_table": "shop.customers"}).store == "td"
    assert workflow_config({"input_table": "x.y", "store": "duckdb:a.duckdb"}).store == \
        "duckdb:a.duckdb"


def test_environment_autoseg_variables_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CPU image sets AUTOSEG_STORE=duckdb:...; a workflow task must still default to td.
    monkeypatch.setenv("AUTOSEG_STORE", "duckdb:/output/autoseg.duckdb")
    monkeypatch.setenv("AUTOSEG_MAX_CLUSTERS", "3")
    config = workflow_config({"input_table": "shop.customers"})
    assert config.store == "td" and config.max_clusters == 9


# --------------------------------------------------------------------------- workflow files


def _tasks(node: dict[str, Any], inherited: dict[str, Any] | None = None,
           ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every task of a workflow with the `_export` it inherits: (name, task, exported)."""
    exported = {**(inherited or {}), **node.get("_export", {})}
    for key, value in node.items():
        if key.startswith("+") and isinstance(value, dict):
            yield key, value, exported
            yield from _tasks(value, exported)


def _operator(task: dict[str, Any]) -> str | None:
    operators = [key for key in task if key.endswith(">")]
    assert len(operators) <= 1, operators
    return operators[0] if operators else None


def _secret_places(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of every value that mentions `${secret:...}`."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _secret_places(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _secret_places(value, (*path, str(index)))
    elif isinstance(node, str) and "${secret:" in node:
        yield path


# Operators hosted Treasure Workflow runs; of these only py> runs custom code.
_HOSTED_OPERATORS = {"py>", "td>", "td_run>", "td_ddl>", "td_load>", "td_for_each>",
                     "td_wait>", "td_wait_table>", "td_table_export>", "td_result_export>",
                     "echo>", "call>", "require>", "loop>", "for_each>", "for_range>", "if>",
                     "fail>", "wait>", "mail>", "http>", "http_call>", "store>"}


def test_treasure_workflow_project_meets_the_hosted_constraints() -> None:
    workflow = yaml.safe_load(TD_DIG.read_text())
    tasks = list(_tasks(workflow))
    assert [name for name, _, _ in tasks] == ["+segment", "+report"]
    for name, task, exported in tasks:
        operator = _operator(task)
        assert operator in _HOSTED_OPERATORS, f"{name}: {operator} does not run on TD"
        assert operator not in ("sh>", "rb>", "embulk>")
        if operator == "py>":
            docker = {**exported.get("docker", {}), **task.get("docker", {})}
            assert docker == {"image": TD_IMAGE}, name
    # secrets only through _env, and the API key is one
    places = list(_secret_places(workflow))
    assert places and all("_env" in place for place in places), places
    segment = workflow["+segment"]
    assert segment["_env"]["TD_API_KEY"] == "${secret:td.apikey}"
    assert not any("apikey" in str(key).lower() for key in workflow["_export"])

    # The py> target is a function of a module in the project; it installs, then runs autoseg.
    module, function = segment["py>"].rsplit(".", 1)
    source = (TD_PROJECT / f"{module}.py").read_text()
    assert f"def {function}(" in source and "from autoseg.workflow import run" in source
    exported = workflow["_export"]
    assert re.fullmatch(r"autoseg @ https://\S+/autoseg-[\d.]+-py3-none-any\.whl",
                        exported["autoseg_requirement"]), "pin a wheel, never autoseg==X"
    # Every ${...} is a workflow parameter, a secret, or the stored result.
    for name in re.findall(r"\$\{([^}]+)\}", TD_DIG.read_text()):
        assert (name in exported or name.startswith("secret:")
                or name.startswith("autoseg.")), name
    # The later task uses what the first one stores.
    echo = workflow["+report"]["echo>"]
    stored = {"autoseg": {"chosen_k": 4, "output_table": "a.b", "cluster_sizes": [1, 2],
                          "mean_silhouette": 0.5, "summary_path": "/x"}}
    assert "k=4 for a.b" in render(echo, {**exported, **stored})
    # Every autoseg parameter in _export is valid for the entry point.
    workflow_config(exported)


def test_treasure_workflow_project_is_small_and_bundles_no_wheels() -> None:
    files = [p for p in TD_PROJECT.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 10 * 1024 * 1024
    assert not [p for p in files if p.suffix in (".whl", ".gz", ".zip", ".tar")]
    assert {p.name for p in files} >= {"autoseg.dig", "autoseg_task.py", "README.md"}


def test_install_refuses_a_pypi_name_for_autoseg() -> None:
    sys.path.insert(0, str(TD_PROJECT))
    try:
        import autoseg_task
    finally:
        sys.path.remove(str(TD_PROJECT))
    with pytest.raises(autoseg_task.InstallFailed,
                       match=r"autoseg_requirement='autoseg==0.1.0' must be a direct reference"):
        autoseg_task.install("autoseg==0.1.0")
    with pytest.raises(autoseg_task.InstallFailed, match=r"https://\*\*\*@example.com"):
        autoseg_task.install("autoseg>=0 --index-url https://me:token@example.com/simple")
    with pytest.raises(autoseg_task.InstallFailed, match="autoseg_xgboost='gpu' is not one of"):
        autoseg_task.install("autoseg @ https://example.com/autoseg-0.1.0-py3-none-any.whl",
                             "gpu")


def test_template_task_with_a_pypi_pin_fails_with_one_line(tmp_path: Path) -> None:
    """The template's task through the runner's command line: refused before pip runs."""
    project = tmp_path / "project"
    shutil.copytree(TD_PROJECT, project)
    params = {**DIGDAG_BUILTINS, **yaml.safe_load(TD_DIG.read_text())["_export"],
              "autoseg_requirement": "autoseg==0.1.0"}
    (project / "input.json").write_text(json.dumps({"params": params}))
    done = subprocess.run(
        [sys.executable, str(TESTS / "digdag_runner.py"), "autoseg_task.run", "input.json",
         "output.json"], cwd=project, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": ""}, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "autoseg: error: autoseg_requirement='autoseg==0.1.0' must be a direct reference, "
        "`autoseg @ https://.../autoseg-VERSION-py3-none-any.whl`: the name autoseg on PyPI "
        "is an unrelated project")
    error = json.loads((project / "output.json").read_text())["error"]
    assert error["class"] == "InstallFailed" and error["message"] == done.stderr.strip()


def test_open_source_digdag_py_task_runs_the_cpu_image() -> None:
    workflow = yaml.safe_load(OSS_DIG.read_text())
    segment = workflow["+segment"]
    assert segment["py>"] == "autoseg.workflow.run"
    exported = workflow["_export"]
    docker = exported["docker"]
    assert re.fullmatch(r"[\w.\-/]+/autoseg:[\w.\-]+-cpu", docker["image"]), docker["image"]
    # runner.py is passed to `python`, not to the image's `autoseg` entrypoint; the container
    # runs as the Digdag user so the runner can write output.json into the project folder.
    assert "--entrypoint=" in docker["run_options"]
    assert "--user=${docker_user}" in docker["run_options"]
    assert "--volume=${host_output_dir}:/output" in docker["run_options"]
    assert segment["_env"]["TD_API_KEY"] == "${secret:td.apikey}"
    assert all("_env" in place for place in _secret_places(workflow))
    config = workflow_config(exported)
    assert str(config.output_dir).startswith("/output/")
    assert str(config.model_dir).startswith("/output/")
    for name in re.findall(r"\$\{([^}]+)\}", OSS_DIG.read_text()):
        assert name in exported or name.startswith(("secret:", "autoseg.")), name
    assert "${autoseg.chosen_k}" in workflow["+report"]["echo>"]


# --------------------------------------------------------------------------- slow: install

PY312 = Path("/root/.pyenv/versions/3.12.1/bin/python")
IMAGE_PACKAGES = ["pytd==2.2.0", "pandas==2.2.3"]  # what TD's 3.12 image holds (pandas: a 2.x)


@pytest.mark.slow
@pytest.mark.skipif(not PY312.exists(), reason="needs Python 3.12 at /root/.pyenv")
def test_install_in_an_image_like_python_then_run_on_td(tmp_path: Path,
                                                        td: TDEmulator) -> None:
    """The template's task in a subprocess with TD's shape: install autoseg (as a user install
    into a user site that does not exist yet), keep the image's pytd and pandas, and run."""
    interpreter = _image_like_python(tmp_path / "image")
    wheel_dir = tmp_path / "wheel"
    subprocess.run([str(interpreter), "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(wheel_dir), str(ROOT)], check=True, timeout=600)
    wheel = next(wheel_dir.glob("autoseg-*.whl"))
    project = tmp_path / "project"
    shutil.copytree(TD_PROJECT, project)
    user_base = tmp_path / "userbase"  # does not exist when the task's Python starts
    params = {**DIGDAG_BUILTINS, **yaml.safe_load(TD_DIG.read_text())["_export"],
              "autoseg_requirement": f"autoseg @ {wheel.as_uri()}",
              "input_table": "shop.customers", "output_table": "shop.segments",
              "export_feature_importance": "shop.importance",
              "export_shap_values": "shop.shap", "td_engine": "hive", "max_clusters": 4,
              "output_dir": str(tmp_path / "out"), "model_dir": str(tmp_path / "models")}
    (project / "input.json").write_text(json.dumps({"params": params}))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_USER": "1",
           "PYTHONUSERBASE": str(user_base), "TD_API_KEY": APIKEY,
           "TD_API_SERVER": td.endpoint, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    for name in ("PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "SSL_CERT_FILE",
                 "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    shutil.copy(TESTS / "digdag_runner.py", project / "digdag_runner.py")
    done = subprocess.run(
        [str(interpreter), "digdag_runner.py", "autoseg_task.run", "input.json",
         "output.json"], cwd=project, env=env, capture_output=True, text=True, timeout=1800,
        check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = json.loads((project / "output.json").read_text())
    stored = output["store_params"]["autoseg"]
    assert sum(stored["cluster_sizes"]) == ROWS
    assert len(td.read_table("shop", "segments")) == ROWS
    summary = json.loads(Path(stored["summary_path"]).read_text())
    # The image's pytd and pandas were used, autoseg came from the user site.
    versions = json.dumps(summary.get("versions", {}))
    assert '"pandas": "2.2.3"' in versions.replace("'", '"'), versions
    installed = list(user_base.rglob("site-packages/autoseg/workflow.py"))
    assert installed, "autoseg was not installed into PYTHONUSERBASE"
    assert not list(user_base.rglob("site-packages/pytd")), "the image's pytd was replaced"
    assert list(user_base.rglob("site-packages/xgboost_cpu-*.dist-info"))
    assert APIKEY.split("/")[1] not in done.stdout + done.stderr


def _image_like_python(where: Path) -> Path:
    """A Python 3.12 shaped like TD's image: pytd 2.2.0 and an older pandas already installed,
    user site-packages enabled (a venv with system site-packages, where `pip --user` works)."""
    subprocess.run([str(PY312), "-m", "venv", "--system-site-packages", str(where)],
                   check=True, timeout=300)
    python = where / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", *IMAGE_PACKAGES], check=True,
                   timeout=900)
    return python


@pytest.mark.slow
def test_pyproject_dependencies_allow_the_image_pytd_on_python_312() -> None:
    """pip's resolver (dry run) accepts autoseg's requirements with pytd 2.2.0 on 3.12."""
    if not PY312.exists():
        pytest.skip("needs Python 3.12 at /root/.pyenv")
    done = subprocess.run(
        [str(PY312), "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
         "--report", "-", str(ROOT), "pytd==2.2.0", "pandas==2.2.3"],
        capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(done.stdout)["install"]}
    assert chosen["pytd"] == "2.2.0" and chosen["pandas"] == "2.2.3"
