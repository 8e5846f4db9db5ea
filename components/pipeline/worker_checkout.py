"""Prefect pull step: run a flow from the checkout named by the worker's own environment.

Why not Prefect's ``set_working_directory`` with ``directory: "{{ $INSPECTOPS_WORKDIR }}"``?
Prefect 3 fills ``{{ $VAR }}`` placeholders, pull steps included, from the environment of
whoever runs ``prefect deploy`` when the variable is set there; only a placeholder still
unresolved at deploy time is filled on the worker when a run starts. A deployment
registered from a laptop with ``INSPECTOPS_WORKDIR`` set would send every worker to the
laptop's path. This step takes the variable's *name* instead (nothing for ``prefect deploy``
to resolve) and reads its value on the worker, in the flow run's process, when the run
starts. prefect.yaml calls it as::

    pull:
      - components.pipeline.worker_checkout.set_working_directory_from_worker_env:
          variable: INSPECTOPS_WORKDIR

It imports only the standard library: it runs before the flow is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_VARIABLE = "INSPECTOPS_WORKDIR"
PARAMS_FILE = "params.yaml"


class WorkerCheckoutError(RuntimeError):
    """The worker's environment does not name a usable checkout."""


def set_working_directory_from_worker_env(variable: str = DEFAULT_VARIABLE) -> dict[str, str]:
    """Change into the checkout named by ``$variable`` in this process's environment.

    Called by Prefect on the worker as the first pull step of a flow run. The directory
    must be an absolute path (the flow run's process starts in a temporary directory, so a
    relative one would name nothing useful) to an existing directory that holds
    ``params.yaml``.

    Returns:
        ``{"directory": <absolute path>}``, like Prefect's ``set_working_directory``, so that
        later steps can use ``{{ <step id>.directory }}`` and the runner records the checkout
        as the flow run's working directory.

    Raises:
        WorkerCheckoutError: the variable is unset or empty on the worker, or its value is not
            an absolute path to a directory holding ``params.yaml``.
    """
    value = os.environ.get(variable, "").strip()
    if not value:
        raise WorkerCheckoutError(
            f"${variable} is not set on this worker. It names the checkout the worker runs flows "
            f"from and is read when each run starts, not when the deployment is registered: "
            f"`export {variable}=/path/to/inspectops` in the worker's shell before "
            f"`prefect worker start`."
        )
    directory = Path(value).expanduser()
    if not directory.is_absolute():
        raise WorkerCheckoutError(
            f"${variable}={value!r} on this worker is not an absolute path; set it to the "
            f"checkout's absolute path before `prefect worker start`."
        )
    if not directory.is_dir():
        raise WorkerCheckoutError(f"${variable}={value!r} on this worker: {directory} is not a directory.")
    if not (directory / PARAMS_FILE).is_file():
        raise WorkerCheckoutError(
            f"${variable}={value!r} on this worker: {directory} holds no {PARAMS_FILE}; "
            f"it must name the root of an inspectops checkout."
        )
    os.chdir(directory)
    return {"directory": os.getcwd()}
