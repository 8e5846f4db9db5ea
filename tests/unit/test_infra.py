"""Static checks of the operations files (infra/, prefect.yaml) without a container engine or cluster.

What runs here: every YAML/JSON file parses; the compose file validates against the Compose
Specification schema (vendored by check-jsonschema) and its variables, volumes, healthchecks
and secrets are consistent with infra/.env.example; the Dockerfiles parse (BuildKit's parser,
package ``dockerfile``); Kubernetes manifests validate against the Kubernetes OpenAPI schemas
(``kubernetes-validate``), the PyTorchJob's pod templates included; the GPU base job template
passes Prefect's own check, matches prefect-kubernetes' default template and renders into a
Job that validates as Kubernetes; prefect.yaml loads with Prefect's model, its entrypoints are
flows that accept the parameters, its pools are listed and its schedules parse.

The schema-based checks skip (with the reason) when their package is not installed.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import inspect
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.config import load_params, parse_params

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
COMPOSE_PATH = INFRA / "compose.yaml"
ENV_EXAMPLE_PATH = INFRA / ".env.example"
DOCKERFILE_PATH = INFRA / "Dockerfile"
DOCKERIGNORE_PATH = INFRA / "Dockerfile.dockerignore"
MLFLOW_DOCKERFILE_PATH = INFRA / "mlflow" / "Dockerfile"
K8S = INFRA / "k8s"
GPU_TEMPLATE_PATH = K8S / "gpu-job-template.json"
PYTORCHJOB_PATH = K8S / "pytorchjob-train.yaml"
HELM_VALUES_PATH = K8S / "prefect-worker-values.yaml"
WORK_POOLS_PATH = INFRA / "work-pools.yaml"
PREFECT_YAML_PATH = REPO_ROOT / "prefect.yaml"
PLATFORMS_PATH = REPO_ROOT / "components" / "benchmarking" / "platforms.yaml"
JETSON_UNIT_PATH = INFRA / "jetson" / "inspectops-worker@.service"
README_PATH = REPO_ROOT / "README.md"
RETRAIN_OVERLAY_PATH = INFRA / "params" / "gpu-retrain.yaml"

NAMESPACE = "inspectops"
KUBERNETES_VERSION = "1.33"
"""Oldest Kubernetes minor the manifests must be valid for."""

SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE_KEY|CREDENTIAL|AUTH_STRING)", re.IGNORECASE)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ escapes a dollar.
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
WHOLE_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")
PREFECT_ENV_PLACEHOLDER = re.compile(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PREFECT_VARIABLE_PLACEHOLDER = re.compile(r"\{\{\s*prefect\.variables\.([A-Za-z0-9_]+)\s*\}\}")
STEP_OUTPUT_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_\-]+)\.[A-Za-z0-9_]+\s*\}\}")


# --------------------------------------------------------------------------- helpers


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _walk_strings(key)
            yield from _walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_strings(item)


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE_PATH.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example line {number}: expected KEY=VALUE, got {line!r}"
        assert key not in values, f".env.example: {key} is set twice"
        values[key] = value
    return values


def _jetson_env_example() -> dict[str, str]:
    """``infra/jetson/worker.env.example`` as KEY -> value (comments and blank lines skipped)."""
    lines = (INFRA / "jetson" / "worker.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def _compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE_PATH)


def _compose_variables() -> dict[str, list[tuple[str | None, str | None]]]:
    """Every ``${VAR...}`` in the compose file: name -> [(operator, default or message)]."""
    found: dict[str, list[tuple[str | None, str | None]]] = {}
    for text in _walk_strings(_compose()):
        for match in COMPOSE_VARIABLE.finditer(text):
            found.setdefault(match.group(1), []).append((match.group(2), match.group(3)))
    return found


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _long_running(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) != "no"


def _k8s_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s_yaml_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path != HELM_VALUES_PATH)


def _gpu_template() -> dict[str, Any]:
    return json.loads(GPU_TEMPLATE_PATH.read_text())


def _prefect_yaml() -> dict[str, Any]:
    return _load_yaml(PREFECT_YAML_PATH)


def _deployments() -> list[dict[str, Any]]:
    return _prefect_yaml()["deployments"]


def _work_pools() -> dict[str, dict[str, Any]]:
    pools = dict(_load_yaml(WORK_POOLS_PATH)["pools"])
    if PLATFORMS_PATH.is_file():
        for name, platform in _load_yaml(PLATFORMS_PATH)["platforms"].items():
            pools.setdefault(platform["work_pool"], {"type": "process", "platform": name})
    return pools


def _flow_of(entrypoint: str) -> Any:
    path, function = entrypoint.split(":")
    assert (REPO_ROOT / path).is_file(), f"entrypoint file {path} does not exist"
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert hasattr(module, function), f"{path} has no {function}"
    return getattr(module, function)


def _readme_operations_section() -> str:
    text = README_PATH.read_text()
    marker = "## Operations: team stack, deployments, GPU cluster"
    assert marker in text, f"README.md lacks the section {marker!r}"
    section = text.split(marker, 1)[1]
    return section.split("\n## ", 1)[0]


def _render_params_module() -> Any:
    """infra/scripts/render_params.py, which is a script, not part of a package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("infra_render_params", INFRA / "scripts" / "render_params.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_known_resources(owner: str, container: dict[str, Any]) -> None:
    """Resource names Kubernetes accepts here: the standard ones or a vendor's (with a domain)."""
    for kind in ("requests", "limits"):
        for name in (container.get("resources") or {}).get(kind) or {}:
            assert name in {"cpu", "memory", "ephemeral-storage"} or "/" in name, f"{owner}: unknown resource {name!r}"


def _strict_k8s_validate(resource: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


# --------------------------------------------------------------------------- every file


def _data_files() -> list[Path]:
    files = [PREFECT_YAML_PATH, *INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml"), *INFRA.rglob("*.json")]
    return sorted(set(files))


@pytest.mark.parametrize("path", _data_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_yaml_and_json_file_parses(path: Path) -> None:
    if path.suffix == ".json":
        json.loads(path.read_text())
    else:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert documents, f"{path} is empty"


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.sh")), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shell_scripts_have_valid_syntax(path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not available")
    result = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def _shell_syntax_error(script: str, shell: str = "sh") -> str | None:
    """``None`` when ``shell -n`` accepts the script, else its complaint."""
    executable = shutil.which(shell)
    if executable is None:
        pytest.skip(f"{shell} not available")
    result = subprocess.run([executable, "-n", "-c", script], capture_output=True, text=True, check=False)
    return None if result.returncode == 0 else result.stderr


def test_embedded_shell_scripts_have_valid_syntax() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        entrypoint = service.get("entrypoint") or []
        if entrypoint[-2:] == ["/bin/sh", "-c"] or entrypoint == ["/bin/sh", "-c"]:
            script = "\n".join(service["command"]).replace("$$", "$")  # compose's escape for a literal $
            assert _shell_syntax_error(script) is None, f"compose service {name}: {_shell_syntax_error(script)}"
    for role, replica in _pytorchjob()["spec"]["pytorchReplicaSpecs"].items():
        container = _replica_container(replica)
        assert container["command"][:2] == ["bash", "-c"]
        script = container["args"][0]
        assert _shell_syntax_error(script, "bash") is None, f"PyTorchJob {role}: {_shell_syntax_error(script, 'bash')}"


# --------------------------------------------------------------------------- compose


def test_compose_matches_the_compose_specification() -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (vendors the compose-spec schema) not installed")
    from importlib import resources

    import jsonschema

    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors, "\n".join(errors)


def test_compose_has_the_team_stack_services() -> None:
    services = _compose()["services"]
    assert {"postgres", "prefect-server", "mlflow", "minio", "minio-init", "worker"} <= set(services)


def test_compose_services_reference_only_defined_volumes_and_networks() -> None:
    compose = _compose()
    volumes = set(compose.get("volumes") or {})
    networks = set(compose.get("networks") or {}) | {"default"}
    used_volumes: set[str] = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if source.startswith((".", "/", "~", "$")):
                bind = (COMPOSE_PATH.parent / source).resolve()
                assert bind.exists(), f"service {name}: bind mount source {source} does not exist"
            else:
                assert source in volumes, f"service {name}: volume {source!r} is not declared under volumes:"
                used_volumes.add(source)
        service_networks = service.get("networks", [])
        for network in service_networks if isinstance(service_networks, list) else list(service_networks):
            assert network in networks, f"service {name}: network {network!r} is not declared"
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"service {name} depends on unknown service {dependency}"
    assert volumes == used_volumes, f"declared but unused volumes: {sorted(volumes - used_volumes)}"


def test_compose_variables_have_a_default_or_are_in_env_example() -> None:
    example = _env_example()
    variables = _compose_variables()
    for name, uses in variables.items():
        has_default = any(op in (":-", "-") for op, _ in uses)
        assert has_default or name in example, f"${{{name}}} has no default and is not in infra/.env.example"
        defaults = {value for op, value in uses if op in (":-", "-")}
        assert len(defaults) <= 1, f"${{{name}}} has different defaults in compose.yaml: {sorted(defaults)}"
        if defaults and example.get(name):
            assert defaults == {example[name]}, (
                f"${{{name}}}: compose default {defaults.pop()!r} differs from .env.example {example[name]!r}"
            )
    unused = sorted(set(example) - set(variables))
    assert not unused, f"infra/.env.example sets variables compose.yaml never uses: {unused}"


def test_compose_secrets_are_required_variables_never_literals() -> None:
    example = _env_example()
    for name, uses in _compose_variables().items():
        if SECRET_NAME.search(name):
            assert all(op == ":?" for op, _ in uses), (
                f"secret ${{{name}}} must be required (${{{name}:?...}}), no default"
            )
            assert example.get(name) == "", f"infra/.env.example must leave the secret {name} empty"
    for service_name, service in _compose()["services"].items():
        for key, value in _environment(service).items():
            text = "" if value is None else str(value)
            if SECRET_NAME.search(key):
                assert WHOLE_REFERENCE.match(text), f"{service_name}: {key} must be a required ${{VAR:?}} reference"
            marked = COMPOSE_VARIABLE.sub(lambda m: "REQUIRED" if m.group(2) == ":?" else "OPTIONAL", text)
            for password in re.findall(r"://[^:/@\s]+:([^@\s/]+)@", marked):
                assert password == "REQUIRED", f"{service_name}: {key} has a password in a URL that is not ${{VAR:?}}"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value == "", f"infra/.env.example: {key} must be empty (secrets are never committed)"


def test_compose_long_running_services_have_healthchecks() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        if _long_running(service):
            test = (service.get("healthcheck") or {}).get("test")
            assert test, f"service {name} runs continuously but has no healthcheck"
            assert not (service.get("healthcheck") or {}).get("disable"), f"service {name} disables its healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            wanted = condition.get("condition") if isinstance(condition, dict) else None
            if wanted == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{name} waits for {dependency} to be healthy"
            if wanted == "service_completed_successfully":
                assert not _long_running(services[dependency]), f"{name} waits for {dependency} to exit"


def test_compose_wires_prefect_and_mlflow_to_postgres_and_minio() -> None:
    services = _compose()["services"]
    prefect_env = _environment(services["prefect-server"])
    assert prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"]

    mlflow = services["mlflow"]
    mlflow_env = _environment(mlflow)
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "--serve-artifacts" in mlflow["command"]

    # The two databases and the two buckets.
    postgres_env = _environment(services["postgres"])
    assert "PREFECT_DB_NAME" in postgres_env["POSTGRES_DB"] and "MLFLOW_DB_NAME" in postgres_env["MLFLOW_DB_NAME"]
    init = "\n".join(services["minio-init"]["command"])
    assert "MLFLOW_BUCKET" in init and "DVC_BUCKET" in init and "mc mb" in init


def test_compose_versions_match_the_project_pins() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    prefect_pin = re.search(r'"prefect==([^"]+)"', pyproject).group(1)
    mlflow_pin = re.search(r'"mlflow(?:\[[a-z,]+\])?==([^"]+)"', pyproject).group(1)
    services = _compose()["services"]
    assert f"prefecthq/prefect:{prefect_pin}-python3.11" in services["prefect-server"]["image"]
    assert services["mlflow"]["build"]["args"]["MLFLOW_VERSION"] == mlflow_pin
    mlflow_dockerfile = MLFLOW_DOCKERFILE_PATH.read_text()
    assert f"ARG MLFLOW_VERSION={mlflow_pin}" in mlflow_dockerfile


def test_compose_worker_runs_the_project_image_on_cpu_local() -> None:
    worker = _compose()["services"]["worker"]
    build = worker["build"]
    assert (COMPOSE_PATH.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE_PATH
    command = worker["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    pool = command[command.index("--pool") + 1]
    assert "cpu-local" in pool and command[command.index("--type") + 1] == "process"
    env = _environment(worker)
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["INSPECTOPS_WORKDIR"] == _dockerfile_env()["INSPECTOPS_WORKDIR"]


def test_real_env_file_is_gitignored() -> None:
    assert ".env" in (INFRA / ".gitignore").read_text().split()
    git = shutil.which("git")
    if git is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run([git, "check-ignore", "-q", "infra/.env"], cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, "infra/.env is not ignored by git"


# --------------------------------------------------------------------------- Dockerfiles


def _dockerfile_commands(path: Path) -> list[Any]:
    dockerfile = pytest.importorskip("dockerfile", reason="dockerfile (BuildKit's parser) not installed")
    return list(dockerfile.parse_file(str(path)))


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in re.findall(r"^\s*(?:ENV\s+|\s+)([A-Z_]+)=(\S+?)\s*\\?$", DOCKERFILE_PATH.read_text(), re.MULTILINE):
        env[line[0]] = line[1]
    return env


def test_project_dockerfile_builds_the_pinned_project_on_cuda_as_non_root() -> None:
    commands = _dockerfile_commands(DOCKERFILE_PATH)
    args = {
        c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
        for c in commands
        if c.cmd == "ARG" and "=" in c.value[0]
    }
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:"), "the image must build on a CUDA base"
    assert args["PYTHON_VERSION"] == "3.11"
    final_from = [c for c in commands if c.cmd == "FROM"][-1]
    assert final_from.value[0] == "${CUDA_IMAGE}"

    runs = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    assert ".[pretrained,quantization]" in runs
    assert "--extra pretrained --extra quantization" in runs, "dependencies come from pyproject.toml's pins"
    users = [c.value[0] for c in commands if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "the image must run as a non-root user"
    assert args.get("UID") not in {None, "0"}
    entrypoints = [c for c in commands if c.cmd == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1].value == (), "reset the base image's entrypoint: Prefect passes commands"
    workdirs = [c.value[0] for c in commands if c.cmd == "WORKDIR"]
    assert workdirs[-1] == _dockerfile_env()["INSPECTOPS_WORKDIR"]
    for copy_command in (c for c in commands if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)):
        for source in copy_command.value[:-1]:
            assert (REPO_ROOT / source).exists(), f"COPY source {source} is not in the repository"


def test_dvc_s3_pin_satisfies_dvc() -> None:
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    pin = re.search(r"ARG DVC_S3_VERSION=(\S+)", DOCKERFILE_PATH.read_text()).group(1)
    try:
        requirements = [Requirement(r) for r in requires("dvc") or []]
    except PackageNotFoundError:
        pytest.skip("dvc not installed")
    s3 = next(r for r in requirements if r.name == "dvc-s3")
    assert s3.specifier.contains(pin), f"dvc-s3=={pin} does not satisfy dvc's s3 extra {s3.specifier}"


def test_dockerignore_keeps_secrets_and_data_out_but_not_the_sources() -> None:
    patterns = {
        line.strip() for line in DOCKERIGNORE_PATH.read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    for required in (".git", "infra/.env", ".dvc/config.local", "data", "artifacts", "mlflow.db", ".dvc/cache"):
        assert required in patterns, f"{DOCKERIGNORE_PATH.name} must exclude {required}"
    for needed in ("pyproject.toml", "README.md", "components", "flows", "infra", "infra/scripts", "params.yaml"):
        assert needed not in patterns, f"{DOCKERIGNORE_PATH.name} excludes {needed}, which the image needs"


@pytest.mark.parametrize("path", [DOCKERFILE_PATH, MLFLOW_DOCKERFILE_PATH], ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_dockerfile_run_instructions_have_valid_shell_syntax(path: Path) -> None:
    for command in _dockerfile_commands(path):
        if command.cmd == "RUN" and not command.json:
            error = _shell_syntax_error(command.value[0])
            assert error is None, f"{path.name} line {command.start_line}: {error}"


def test_mlflow_dockerfile_runs_as_non_root() -> None:
    commands = _dockerfile_commands(MLFLOW_DOCKERFILE_PATH)
    users = [c.value[0] for c in commands if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    runs = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    assert "psycopg2" in runs and "boto3" in runs


# --------------------------------------------------------------------------- Kubernetes


def _k8s_resources() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in _k8s_yaml_files() for doc in _k8s_documents(path)]


@pytest.mark.parametrize(
    ("path", "resource"),
    _k8s_resources(),
    ids=lambda value: value.name if isinstance(value, Path) else value.get("kind", "?"),
)
def test_k8s_manifests_are_well_formed(path: Path, resource: dict[str, Any]) -> None:
    assert resource.get("apiVersion") and resource.get("kind"), f"{path.name}: missing apiVersion/kind"
    metadata = resource.get("metadata") or {}
    assert metadata.get("name"), f"{path.name}: {resource['kind']} has no metadata.name"
    if resource["kind"] != "Namespace":
        assert metadata.get("namespace") == NAMESPACE, f"{path.name}: {resource['kind']} outside {NAMESPACE}"
    assert resource["kind"] != "Secret", f"{path.name}: secrets are created with kubectl, never committed"
    if resource["apiVersion"].startswith("kubeflow.org/"):
        return  # a custom resource: its pod templates are checked in the PyTorchJob tests
    _strict_k8s_validate(resource)


def _pytorchjob() -> dict[str, Any]:
    (job,) = _k8s_documents(PYTORCHJOB_PATH)
    return job


def _replica_container(replica: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in replica["template"]["spec"]["containers"] if c["name"] == "pytorch"]
    return container


def test_pytorchjob_structure_and_pod_templates() -> None:
    job = _pytorchjob()
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) <= {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    for role, replica in replicas.items():
        assert replica["restartPolicy"] in {"Never", "OnFailure", "ExitCode", "Always"}
        container = _replica_container(replica)  # the operator finds the container by this name
        assert container["image"], f"{role}: container has no image"
        assert container["resources"]["limits"].get("nvidia.com/gpu"), f"{role}: no GPU limit"
        _assert_known_resources(role, container)
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"check-{role.lower()}"}}
        template["template"] = replica["template"]
        _strict_k8s_validate(template)


def test_pytorchjob_nodes_and_devices_match_the_lightning_overrides() -> None:
    replicas = _pytorchjob()["spec"]["pytorchReplicaSpecs"]
    total_nodes = sum(replica["replicas"] for replica in replicas.values())
    for role, replica in replicas.items():
        container = _replica_container(replica)
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert int(env["NUM_NODES"]) == total_nodes, f"{role}: NUM_NODES must equal Master + Worker replicas"
        assert int(env["GPUS_PER_NODE"]) == int(container["resources"]["limits"]["nvidia.com/gpu"])
        script = "\n".join(container["command"] + container["args"])
        assert 'export NODE_RANK="${RANK}"' in script, "Lightning reads NODE_RANK; the operator sets RANK"
        assert "inspectops train segment" in script
        overrides = dict(re.findall(r"-S\s+([a-z_.]+)=(\S+)", script))
        assert overrides["segment.train.num_nodes"] == '"${NUM_NODES}"'
        assert overrides["segment.train.devices"] == '"${GPUS_PER_NODE}"'
        # The overrides are real params keys with valid values once the shell fills them in.
        values = {"${NUM_NODES}": env["NUM_NODES"], "${GPUS_PER_NODE}": env["GPUS_PER_NODE"]}
        resolved = {key: yaml.safe_load(values.get(value.strip('"'), value)) for key, value in overrides.items()}
        params = load_params(REPO_ROOT / "params.yaml", resolved)
        assert params.segment.train.num_nodes == total_nodes and params.segment.train.strategy == "ddp"
        for path in re.findall(r"infra/\S+", script):
            assert (REPO_ROOT / path).exists(), f"{role}: the script uses {path}, which does not exist"


def test_helm_worker_values_poll_the_gpu_pool_on_the_team_server() -> None:
    values = _load_yaml(HELM_VALUES_PATH)
    assert values["namespaceOverride"] == NAMESPACE
    worker = values["worker"]
    assert worker["apiConfig"] == "server"
    assert worker["serverApiConfig"]["apiUrl"].endswith("/api")
    assert worker["config"]["type"] == "kubernetes"
    pool = worker["config"]["workPool"]
    assert _work_pools()[pool]["type"] == "kubernetes"
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    prefect_pin = re.search(r'"prefect==([^"]+)"', pyproject).group(1)
    assert worker["image"]["prefectTag"].startswith(f"{prefect_pin}-"), "worker and server run the same Prefect"
    configmap = worker["config"]["baseJobTemplate"]["existingConfigMapName"]
    assert f"create configmap {configmap}" in _readme_operations_section().replace("\\\n", " ").replace("  ", " ")
    # Keys the chart defines (prefect-worker values.yaml); a typo would be ignored by Helm.
    known_worker_keys = {
        "autoscaling", "clusterUid", "initContainer", "image", "config", "apiConfig", "cloudApiConfig",
        "selfHostedCloudApiConfig", "serverApiConfig", "revisionHistoryLimit", "replicaCount", "resources",
        "livenessProbe", "podSecurityContext", "priorityClassName", "containerSecurityContext", "podLabels",
        "podAnnotations", "affinity", "nodeSelector", "tolerations", "extraEnvVars", "extraEnvVarsCM",
        "extraEnvVarsCMs", "extraEnvVarsSecret", "extraEnvVarsSecrets", "extraContainers", "extraVolumes",
        "extraVolumeMounts", "extraArgs", "basicAuth",
    }  # fmt: skip
    known_config_keys = {
        "workPool", "workQueues", "queryInterval", "prefetchSeconds", "http2", "limit", "name", "installPolicy",
        "type", "baseJobTemplate",
    }  # fmt: skip
    assert set(worker) <= known_worker_keys, f"unknown worker keys: {sorted(set(worker) - known_worker_keys)}"
    assert set(worker["config"]) <= known_config_keys
    assert worker["config"]["installPolicy"] in {"always", "if-not-present", "never", "prompt"}


# --------------------------------------------------------------------------- GPU base job template


def test_gpu_job_template_passes_prefects_own_check() -> None:
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.templating import find_placeholders

    template = _gpu_template()
    validate_base_job_template(template)  # every {{ var }} of job_configuration is a declared variable

    declared = set(template["variables"]["properties"])
    used = {placeholder.name for placeholder in find_placeholders(json.dumps(template["job_configuration"]))}
    assert used <= declared, f"undeclared: {sorted(used - declared)}"
    assert declared <= used, f"declared but never used: {sorted(declared - used)}"


def test_gpu_job_template_variables_are_a_valid_json_schema_with_valid_defaults() -> None:
    import jsonschema

    variables = _gpu_template()["variables"]
    validator_class = jsonschema.validators.validator_for(variables, default=jsonschema.Draft202012Validator)
    validator_class.check_schema(variables)
    defaults = {name: spec["default"] for name, spec in variables["properties"].items() if "default" in spec}
    validator_class(variables).validate(defaults)
    for name in ("image", "gpu_count", "node_selector", "tolerations", "mlflow_tracking_uri", "storage_secret"):
        assert name in variables["properties"], f"the GPU template must expose {name}"


def test_gpu_job_template_has_the_keys_of_prefect_kubernetes_default() -> None:
    worker = pytest.importorskip("prefect_kubernetes.worker", reason="prefect-kubernetes not installed")
    default = worker.KubernetesWorker.get_default_base_job_template()
    ours = _gpu_template()
    assert set(ours) == set(default)
    assert set(ours["job_configuration"]) == set(default["job_configuration"])
    manifest = ours["job_configuration"]["job_manifest"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")


def _render_gpu_job(job_variables: dict[str, Any]) -> dict[str, Any]:
    """The Job manifest a Kubernetes worker would create for a flow run with these variables."""
    worker = pytest.importorskip("prefect_kubernetes.worker", reason="prefect-kubernetes not installed")
    from prefect.client.schemas.objects import FlowRun

    class _NoClient:
        """Stands in for the API client: the template references no blocks or variables."""

    configuration = asyncio.run(
        worker.KubernetesWorkerJobConfiguration.from_template_and_values(
            _gpu_template(), job_variables, client=_NoClient()
        )
    )
    configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="weekly-retrain"))
    return copy.deepcopy(configuration.job_manifest)


def _gpu_deployments() -> list[dict[str, Any]]:
    pools = _work_pools()
    return [d for d in _deployments() if pools.get(d["work_pool"]["name"], {}).get("type") == "kubernetes"]


def _concrete_job_variables(deployment: dict[str, Any]) -> dict[str, Any]:
    """Deployment job_variables with deploy-time ``{{ $VAR }}`` placeholders given sample values."""
    text = json.dumps(deployment["work_pool"].get("job_variables") or {})
    return json.loads(PREFECT_ENV_PLACEHOLDER.sub("registry.example.com/inspectops:0123abc", text))


def test_gpu_job_renders_into_a_valid_kubernetes_job() -> None:
    deployments = _gpu_deployments()
    assert deployments, "no deployment uses the gpu-k8s pool"
    for deployment in deployments:
        job_variables = _concrete_job_variables(deployment)
        manifest = _render_gpu_job(job_variables)
        pod = manifest["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == job_variables["image"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == job_variables.get("gpu_count", 1)
        _assert_known_resources(deployment["name"], container)
        assert pod["nodeSelector"] and pod["tolerations"], "GPU Jobs must target and tolerate GPU nodes"
        env = {item["name"]: item for item in container["env"]}
        assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]["name"], f"{key} from a Secret"
        assert manifest["metadata"]["namespace"] == NAMESPACE
        # Prefect's worker insists on these two in the pod spec (its manifest check); Kubernetes
        # drops them as unknown fields. Everything else must be valid Kubernetes.
        assert (pod.pop("completions"), pod.pop("parallelism")) == (1, 1)
        _strict_k8s_validate(manifest)


def test_gpu_deployment_job_variables_are_declared_and_valid() -> None:
    import jsonschema

    variables = _gpu_template()["variables"]
    for deployment in _gpu_deployments():
        job_variables = _concrete_job_variables(deployment)
        unknown = set(job_variables) - set(variables["properties"])
        assert not unknown, f"{deployment['name']}: job_variables not in the GPU template: {sorted(unknown)}"
        jsonschema.validators.validator_for(variables, default=jsonschema.Draft202012Validator)(variables).validate(
            job_variables
        )


# --------------------------------------------------------------------------- prefect.yaml


def test_prefect_yaml_loads_with_prefects_model() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(_prefect_yaml())
    assert model.deployments, "prefect.yaml declares no deployment"
    for deployment in model.deployments:
        assert deployment.name and deployment.entrypoint and deployment.work_pool and deployment.work_pool.name


def test_prefect_yaml_entrypoints_are_flows_that_accept_the_parameters() -> None:
    from prefect import Flow

    seen: set[str] = set()
    for deployment in _deployments():
        flow = _flow_of(deployment["entrypoint"])
        assert isinstance(flow, Flow), f"{deployment['entrypoint']} is not a Prefect flow"
        full_name = f"{flow.name}/{deployment['name']}"
        assert full_name not in seen, f"deployment {full_name} is declared twice"
        seen.add(full_name)
        inspect.signature(flow.fn).bind_partial(**(deployment.get("parameters") or {}))
    assert {"inspectops-pipeline/local", "inspectops-pipeline/gpu-retrain"} <= seen


def test_prefect_yaml_work_pools_are_documented() -> None:
    pools = _work_pools()
    for deployment in _deployments():
        pool = deployment["work_pool"]["name"]
        assert pool in pools, (
            f"{deployment['name']}: work pool {pool!r} is in neither infra/work-pools.yaml nor platforms.yaml"
        )
    by_name = {d["name"]: d for d in _deployments()}
    assert by_name["local"]["work_pool"]["name"] == "cpu-local" and pools["cpu-local"]["type"] == "process"
    assert by_name["gpu-retrain"]["work_pool"]["name"] == "gpu-k8s" and pools["gpu-k8s"]["type"] == "kubernetes"
    for name, pool in _load_yaml(WORK_POOLS_PATH)["pools"].items():
        if pool.get("base_job_template"):
            assert (REPO_ROOT / pool["base_job_template"]).is_file(), f"{name}: base job template missing"


def test_prefect_yaml_schedules_parse() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    schedules = [(d["name"], s) for d in _deployments() for s in d.get("schedules") or []]
    assert any(name == "gpu-retrain" for name, _ in schedules), "gpu-retrain has no schedule"
    for name, schedule in schedules:
        assert "cron" in schedule, f"{name}: only cron schedules are expected"
        CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"), day_or=schedule.get("day_or", True))


def test_prefect_yaml_has_one_benchmark_deployment_per_platform() -> None:
    if not PLATFORMS_PATH.is_file():
        pytest.skip("components/benchmarking/platforms.yaml not there yet")
    platforms = _load_yaml(PLATFORMS_PATH)["platforms"]
    benchmark = {
        d["name"]: d for d in _deployments() if d["entrypoint"] == "flows/benchmark.py:benchmark_platform_flow"
    }
    assert set(benchmark) == set(platforms), "prefect.yaml and platforms.yaml list different platforms"
    for name, platform in platforms.items():
        assert benchmark[name]["work_pool"]["name"] == platform["work_pool"]
        assert benchmark[name]["parameters"]["platform"] == name


def _step_function(step_name: str) -> Any:
    module_name, _, attr = step_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def _pull_sections() -> list[tuple[str, list[dict[str, Any]]]]:
    document = _prefect_yaml()
    sections = [("<project>", document.get("pull") or [])]
    sections += [(d["name"], d["pull"]) for d in document["deployments"] if d.get("pull")]
    return sections


def test_prefect_yaml_pull_steps_call_real_steps_with_real_arguments() -> None:
    for owner, steps in _pull_sections():
        ids: set[str] = set()
        for step in steps:
            ((step_name, arguments),) = step.items()
            function = _step_function(step_name)
            kwargs = {k: v for k, v in (arguments or {}).items() if k not in {"id", "requires"}}
            inspect.signature(function).bind(**kwargs)
            for text in _walk_strings(kwargs):
                for reference in STEP_OUTPUT_PLACEHOLDER.findall(text):
                    if reference not in {"prefect"}:
                        assert reference in ids, f"{owner}: {step_name} uses output of unknown step {reference!r}"
                for path in re.findall(r"\binfra/[\w./-]+", text):
                    assert (REPO_ROOT / path).exists(), f"{owner}: {step_name} uses {path}, which does not exist"
            if arguments and arguments.get("id"):
                ids.add(arguments["id"])
    project_pull = _prefect_yaml()["pull"]
    assert "set_working_directory" in next(iter(project_pull[0])), "the local case runs from the worker's checkout"
    retrain = next(d for d in _deployments() if d["name"] == "gpu-retrain")
    scripts = " ".join(_walk_strings(retrain["pull"]))
    assert "git_clone" in json.dumps(retrain["pull"]) and "dvc-pull.sh" in scripts


def test_prefect_yaml_placeholders_are_provided_and_documented() -> None:
    text = " ".join(_walk_strings(_prefect_yaml()))  # values only: comments may show {{ $VAR }} as an example
    readme = _readme_operations_section()
    for variable in set(PREFECT_ENV_PLACEHOLDER.findall(text)):
        assert variable in readme, f"README's operations section must explain ${variable}"
    for variable in set(PREFECT_VARIABLE_PLACEHOLDER.findall(text)):
        assert f"prefect variable set {variable}" in readme, f"README must show how to set Prefect variable {variable}"
    # Every process worker we ship sets the directory the local pull step changes into.
    workdir = _dockerfile_env()["INSPECTOPS_WORKDIR"]
    assert _environment(_compose()["services"]["worker"])["INSPECTOPS_WORKDIR"] == workdir
    assert f"Environment=INSPECTOPS_WORKDIR={workdir}" in JETSON_UNIT_PATH.read_text()


def test_gpu_retrain_params_render_and_match_the_gpu_count() -> None:
    merged = _render_params_module().render(REPO_ROOT / "params.yaml", RETRAIN_OVERLAY_PATH)
    params = parse_params(merged)
    retrain = next(d for d in _deployments() if d["name"] == "gpu-retrain")
    assert retrain["parameters"]["params_path"] in " ".join(_walk_strings(retrain["pull"]))
    assert params.segment.train.devices == retrain["work_pool"]["job_variables"]["gpu_count"]
    assert params.segment.train.accelerator == "gpu"


def test_cpu_transistor_overlay_renders_the_measured_cpu_recipe() -> None:
    """The real-data CPU recipe: params.yaml's, trained 36 epochs on TAO's 256 px."""
    merged = _render_params_module().render(REPO_ROOT / "params.yaml", INFRA / "params" / "cpu-transistor.yaml")
    params = parse_params(merged)
    model, train = params.segment.model, params.segment.train
    assert (model.upsample_dim, model.fine_dim) == (0, 16)  # params.yaml's light head with its stride-2 skip
    assert (train.epochs, train.freeze_backbone_levels, train.accelerator) == (36, 0, "auto")
    assert (train.grad_clip_norm, train.defect_share) == (1.0, 0.2)
    assert (params.data.source, params.data.image_size) == ("mvtec", 256)
    # everything else is params.yaml's: the overlay holds only what differs
    assert train.ema == load_params(REPO_ROOT / "params.yaml").segment.train.ema


def test_render_params_rejects_unknown_keys(tmp_path: Path) -> None:
    module = _render_params_module()
    main, merge = module.main, module.merge
    assert merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 3}, "d": [2]}) == {"a": {"b": 3, "c": 2}, "d": [2]}
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("segment:\n  train:\n    epoch: 5\n")  # misspelt: epochs
    out = tmp_path / "out.yaml"
    assert main(["--base", str(REPO_ROOT / "params.yaml"), "--overlay", str(overlay), "--out", str(out)]) == 1
    assert not out.exists()
    overlay.write_text("segment:\n  train:\n    epochs: 5\n")
    assert main(["--base", str(REPO_ROOT / "params.yaml"), "--overlay", str(overlay), "--out", str(out)]) == 0
    assert load_params(out).segment.train.epochs == 5


# --------------------------------------------------------------------------- Jetson


def _systemd_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"{path.name}: bad line {line!r}"
        current.append((key, value))
    return sections


def test_jetson_worker_unit_runs_a_process_worker_with_trtexec() -> None:
    unit = _systemd_unit(JETSON_UNIT_PATH)
    assert {"Unit", "Service", "Install"} <= set(unit)
    service = unit["Service"]
    values = {key: value for key, value in service}
    environment = dict(value.split("=", 1) for key, value in service if key == "Environment")
    assert values["User"] not in {"root", "0"}
    exec_start = values["ExecStart"].split()
    assert exec_start[1:3] == ["worker", "start"] and "%i" in exec_start and "process" in exec_start
    trtexec = environment["TRTEXEC"]
    assert trtexec == "/usr/src/tensorrt/bin/trtexec"
    if PLATFORMS_PATH.is_file():
        platforms = _load_yaml(PLATFORMS_PATH)["platforms"]
        jetsons = [p for p in platforms.values() if p.get("kind") == "jetson"]
        assert all(p.get("trtexec_path", trtexec) == trtexec for p in jetsons)
    env_file = values["EnvironmentFile"].lstrip("-")
    assert env_file in (INFRA / "jetson" / "install.sh").read_text()
    example = _jetson_env_example()
    assert {"PREFECT_API_URL", "MLFLOW_TRACKING_URI"} <= set(example)
    assert all(value == "" for key, value in example.items() if SECRET_NAME.search(key))


# --------------------------------------------------------------------------- authentication


def test_compose_turns_authentication_on_with_secrets_from_env_example() -> None:
    services = _compose()["services"]
    example = _env_example()
    prefect = _environment(services["prefect-server"])
    assert re.fullmatch(r"\$\{PREFECT_AUTH_STRING:\?[^}]+\}", prefect["PREFECT_SERVER_API_AUTH_STRING"])
    mlflow = services["mlflow"]
    assert mlflow["command"][0] == "start-server.sh", "MLflow must start through its basic-auth start script"
    mlflow_env = _environment(mlflow)
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert ":?" in mlflow_env[key], f"mlflow {key} must be a required variable"
    assert "mlflow-auth:/var/lib/mlflow-auth" in mlflow["volumes"]
    worker = services["worker"]
    worker_env = _environment(worker)
    assert worker_env["PREFECT_API_AUTH_STRING"] == prefect["PREFECT_SERVER_API_AUTH_STRING"]
    assert "MLFLOW_PIPELINE_PASSWORD" in worker_env["MLFLOW_TRACKING_PASSWORD"]
    assert worker["depends_on"]["mlflow-users"]["condition"] == "service_completed_successfully"
    users = services["mlflow-users"]
    assert users["command"][-1] == "/opt/mlflow/create_users.py" and users["restart"] == "no"
    for name in ("PREFECT_AUTH_STRING", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_READER_PASSWORD"):
        assert example[name] == "", f"{name} is a secret: empty in .env.example, set in infra/.env"


def test_the_mlflow_image_ships_the_auth_app_and_its_scripts() -> None:
    dockerfile = MLFLOW_DOCKERFILE_PATH.read_text()
    assert '"mlflow[auth]==${MLFLOW_VERSION}"' in dockerfile
    assert "start-server.sh /usr/local/bin/start-server.sh" in dockerfile
    assert "create_users.py /opt/mlflow/create_users.py" in dockerfile
    start = (INFRA / "mlflow" / "start-server.sh").read_text()
    assert "--app-name basic-auth" in start and "umask 077" in start
    assert "password1234" not in start  # MLflow's documented first-admin password is never used


def test_kubernetes_workers_and_jobs_read_credentials_from_a_secret() -> None:
    values = _load_yaml(HELM_VALUES_PATH)
    assert values["worker"]["basicAuth"] == {"enabled": True, "existingSecret": "inspectops-credentials"}
    template = json.loads(GPU_TEMPLATE_PATH.read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert refs[key] == {"name": "{{ credentials_secret }}", "key": key}
    assert template["variables"]["properties"]["credentials_secret"]["default"] == "inspectops-credentials"
    job_text = PYTORCHJOB_PATH.read_text()
    assert job_text.count("name: inspectops-credentials") == 2
    assert "MLFLOW_TRACKING_PASSWORD" in job_text


def test_the_jetson_worker_env_asks_for_both_servers_credentials() -> None:
    example = _jetson_env_example()
    assert example["PREFECT_API_AUTH_STRING"] == "" and example["MLFLOW_TRACKING_PASSWORD"] == ""
    assert example["MLFLOW_TRACKING_USERNAME"]


# --------------------------------------------------------------------------- README


def test_readme_operations_section_shows_the_commands() -> None:
    section = _readme_operations_section()
    for command in (
        "docker compose -f infra/compose.yaml --env-file infra/.env up -d",
        "prefect deploy --all",
        "prefect deployment run 'inspectops-pipeline/local'",
        "helm upgrade --install",
        "pytorchjob-train.yaml",
        "dvc remote add",
        "endpointurl",
    ):
        assert command in section, f"README operations section lacks {command!r}"
    for name, pool in _load_yaml(WORK_POOLS_PATH)["pools"].items():
        create = f"prefect work-pool create {name} --type {pool['type']}"
        assert create in section, f"README must show `{create}`"
        if pool.get("base_job_template"):
            assert f"--base-job-template {pool['base_job_template']}" in section
