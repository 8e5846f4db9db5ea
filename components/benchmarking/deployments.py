"""One Prefect deployment per benchmark platform, each bound to that platform's work pool.

The fan-out flow calls ``run_deployment("benchmark-platform/<platform>")``; whichever
worker polls the platform's pool (a T4 box, a Jetson, this laptop) picks the run up and
benchmarks on its own hardware. Entrypoints are *module paths*
(``flows.benchmark.benchmark_platform_flow``) so a worker only needs inspectops installed
(``pip install -e .``), not a code-storage block or an image.

The specs are pure data (tested); :func:`register_deployments` and
:func:`runner_deployments` turn them into Prefect objects for a work-pool setup or for
``serve`` (one local process running every platform's deployment, as the tests do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from components.benchmarking.platforms import PlatformRegistry

PLATFORM_FLOW_NAME = "benchmark-platform"
FANOUT_FLOW_NAME = "benchmark-fanout"
PLATFORM_ENTRYPOINT = "flows.benchmark.benchmark_platform_flow"
FANOUT_ENTRYPOINT = "flows.benchmark.benchmark_fanout_flow"
"""Module-path entrypoints (file-path forms for prefect.yaml: ``flows/benchmark.py:<function>``)."""


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    """Deployment name = platform name, so the full name is ``benchmark-platform/<platform>``."""
    work_pool: str
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    description: str = ""

    @property
    def full_name(self) -> str:
        return f"{PLATFORM_FLOW_NAME}/{self.name}"


def deployment_name(platform: str) -> str:
    """What ``run_deployment`` is called with for ``platform``."""
    return f"{PLATFORM_FLOW_NAME}/{platform}"


def platform_deployment_specs(
    registry: PlatformRegistry, names: Sequence[str] | None = None, params_path: str = "params.yaml"
) -> list[DeploymentSpec]:
    """Specs for ``names`` (default: every platform); ``params_path`` as the worker machine sees it."""
    platforms = registry.select(list(names)) if names is not None else list(registry.platforms.values())
    return [
        DeploymentSpec(
            name=platform.name,
            work_pool=platform.work_pool,
            parameters={"params_path": params_path, "platform": platform.name},
            tags=tuple(dict.fromkeys(("benchmark", platform.kind, platform.name))),
            description=(
                f"Benchmark a model on {platform.display_name} ({platform.runtime}, {platform.precision}); "
                f"needs a worker on work pool '{platform.work_pool}'."
            ),
        )
        for platform in platforms
    ]


def runner_deployments(flow: Any, specs: Sequence[DeploymentSpec], with_work_pools: bool) -> list[Any]:
    """``flow.to_deployment`` per spec; ``with_work_pools=False`` for ``prefect.serve`` (which ignores pools)."""
    from prefect.deployments.runner import EntrypointType

    return [
        flow.to_deployment(
            name=spec.name,
            parameters=spec.parameters,
            tags=list(spec.tags),
            description=spec.description,
            work_pool_name=spec.work_pool if with_work_pools else None,
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for spec in specs
    ]


def ensure_work_pools(names: Sequence[str], pool_type: str = "process") -> list[str]:
    """Create the work pools that do not exist yet (as ``pool_type``); returns the ones created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    created = []
    with get_client(sync_client=True) as client:
        for name in dict.fromkeys(names):
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
                created.append(name)
    return created


def register_deployments(
    flow: Any, specs: Sequence[DeploymentSpec], create_pools: bool = True, pool_type: str = "process"
) -> dict[str, str]:
    """Register each spec bound to its work pool (creating missing pools); returns ``{full name: id}``."""
    if create_pools:
        ensure_work_pools([spec.work_pool for spec in specs], pool_type)
    ids = {}
    for spec, deployment in zip(specs, runner_deployments(flow, specs, with_work_pools=True), strict=True):
        ids[spec.full_name] = str(deployment.apply(work_pool_name=spec.work_pool))
    return ids
