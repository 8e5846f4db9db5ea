"""A tracking server that stops answering: bounded retries, then one clear error that names it.

MLflow's HTTP client retries a refused or dropped connection with exponential backoff; its own
defaults (7 retries, factor 2) wait about four minutes per call, and a failing stage makes several
calls on its way out (the logger's ``FAILED``, the run's end, the pipeline run's metrics), so a
dead server could hold a pipeline for half an hour before it says anything. Here the window comes
from ``params.tracking`` (:func:`configure_retries`); once a call has found the server down, the
process stops retrying (:func:`stop_retrying`), so the clean-up calls fail at once; and the error a
person sees is :class:`TrackingUnreachableError`, naming the server (credentials removed) and
saying what is kept and how to go on.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from components.config import Params, TrackingParams

RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
BACKOFF_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
_STOPPED_ENV = "INSPECTOPS_TRACKING_UNREACHABLE"
"""Set once a call found the server down: later calls in this process (and its children) do not retry."""

_SIGNS = (
    "Max retries exceeded",
    "Failed to establish a new connection",
    "Connection refused",
    "Connection aborted",
    "RemoteDisconnected",
    "Name or service not known",
)
"""What MLflow's errors say (it wraps the ``requests`` error in a message) when no server answered."""

__all__ = [
    "TrackingUnreachableError",
    "as_unreachable",
    "configure_retries",
    "is_unreachable",
    "redacted",
    "retry_window_seconds",
    "stop_retrying",
    "unreachable_error",
]


class TrackingUnreachableError(RuntimeError):
    """The MLflow tracking server did not answer within the retry window; the message names it."""


def retry_window_seconds(tracking: TrackingParams) -> float:
    """How long a call waits for a server that stays down: urllib3's backoff, ``factor * 2**(n-1)`` after
    the n-th failed try from the second on (capped at 120 s each), jitter aside."""
    return sum(min(120.0, tracking.http_backoff_seconds * 2 ** (n - 1)) for n in range(2, tracking.http_retries + 1))


def configure_retries(params: Params) -> None:
    """Give MLflow's client this project's retry window (``tracking.http_retries``, ``http_backoff_seconds``).

    Environment variables, because MLflow reads them on every request; processes a stage starts
    (``dvc repro``, DDP ranks) inherit them. After :func:`stop_retrying`, no retries.
    """
    if os.environ.get(_STOPPED_ENV):
        return
    os.environ[RETRIES_ENV] = str(params.tracking.http_retries)
    os.environ[BACKOFF_ENV] = str(params.tracking.http_backoff_seconds)


def stop_retrying() -> None:
    """The server was found down: the calls still to come in this process fail at once."""
    os.environ[_STOPPED_ENV] = "1"
    os.environ[RETRIES_ENV] = "0"


def is_unreachable(error: BaseException | None) -> bool:
    """Whether ``error`` (or one it was raised from, or during) says no tracking server answered."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        module, name = type(error).__module__, type(error).__name__
        if module.startswith(("requests", "urllib3")) and name in (
            "ConnectionError",
            "MaxRetryError",
            "NewConnectionError",
        ):
            return True
        if module.startswith("mlflow") and any(sign in str(error) for sign in _SIGNS):
            return True
        error = error.__cause__ or error.__context__
    return False


def redacted(uri: str) -> str:
    """``uri`` without a user name or password in it (safe for a log)."""
    parts = urlsplit(uri)
    if not parts.password and not parts.username:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def as_unreachable(error: BaseException, params: Params, uri: str, where: str) -> TrackingUnreachableError | None:
    """For ``error`` raised by a tracking call made by ``where``: ``None`` if the server answered,
    else the error to raise in its place, after stopping retries for the rest of this process."""
    if isinstance(error, TrackingUnreachableError) or not is_unreachable(error):
        return None
    stop_retrying()
    return unreachable_error(params, uri, where)


def unreachable_error(params: Params, uri: str, where: str) -> TrackingUnreachableError:
    """The error a person sees, for a call made by ``where`` (a stage name, ``the pipeline run``)."""
    window = retry_window_seconds(params.tracking)
    return TrackingUnreachableError(
        f"{where}: the MLflow tracking server at {redacted(uri)} did not answer "
        f"({params.tracking.http_retries} retries over about {window:.0f} s; tracking.http_retries and "
        "tracking.http_backoff_seconds set the window). What the run wrote so far is kept, and a training "
        "it interrupted resumes from its last finished epoch. Start the server (or point tracking.tracking_uri "
        "or MLFLOW_TRACKING_URI at one that runs) and run again; under DVC the stages that finished are not "
        "redone, and no model is registered twice."
    )
