"""The container images and their deployment examples.

Fast tier (always runs, no container engine): both Dockerfiles follow the image conventions
(multi-stage, exec-form ``ENTRYPOINT ["autoseg"]``, non-root user, no compilers in the final
stage, OCI labels, outputs under /output), ``.dockerignore`` sends only what the builds use,
every Kubernetes manifest validates offline against the Kubernetes OpenAPI schemas
(``kubernetes-validate``) and uses only real autoseg parameters, and the Digdag workflow runs
the image with the workflow's parameters.

Slow tier (``--run-slow``, root, podman and debootstrap): builds ``Dockerfile.cpu`` with podman
on a stand-in base image (``container/build-standin-base.sh``; base images cannot be pulled
here) and runs ``autoseg demo`` in it the way Kubernetes runs it (read-only root file system,
no capabilities), stops a run with SIGTERM, and runs the Digdag task's command line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoseg.config import PARAMETERS, build_config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"cpu": ROOT / "Dockerfile.cpu", "gpu": ROOT / "Dockerfile"}
K8S_MANIFESTS = sorted((ROOT / "container" / "k8s").glob("*.yaml"))
CRONJOB_MANIFESTS = [ROOT / "container" / "k8s" / f"cronjob-{kind}.yaml" for kind in ("cpu", "gpu")]
DIGDAG_FILE = ROOT / "container" / "digdag" / "autoseg.dig"
UID = 10001
FLAG_TO_PARAM = {param.flag: param for param in PARAMETERS}
ENV_TO_PARAM = {param.envvar: param for param in PARAMETERS}
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "python3-dev",
             "python3.11-dev", "python3.12-dev", "libc6-dev", "cython")


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# --------------------------------------------------------------------------- Dockerfiles


@dataclass
class Stage:
    """One build stage: its FROM line (ARGs resolved) and its instructions."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for key, arg in self.instructions if key == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs, continuation lines joined and comment lines dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    assert not pending, "a continuation line ends the file"
    return result


def _arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value.strip('"')
    return defaults


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def _stages(path: Path) -> list[Stage]:
    instructions = _instructions(path.read_text())
    first_from = next(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    global_args = _arg_defaults(instructions[:first_from])
    stages: list[Stage] = []
    for keyword, rest in instructions[first_from:]:
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(_substitute(parts[0], global_args), name))
        else:
            stages[-1].instructions.append((keyword, rest))
    return stages


def _env(stage: Stage) -> dict[str, str]:
    env = {}
    for rest in stage.args("ENV"):
        for token in shlex.split(rest):
            name, _, value = token.partition("=")
            env[name] = value
    return env


def _labels(stage: Stage) -> dict[str, str]:
    labels = {}
    for rest in stage.args("LABEL"):
        for token in shlex.split(rest):
            name, _, value = token.partition("=")
            labels[name] = value
    return labels


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_is_multi_stage_with_a_builder(flavour: str) -> None:
    stages = _stages(DOCKERFILES[flavour])
    assert len(stages) == 2, [s.image for s in stages]
    assert stages[0].name == "builder"
    final = stages[-1]
    assert any("--from=builder" in rest for rest in final.args("COPY"))
    # The final stage copies only the built venv: no source tree, no wheel, no tests.
    assert not [rest for rest in final.args("COPY") if "--from=builder" not in rest]
    assert not final.args("ADD")


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_entrypoint_is_exec_form_autoseg(flavour: str) -> None:
    final = _stages(DOCKERFILES[flavour])[-1]
    (entrypoint,) = final.args("ENTRYPOINT")
    (cmd,) = final.args("CMD")
    # Exec form (a JSON array): autoseg is PID 1 and receives SIGTERM itself.
    assert json.loads(entrypoint) == ["autoseg"]
    assert json.loads(cmd) == ["--help"]
    assert final.args("STOPSIGNAL") in ([], ["SIGTERM"])


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_final_stage_runs_as_non_root(flavour: str) -> None:
    final = _stages(DOCKERFILES[flavour])[-1]
    users = final.args("USER")
    assert users, "the final stage sets no USER"
    user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert user == f"{UID}:{UID}"  # numeric, so Kubernetes' runAsNonRoot can verify it
    run = " ".join(final.args("RUN"))
    assert f"useradd --uid {UID}" in run and f"groupadd --gid {UID}" in run
    # USER comes after every RUN: nothing in the final stage runs as root afterwards.
    keywords = [k for k, _ in final.instructions]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_final_stage_installs_no_compilers(flavour: str) -> None:
    final = _stages(DOCKERFILES[flavour])[-1]
    for rest in final.args("RUN"):
        words = set(re.split(r"[\s;&|]+", rest))
        assert not words & set(COMPILERS), rest
        if "apt-get" in words and "install" in words:
            assert "--no-install-recommends" in words, rest
            assert "rm -rf /var/lib/apt/lists/*" in rest, rest
        assert "pip install" not in rest, "install in the builder, copy the venv"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_has_oci_labels(flavour: str) -> None:
    stages = _stages(DOCKERFILES[flavour])
    labels = _labels(stages[-1])
    for key in ("title", "description", "source", "licenses", "version"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.title"] == "autoseg"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    version_default = _arg_defaults(stages[-1].instructions)["VERSION"]
    assert version_default == _version(), "bump ARG VERSION with pyproject.toml"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_writes_under_output_and_reads_data(flavour: str) -> None:
    final = _stages(DOCKERFILES[flavour])[-1]
    env = _env(final)
    assert env["AUTOSEG_OUTPUT_DIR"] == "/output/autoseg-output"
    assert env["AUTOSEG_MODEL_DIR"] == "/output/models"
    assert env["AUTOSEG_STORE"] == "duckdb:/output/autoseg.duckdb"
    assert env["PATH"].startswith("/opt/autoseg/bin:")
    assert env["MPLCONFIGDIR"].startswith("/tmp/")  # writable with a read-only root fs
    for name in env:
        if name.startswith("AUTOSEG_"):
            assert name in ENV_TO_PARAM, f"{name} is not an autoseg parameter"
    assert final.args("WORKDIR") == ["/output"]
    run = " ".join(final.args("RUN"))
    assert "mkdir -p /output /data" in run and f"chown {UID}:{UID} /output" in run


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_keeps_the_image_small(flavour: str) -> None:
    builder = _stages(DOCKERFILES[flavour])[0]
    assert _env(builder)["PIP_NO_CACHE_DIR"] == "1"
    run = " ".join(builder.args("RUN"))
    assert "pip wheel --no-deps" in run
    assert "-name tests" in run  # third-party test suites are removed
    assert "uninstall --yes pip setuptools" in run
    copied = " ".join(builder.args("COPY"))
    assert "tests" not in copied.split()


def test_cpu_dockerfile_uses_python_311_slim_for_both_stages() -> None:
    stages = _stages(DOCKERFILES["cpu"])
    assert [s.image for s in stages] == ["python:3.11-slim", "python:3.11-slim"]


def test_gpu_dockerfile_uses_a_cuda_base_and_the_gpu_extra() -> None:
    text = DOCKERFILES["gpu"].read_text()
    stages = _stages(DOCKERFILES["gpu"])
    for stage in stages:
        assert re.fullmatch(r"nvcr\.io/nvidia/cuda:12\.\d+\.\d+-(base|runtime)-ubuntu\d+\.04",
                            stage.image), stage.image
    assert _arg_defaults(stages[0].instructions)["CUDA_MAJOR"] == "12"
    runs = stages[0].args("RUN")
    run = " ".join(runs)
    # The requirements (the gpu extra for CUDA_MAJOR) come from pyproject.toml in a layer of
    # their own, before the source is copied; autoseg itself goes on top with --no-deps.
    assert 'gpu_requirements.py pyproject.toml "${CUDA_MAJOR}" "${EXTRAS}"' in run
    steps = stages[0].instructions
    install = next(i for i, (k, rest) in enumerate(steps)
                   if k == "RUN" and "gpu_requirements.py" in rest)
    source = next(i for i, (k, rest) in enumerate(steps) if k == "COPY" and rest.startswith("src"))
    assert install < source
    assert any(k == "COPY" and rest.startswith("container/gpu_requirements.py ")
               for k, rest in steps[:install])
    assert "pip install --no-deps /dist/autoseg-*.whl" in run
    assert "pip check" in run
    # The build fails unless the GPU stack imports (autoseg version imports none of it).
    assert re.search(r'python -c "import cudf, cuml, cupy, xgboost\b', run)
    assert "https://pypi.nvidia.com" in text
    # The final stage installs the interpreter only.
    final_run = " ".join(stages[-1].args("RUN"))
    assert "install --yes --no-install-recommends python3 " in final_run + " "
    assert "python3-venv" not in final_run and "python3-pip" not in final_run


def _dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches a path's parents."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern[1:] if negate else pattern
        bare = bare.rstrip("/")
        if any(fnmatch(c, bare) or fnmatch(c, bare.replace("**/", "*/")) for c in candidates):
            allowed = negate
    return allowed


def test_dockerignore_sends_only_what_the_builds_use() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in ("pyproject.toml", "README.md", "src/autoseg/cli.py",
                 "container/cpu_requirements.py", "container/gpu_requirements.py"):
        assert _dockerignore_allows(path, patterns), path
    for path in ("tests/test_containers.py", ".venv/bin/python", ".git/config",
                 "autoseg.duckdb", "autoseg-output/summary.json", "benchmarks/x.py",
                 "src/autoseg/__pycache__/cli.cpython-311.pyc", "Dockerfile"):
        assert not _dockerignore_allows(path, patterns), path
    # Every COPY source of both Dockerfiles is in the context.
    for dockerfile in DOCKERFILES.values():
        for stage in _stages(dockerfile):
            for rest in stage.args("COPY"):
                if "--from=" in rest:
                    continue
                for source in rest.split()[:-1]:
                    assert _dockerignore_allows(source.rstrip("/"), patterns), source


def _load_cpu_requirements() -> Any:
    spec = importlib.util.spec_from_file_location(
        "cpu_requirements", ROOT / "container" / "cpu_requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_requirements_swap_xgboost_for_the_cpu_build() -> None:
    module = _load_cpu_requirements()
    lines = module.cpu_requirements("autoseg")
    names = [re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower() for line in lines]
    assert "xgboost-cpu" in names and "xgboost" not in names
    assert "pytest" not in names and "shap" not in names  # extras are left out
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(lines) == len(declared)
    xgb = next(line for line in lines if line.startswith("xgboost-cpu"))
    assert "<3.3" in xgb  # the version range is kept
    # An extra asked for (--build-arg EXTRAS=...) brings its requirements, without the marker.
    with_test = module.cpu_requirements("autoseg", "test")
    assert any(line.startswith("pytest") for line in with_test)
    assert not any("extra" in line for line in with_test)


def _load_gpu_requirements() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gpu_requirements", ROOT / "container" / "gpu_requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_requirements_are_the_dependencies_and_the_gpu_extra() -> None:
    module = _load_gpu_requirements()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    cu12 = module.gpu_requirements(ROOT / "pyproject.toml", "12")
    assert cu12 == project["dependencies"] + extras["gpu"]
    cu13 = module.gpu_requirements(ROOT / "pyproject.toml", "13", "dask")
    assert cu13 == project["dependencies"] + extras["gpu-cu13"] + extras["dask"]
    # an extra naming autoseg itself is expanded, each line once
    with_dask = module.gpu_requirements(ROOT / "pyproject.toml", "12", "gpu-dask")
    assert not any(line.lower().startswith("autoseg") for line in with_dask)
    assert len(with_dask) == len(set(with_dask))
    assert set(extras["gpu"]) | set(extras["dask"]) <= set(with_dask)
    assert "dask-cuda==26.10.*" in with_dask
    with pytest.raises(SystemExit, match=r"CUDA_MAJOR='11' must be one of 12, 13"):
        module.gpu_requirements(ROOT / "pyproject.toml", "11")
    with pytest.raises(SystemExit, match=r"autoseg has no extra 'cuda'"):
        module.gpu_requirements(ROOT / "pyproject.toml", "12", "cuda")


def test_gpu_extras_pin_one_rapids_release() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra, suffix in (("gpu", "cu12"), ("gpu-cu13", "cu13")):
        lines = extras[extra]
        assert f"cudf-{suffix}==26.10.*" in lines and f"cuml-{suffix}==26.10.*" in lines, lines
        (cupy,) = [line for line in lines if line.startswith("cupy-cuda")]
        assert cupy.startswith(f"cupy-cuda{suffix[2:]}x>=14.0.1,!=14.1.0,<15"), cupy
    assert "cuml-cu12[dask]==26.10.*" in extras["gpu-dask"]
    # RAPIDS 26.10 pins dask 2026.7.1 (rapids-dask-dependency): our dask extra must allow it
    (dask,) = extras["dask"]
    assert dask == "dask[distributed]>=2026.7.1"


# --------------------------------------------------------------------------- Kubernetes

# The oldest Kubernetes whose schema the manifests are checked against (podFailurePolicy's
# schema settled in 1.29) and the newest one kubernetes-validate ships.
K8S_VERSIONS = ("1.29.0", "latest")
# API groups of Kubernetes itself; other groups are custom resources (operators' CRDs), whose
# schemas kubernetes-validate does not have.
_BUILTIN_GROUPS = {"", "apps", "batch", "autoscaling", "policy"}


def _is_builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return group in _BUILTIN_GROUPS or group.endswith(".k8s.io")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("manifest", K8S_MANIFESTS, ids=lambda p: p.name)
def test_k8s_manifest_validates_against_the_kubernetes_schema(manifest: Path,
                                                               version: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (test extra)")
    if version == "latest":
        version = kubernetes_validate.latest_version()
    builtin = 0
    for document in _documents(manifest):
        assert document.get("apiVersion") and document.get("kind"), document
        assert document["metadata"]["name"]
        if not _is_builtin(document["apiVersion"]):
            continue  # a custom resource: no schema to check it against
        # strict: unknown fields (typos) are errors too. Raises ValidationError on failure.
        kubernetes_validate.validate(document, version, strict=True)
        builtin += 1
    assert builtin, f"{manifest.name} has no Kubernetes resource to validate"


def test_k8s_cronjob_manifests_exist() -> None:
    for manifest in CRONJOB_MANIFESTS:
        assert manifest in K8S_MANIFESTS, manifest.name


def _by_kind(path: Path) -> dict[str, dict[str, Any]]:
    docs = _documents(path)
    kinds = [doc["kind"] for doc in docs]
    assert len(set(kinds)) == len(kinds), kinds
    return {doc["kind"]: doc for doc in docs}


@pytest.mark.parametrize("manifest", CRONJOB_MANIFESTS, ids=lambda p: p.name)
def test_k8s_cronjob_is_safe_to_run_nightly(manifest: Path) -> None:
    docs = _by_kind(manifest)
    assert set(docs) == {"ConfigMap", "Secret", "PersistentVolumeClaim", "CronJob"}
    cron = docs["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    job = cron["jobTemplate"]["spec"]
    assert isinstance(job["backoffLimit"], int) and job["backoffLimit"] >= 0
    assert isinstance(job["activeDeadlineSeconds"], int) and job["activeDeadlineSeconds"] > 0
    # Usage (2) and input-data (3) errors, and bugs (1), are not retried.
    fail_codes = [rule["onExitCodes"]["values"] for rule in job["podFailurePolicy"]["rules"]
                  if rule["action"] == "FailJob"]
    assert fail_codes == [[1, 2, 3]]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == UID and security["runAsGroup"] == UID
    assert security["fsGroup"] == UID
    (container,) = pod["containers"]
    assert container["name"] == "autoseg"
    assert container["args"] == ["run"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    resources = container["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"]
    # The parameters come from this file's ConfigMap and the key from this file's Secret.
    refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert refs == {"configMapRef": docs["ConfigMap"]["metadata"]["name"],
                    "secretRef": docs["Secret"]["metadata"]["name"]}
    # /output is a volume backed by this file's claim; /tmp is writable (read-only root).
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts["/output"]]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("manifest", CRONJOB_MANIFESTS, ids=lambda p: p.name)
def test_k8s_configmap_holds_valid_autoseg_parameters(manifest: Path) -> None:
    docs = _by_kind(manifest)
    data = docs["ConfigMap"]["data"]
    given = {}
    for key, value in data.items():
        assert isinstance(value, str), f"{key}: ConfigMap values must be strings"
        if key.startswith("AUTOSEG_"):
            assert key in ENV_TO_PARAM, f"{key} is not an autoseg parameter"
            given[ENV_TO_PARAM[key].name] = value
        else:
            assert key.startswith("TD_") and key != "TD_API_KEY", key
    build_config(given)  # raises UsageError for a bad value or combination
    assert data["AUTOSEG_OUTPUT_DIR"].startswith("/output/")
    assert data["AUTOSEG_MODEL_DIR"].startswith("/output/")
    secret = docs["Secret"]
    assert set(secret["stringData"]) == {"TD_API_KEY"}
    assert "REPLACE" in secret["stringData"]["TD_API_KEY"]  # a placeholder, never a key


def test_k8s_gpu_cronjob_requests_one_gpu_and_cpu_cronjob_none() -> None:
    for manifest in CRONJOB_MANIFESTS:
        docs = _by_kind(manifest)
        pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        resources = container["resources"]
        device = docs["ConfigMap"]["data"]["AUTOSEG_DEVICE"]
        if manifest.name == "cronjob-gpu.yaml":
            assert resources["limits"]["nvidia.com/gpu"] == 1
            assert resources["requests"]["nvidia.com/gpu"] == 1
            assert container["image"].endswith("-gpu")
            assert device in ("auto", "gpu")
            assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        else:
            assert "nvidia.com/gpu" not in resources["limits"]
            assert container["image"].endswith("-cpu")
            assert device == "cpu"


# --------------------------------------------------------------------------- Digdag

_DIGDAG_VAR = re.compile(r"\$\{([^}]+)\}")
_DIGDAG_TOP_KEYS = {"timezone", "schedule", "_export", "_error", "_check", "_retry",
                    "_parallel", "sla"}


def _digdag() -> dict[str, Any]:
    return yaml.safe_load(DIGDAG_FILE.read_text())


def _digdag_render(text: str, params: dict[str, Any]) -> str:
    """Digdag's ``${name}`` substitution for plain parameter names (secrets are left alone)."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("secret:"):
            return match.group(0)
        return str(params[name])
    return _DIGDAG_VAR.sub(value, text)


def _digdag_command(params: dict[str, Any]) -> list[str]:
    workflow = _digdag()
    return shlex.split(_digdag_render(workflow["+segment"]["sh>"], params))


def test_digdag_workflow_syntax() -> None:
    workflow = _digdag()
    for key in workflow:
        assert key in _DIGDAG_TOP_KEYS or key.startswith("+"), f"unknown top-level key {key}"
    assert set(workflow["schedule"]) == {"daily>"}
    assert re.fullmatch(r"\d\d:\d\d:\d\d", workflow["schedule"]["daily>"])
    tasks = [key for key in workflow if key.startswith("+")]
    assert tasks == ["+segment"]
    task = workflow["+segment"]
    operators = [key for key in task if key.endswith(">")]
    assert operators == ["sh>"]
    # Every ${...} names a workflow parameter or a Digdag secret.
    params = workflow["_export"]
    for name in _DIGDAG_VAR.findall(DIGDAG_FILE.read_text()):
        assert name in params or name.startswith("secret:"), name
    assert task["_env"]["TD_API_KEY"] == "${secret:td.apikey}"


def test_digdag_runs_the_image_as_a_docker_task() -> None:
    docker = _digdag()["_export"]["docker"]
    assert re.fullmatch(r"[\w.\-/]+/autoseg:[\w.\-]+-cpu", docker["image"]), docker["image"]
    assert set(docker) <= {"image", "pull_always", "run_options", "docker", "build",
                           "build_options"}
    # Digdag runs `IMAGE /bin/sh <script>`: the image's ENTRYPOINT (autoseg) must be cleared.
    assert "--entrypoint=" in docker["run_options"]
    assert "--volume=${output_dir}:/output" in docker["run_options"]


def test_digdag_command_is_autoseg_run_with_the_workflow_parameters() -> None:
    params = _digdag()["_export"]
    argv = _digdag_command(params)
    assert argv[:2] == ["autoseg", "run"]
    given: dict[str, Any] = {}
    rest = argv[2:]
    while rest:
        flag = rest.pop(0)
        assert flag in FLAG_TO_PARAM, f"{flag} is not an autoseg run option"
        param = FLAG_TO_PARAM[flag]
        assert param.kind != "bool", "use --flag/--no-flag spelling for booleans"
        given[param.name] = rest.pop(0)
    for name in ("input_table", "output_table", "model_name", "min_clusters", "max_clusters",
                 "ignore_columns", "store"):
        assert given[name] == str(params[name]), name
    config = build_config(given)
    assert config.input_table == params["input_table"]
    # A parameter passed with -p reaches the command line.
    changed = _digdag_command({**params, "input_table": "other_db.other_table"})
    assert changed[changed.index("--input-table") + 1] == "other_db.other_table"


# --------------------------------------------------------------------------- slow: podman

IMAGE = "localhost/autoseg:cpu-test"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def _podman_unavailable() -> str | None:
    if sys.platform != "linux":
        return "podman image tests run on Linux only"
    if os.geteuid() != 0:
        return "needs root (debootstrap and rootful podman)"
    missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install -y podman runc debootstrap)"
    return None


def _run(argv: list[str], timeout: float = 600, check: bool = True,
         **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} exited {result.returncode}\n"
                             f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}")
    return result


def _output_dir(path: Path) -> Path:
    """A host directory the image's user (uid 10001) can write, as /output."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, UID, UID)
    return path


@pytest.fixture(scope="module")
def cpu_image() -> Iterator[dict[str, Any]]:
    reason = _podman_unavailable()
    if reason:
        pytest.skip(reason)
    metrics: dict[str, Any] = {}
    start = time.monotonic()
    _run(["bash", str(ROOT / "container" / "build-standin-base.sh"), "--configure-podman"],
         timeout=900)
    metrics["standin_base_seconds"] = round(time.monotonic() - start, 1)
    build_args = [f"--build-arg={name}={os.environ[name]}" for name in PROXY_VARS
                  if os.environ.get(name)]
    start = time.monotonic()
    _run(["podman", "build", "--pull=never", "--force-rm", *build_args,
          "-f", str(ROOT / "Dockerfile.cpu"), "-t", IMAGE, str(ROOT)], timeout=1800)
    metrics["build_seconds"] = round(time.monotonic() - start, 1)
    inspect = json.loads(_run(["podman", "image", "inspect", IMAGE]).stdout)[0]
    metrics["image_bytes"] = int(inspect["Size"])
    base = json.loads(_run(["podman", "image", "inspect",
                            "docker.io/library/python:3.11-slim"]).stdout)[0]
    metrics["base_bytes"] = int(base["Size"])
    print(f"\ncontainer metrics: {json.dumps(metrics)}")
    yield {"inspect": inspect, "metrics": metrics}


@pytest.mark.slow
def test_image_metadata(cpu_image: dict[str, Any]) -> None:
    config = cpu_image["inspect"]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["autoseg"]
    assert config["Cmd"] == ["--help"]
    assert config["WorkingDir"] == "/output"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == _version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    # The venv is about 0.7 GB (pyarrow, scipy, duckdb, pandas, sklearn, matplotlib).
    size = cpu_image["metrics"]["image_bytes"] - cpu_image["metrics"]["base_bytes"]
    assert size < 800_000_000, f"the layers above the base image take {size} bytes"


@pytest.mark.slow
def test_image_default_command_prints_help(cpu_image: dict[str, Any]) -> None:
    result = _run(["podman", "run", "--rm", IMAGE])
    assert "Usage: autoseg" in result.stdout
    version = _run(["podman", "run", "--rm", IMAGE, "version"]).stdout.strip()
    assert version == _version()


@pytest.mark.slow
def test_image_has_no_compilers_sources_or_tests(cpu_image: dict[str, Any]) -> None:
    # (The base image's own pip stays: removing it in a later layer would not shrink the
    # image. The application venv has none.)
    script = (
        "for tool in gcc cc g++ c++ make cmake; do command -v $tool && exit 1; done; "
        "find /opt/autoseg /src /dist -name tests -type d 2>/dev/null | grep . && exit 2; "
        "ls -d /root/.cache/pip /src /dist 2>/dev/null && exit 3; "
        "ls /opt/autoseg/bin/pip* 2>/dev/null && exit 4; "
        "/opt/autoseg/bin/python -m pip --version 2>/dev/null && exit 5; exit 0"
    )
    result = _run(["podman", "run", "--rm", "--user=0", "--entrypoint=/bin/sh", IMAGE,
                   "-c", script], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_demo_runs_in_the_container_and_writes_to_output(
        cpu_image: dict[str, Any], tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    out = _output_dir(tmp_path / "output")
    # As Kubernetes runs it: read-only root file system, /tmp writable, no capabilities.
    result = _run(["podman", "run", "--rm", "--read-only", "--tmpfs=/tmp",
                   "--cap-drop=ALL", "--security-opt=no-new-privileges",
                   f"--volume={out}:/output", IMAGE, "demo"], timeout=600)
    print(result.stdout[-3000:])
    summary = json.loads((out / "autoseg-output" / "summary.json").read_text())
    assert isinstance(summary["chosen_k"], int) and 2 <= summary["chosen_k"] <= 9
    assert summary["device"]["used"] == "cpu"
    assert f"chosen k = {summary['chosen_k']}" in result.stdout
    report = (out / "autoseg-output" / "report.html").read_text()
    assert report.lstrip().lower().startswith("<!doctype html")
    assert (out / "models" / "demo" / "model.json").is_file()
    database = out / "autoseg.duckdb"
    assert database.is_file()
    with duckdb.connect(str(database), read_only=True) as con:
        rows, clusters = con.execute(
            "select count(*), count(distinct cluster_id) from demo.customers_segmented"
        ).fetchone()
    assert rows == summary["rows_read"] and clusters == summary["chosen_k"]


@pytest.mark.slow
def test_sigterm_stops_the_run_with_130_and_writes_nothing(
        cpu_image: dict[str, Any], tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300_000, 8)), columns=[f"x{i}" for i in range(8)])
    frame.to_parquet(data / "big.parquet")
    os.chmod(data / "big.parquet", 0o644)
    out = _output_dir(tmp_path / "output")
    name = f"autoseg-sigterm-{os.getpid()}"
    _run(["podman", "run", "--detach", f"--name={name}", f"--volume={data}:/data:ro",
          f"--volume={out}:/output", IMAGE, "run", "--input-table", "/data/big.parquet",
          "--output-table", "seg.big", "--model-name", "big", "--kmeans-restarts", "30"])
    try:
        deadline = time.monotonic() + 120
        logs = ""
        while "stage search started" not in logs:
            assert time.monotonic() < deadline, f"the search never started:\n{logs}"
            time.sleep(0.2)
            done = _run(["podman", "logs", name], check=False)
            logs = done.stdout + done.stderr
        _run(["podman", "stop", "--time=30", name])  # SIGTERM, SIGKILL after 30 s
        state = json.loads(_run(["podman", "inspect", name]).stdout)[0]["State"]
        done = _run(["podman", "logs", name], check=False)
        logs = done.stdout + done.stderr
    finally:
        _run(["podman", "rm", "--force", name], check=False)
    assert state["ExitCode"] == 130, logs[-3000:]
    assert "stopped by signal SIGTERM; nothing was written" in logs
    assert not (out / "autoseg-output" / "summary.json").exists()
    assert not (out / "models" / "big").exists()
    database = out / "autoseg.duckdb"
    if database.exists():
        duckdb = pytest.importorskip("duckdb")
        with duckdb.connect(str(database), read_only=True) as con:
            tables = con.execute("select table_schema, table_name from information_schema.tables"
                                 ).fetchall()
        assert ("seg", "big") not in tables


@pytest.mark.slow
def test_digdag_task_command_line_runs_the_image(cpu_image: dict[str, Any],
                                                 tmp_path: Path) -> None:
    """Run the workflow's task exactly as Digdag's docker executor would.

    Digdag writes the ``sh>`` script to ``.digdag/tmp/digdag-sh-N-*/runner.sh`` in the project
    and runs ``docker run RUN_OPTIONS --rm -v PROJECT:PROJECT:rw -w PROJECT -e K=V... IMAGE
    /bin/sh RUNNER``. Only the store and the tables differ from the workflow's defaults: the
    task reads the sample table of ``autoseg demo`` from DuckDB instead of Treasure Data.
    """
    workflow = _digdag()
    out = _output_dir(tmp_path / "output")
    _run(["podman", "run", "--rm", f"--volume={out}:/output", IMAGE, "demo", "--rows", "800"])
    params = {**workflow["_export"], "store": "duckdb:/output/autoseg.duckdb",
              "input_table": "demo.customers", "output_table": "demo.from_digdag",
              "model_name": "digdag", "output_dir": str(out)}
    project = tmp_path / "project"
    runner_dir = project / ".digdag" / "tmp" / "digdag-sh-1-0"
    runner_dir.mkdir(parents=True)
    runner = runner_dir / "runner.sh"
    runner.write_text(_digdag_render(workflow["+segment"]["sh>"], params))
    for path in (project, project / ".digdag", project / ".digdag" / "tmp", runner_dir):
        os.chmod(path, 0o755)
    os.chmod(runner, 0o644)
    run_options = [_digdag_render(option, params)
                   for option in workflow["_export"]["docker"]["run_options"]]
    env = [f"-e={key}={value}" for key, value in params.items()
           if re.fullmatch(r"[a-zA-Z_][a-zA-Z_0-9]*", key) and not isinstance(value, dict)]
    result = _run(["podman", "run", *run_options, "--rm", "-v", f"{project}:{project}:rw",
                   "-w", str(project), *env, IMAGE, "/bin/sh",
                   str(runner.relative_to(project))], timeout=600)
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, "--log-format json gives JSON log lines"
    summary = json.loads((out / "autoseg-output" / "summary.json").read_text())
    assert summary["parameters"]["output_table"] == "demo.from_digdag"
    assert summary["parameters"]["max_clusters"] == workflow["_export"]["max_clusters"]
    assert (out / "models" / "digdag" / "model.json").is_file()


# (extras, the RAPIDS distributions that must resolve at 26.10)
GPU_EXTRA_SETS = {
    "gpu": ("cupy-cuda12x", "cudf-cu12", "cuml-cu12"),
    "gpu,dask": ("cupy-cuda12x", "cudf-cu12", "cuml-cu12", "dask", "distributed"),
    "gpu-dask": ("cudf-cu12", "cuml-cu12", "raft-dask-cu12", "dask-cudf-cu12", "dask-cuda",
                 "dask", "distributed"),
    "gpu-cu13": ("cupy-cuda13x", "cudf-cu13", "cuml-cu13"),
}


@pytest.mark.slow
@pytest.mark.parametrize("extras", sorted(GPU_EXTRA_SETS))
def test_gpu_extras_resolve_on_pypi(tmp_path: Path, extras: str) -> None:
    """``pip --dry-run`` of ``autoseg[EXTRAS]`` for the GPU image's Python (3.12, Ubuntu 24.04).

    Only PyPI is asked (the RAPIDS wheels are published there too): the NVIDIA index may be
    unreachable from a build machine, and pip then retries it for every package.
    """
    if shutil.which("pip") is None and importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not available")
    wheel_dir = tmp_path / "dist"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""}
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
          str(wheel_dir), str(ROOT)], env=env)
    (wheel,) = wheel_dir.glob("autoseg-*.whl")
    # Ubuntu 24.04 (glibc 2.39); CuPy's wheels carry the legacy manylinux2014 tag only.
    platforms = ["--platform=manylinux2014_x86_64"] + [
        f"--platform=manylinux_2_{minor}_x86_64" for minor in (17, 24, 27, 28, 35, 39)]
    # pip resolves a self-referencing extra (gpu-dask -> autoseg[gpu,dask]) from the wheel
    # only with the wheel on --find-links.
    result = _run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                   "--only-binary=:all:", "--python-version=3.12", *platforms,
                   "--find-links", str(wheel_dir),
                   "--target", str(tmp_path / "target"), "--report", str(tmp_path / "r.json"),
                   f"{wheel}[{extras}]"], env=env, timeout=900)
    report = json.loads((tmp_path / "r.json").read_text())
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in report["install"]}
    print(f"\n[{extras}]:", {k: versions[k] for k in sorted(versions)
                             if k.split("-")[0] in ("cupy", "cudf", "cuml", "xgboost", "dask",
                                                    "distributed", "raft", "autoseg")})
    for name in ("autoseg", "xgboost", *GPU_EXTRA_SETS[extras]):
        assert name in versions, result.stdout[-2000:]
    for name in GPU_EXTRA_SETS[extras]:
        if name.startswith(("cudf", "cuml", "raft", "dask-cu")):
            assert versions[name].startswith("26.10"), (name, versions[name])
        if name.startswith("cupy"):
            assert versions[name].startswith("14."), (name, versions[name])
    if "gpu-dask" in extras:
        assert versions["dask"] == versions["distributed"] == "2026.7.1"


# --------------------------------------------------------------------------- slow: GPU image

GPU_IMAGE = "localhost/autoseg:gpu-test"
# The GPU build needs room for ~3.6 GB of wheels, the 6.8 GB venv in the builder and the image.
GPU_BUILD_MIN_FREE_BYTES = 30 * 10**9


@pytest.fixture(scope="module")
def gpu_image() -> Iterator[dict[str, Any]]:
    """``Dockerfile`` built with podman on a Debian stand-in for the CUDA base, PyPI alone.

    9-15 minutes on two cores from scratch (the dependency layer is cached afterwards: a
    source change rebuilds in about 3 minutes, most of it copying the venv to the final stage).
    """
    reason = _podman_unavailable()
    if reason:
        pytest.skip(reason)
    storage = Path("/var/lib/containers")
    free = shutil.disk_usage(storage if storage.exists() else "/").free
    if free < GPU_BUILD_MIN_FREE_BYTES:
        pytest.skip(f"the GPU image build needs {GPU_BUILD_MIN_FREE_BYTES / 1e9:.0f} GB free "
                    f"disk ({free / 1e9:.1f} GB here)")
    base = _stages(DOCKERFILES["gpu"])[0].image
    metrics: dict[str, Any] = {}
    start = time.monotonic()
    _run(["bash", str(ROOT / "container" / "build-standin-base.sh"), "--configure-podman",
          base], timeout=900)
    metrics["standin_base_seconds"] = round(time.monotonic() - start, 1)
    build_args = [f"--build-arg={name}={os.environ[name]}" for name in PROXY_VARS
                  if os.environ.get(name)]
    start = time.monotonic()
    # NVIDIA_INDEX_URL= : PyPI alone (the RAPIDS wheels are there too).
    _run(["podman", "build", "--pull=never", "--force-rm", "--build-arg=NVIDIA_INDEX_URL=",
          *build_args, "-f", str(DOCKERFILES["gpu"]), "-t", GPU_IMAGE, str(ROOT)],
         timeout=3600)
    metrics["build_seconds"] = round(time.monotonic() - start, 1)
    inspect = json.loads(_run(["podman", "image", "inspect", GPU_IMAGE]).stdout)[0]
    metrics["image_bytes"] = int(inspect["Size"])
    metrics["base_bytes"] = int(json.loads(
        _run(["podman", "image", "inspect", base]).stdout)[0]["Size"])
    print(f"\ngpu container metrics: {json.dumps(metrics)}")
    yield {"inspect": inspect, "metrics": metrics}


@pytest.mark.slow
def test_gpu_image_has_the_gpu_stack_and_the_conventions(gpu_image: dict[str, Any]) -> None:
    config = gpu_image["inspect"]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["autoseg"]
    assert config["WorkingDir"] == "/output"
    code = ("import json, cudf, cuml, cupy, xgboost; print(json.dumps({m.__name__: m.__version__ "
            "for m in (cudf, cuml, cupy, xgboost)}))")
    result = _run(["podman", "run", "--rm", "--entrypoint=/opt/autoseg/bin/python", GPU_IMAGE,
                   "-c", code])
    versions = json.loads(result.stdout.strip().splitlines()[-1])
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "cudf-cu12==26.10.*" in extras["gpu"]
    assert versions["cudf"].startswith("26.10") and versions["cuml"].startswith("26.10")
    assert versions["cupy"].startswith("14.")
    version = _run(["podman", "run", "--rm", GPU_IMAGE, "version"]).stdout.strip()
    assert version == _version()
    # The venv (RAPIDS and its CUDA libraries) is ~6.8 GB; a jump means a second CUDA copy.
    size = gpu_image["metrics"]["image_bytes"] - gpu_image["metrics"]["base_bytes"]
    assert size < 8_000_000_000, f"the layers above the base image take {size} bytes"


@pytest.mark.slow
def test_gpu_image_demo_falls_back_to_the_cpu_and_logs_why(
        gpu_image: dict[str, Any], tmp_path: Path) -> None:
    out = _output_dir(tmp_path / "output")
    # No --gpus: the CUDA libraries load, CuPy finds no driver, --device auto uses the CPU.
    result = _run(["podman", "run", "--rm", "--read-only", "--tmpfs=/tmp", "--cap-drop=ALL",
                   "--security-opt=no-new-privileges", f"--volume={out}:/output", GPU_IMAGE,
                   "demo", "--rows", "2000"], timeout=900)
    logs = result.stdout + result.stderr
    assert re.search(r"device auto: using the CPU \(no CUDA device visible \(CUDARuntimeError: "
                     r"cudaError\w+", logs), logs[-3000:]
    summary = json.loads((out / "autoseg-output" / "summary.json").read_text())
    assert summary["device"]["used"] == "cpu"
    assert summary["device"]["reason"].startswith("no CUDA device visible (CUDARuntimeError")
    assert set(summary["stages_device"].values()) == {"cpu"}
    assert f"chosen k = {summary['chosen_k']}" in result.stdout
    # --device gpu in the same container: exit 2 and one line naming the reason
    refused = _run(["podman", "run", "--rm", f"--volume={out}:/output", "-e",
                    "AUTOSEG_DEVICE=gpu", GPU_IMAGE, "run", "--input-table", "demo.customers",
                    "--output-table", "demo.gpu_refused", "--model-name", "refused"],
                   check=False, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert lines[-1].startswith("autoseg: error: --device=gpu: no usable GPU (no CUDA device "
                                "visible (CUDARuntimeError"), refused.stderr
