"""Create (or update) the team stack's MLflow accounts, as the admin, over MLflow's REST API.

Two accounts besides the admin (``MLFLOW_AUTH_ADMIN_USERNAME``), from infra/.env:

- the **pipeline** account (``MLFLOW_PIPELINE_USERNAME`` / ``MLFLOW_PIPELINE_PASSWORD``): what
  workers, CI and training jobs log and register with. It owns the experiments and registered
  models it creates, so it may move their ``champion`` alias;
- the **reader** account (``MLFLOW_READER_USERNAME`` / ``MLFLOW_READER_PASSWORD``): people who
  compare runs. It has the server's ``default_permission`` (READ) and nothing else, so it can
  browse every run and model but change none, and cannot move an alias.

Idempotent: an account that exists gets its password set to the one in the environment, so
rotating a password is editing infra/.env and running this again. Standard library only: it
runs in the MLflow server's image (the compose job ``mlflow-users``) and in the tests. Secrets are
read from the environment and never printed.

    MLFLOW_TRACKING_URI=http://HOST:5000 python infra/mlflow/create_users.py
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ACCOUNTS = (
    ("pipeline", "MLFLOW_PIPELINE_USERNAME", "MLFLOW_PIPELINE_PASSWORD"),
    ("reader", "MLFLOW_READER_USERNAME", "MLFLOW_READER_PASSWORD"),
)


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"create_users: set {name} (infra/.env)")
    return value


class Admin:
    """Calls the MLflow server as the admin account."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: dict[str, str] | None = None) -> tuple[int, dict]:
        url = f"{self.base_url}/api/2.0/mlflow/{path}"
        data = None
        if body is not None and method == "GET":
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=self.headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, {}


def wait_until_up(base_url: str, timeout: float = 120.0) -> None:
    """The server's unauthenticated /health answers 200 (compose starts this job after it anyway)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base_url.rstrip('/')}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"create_users: the MLflow server at {base_url} did not answer /health in {timeout:.0f} s")
        time.sleep(2)


def ensure_user(admin: Admin, role: str, username: str, password: str) -> str:
    """Create ``username`` or reset its password; returns what was done."""
    status, _ = admin.call("GET", "users/get", {"username": username})
    if status == 401:
        sys.exit("create_users: the MLflow server refused the admin credentials (MLFLOW_AUTH_ADMIN_*)")
    if status == 200:
        status, _ = admin.call("PATCH", "users/update-password", {"username": username, "password": password})
        done = "password set"
    else:
        status, _ = admin.call("POST", "users/create", {"username": username, "password": password})
        done = "created"
    if status != 200:
        sys.exit(f"create_users: could not set up the {role} account {username!r} (HTTP {status})")
    return done


def main() -> None:
    base_url = _required("MLFLOW_TRACKING_URI")
    wait_until_up(base_url)
    admin = Admin(base_url, _required("MLFLOW_AUTH_ADMIN_USERNAME"), _required("MLFLOW_AUTH_ADMIN_PASSWORD"))
    for role, user_var, password_var in ACCOUNTS:
        username, password = _required(user_var), _required(password_var)
        print(f"{role} account {username}: {ensure_user(admin, role, username, password)}")


if __name__ == "__main__":
    main()
