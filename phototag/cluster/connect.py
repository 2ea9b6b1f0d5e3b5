"""Joining a Ray cluster, with one-line errors instead of Ray's tracebacks and minutes of retries.

``ADDRESS`` is what ``ray.init(address=…)`` takes: ``auto`` (the cluster this machine belongs to,
``RAY_ADDRESS`` or the one ``ray start`` recorded), ``host:6379`` (a head node's GCS port),
``ray://host:10001`` (Ray Client) — or ``local``: a Ray instance started in this process for this
one command, handy on a single machine with several GPUs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Iterator

from phototag.errors import PhototagError

INSTALL_HINT = "pip install 'phototag[ray]'"
#: seconds to wait for a TCP connection to ``host:port`` before calling the address unreachable (Ray
#: itself retries for minutes)
CONNECT_TIMEOUT = 5.0


class ClusterError(PhototagError):
    """Ray is missing, the cluster cannot be reached, or its workers cannot tag."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from exc
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` address (``ray://host:port`` too); None for ``auto``/``local``."""
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: expected auto, local, HOST:PORT "
                           "or ray://HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _reachable(address: str) -> None:
    """Fail fast when ``host:port`` does not answer (Ray would retry for minutes)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {why}") from exc


@dataclass
class Cluster:
    """A connected Ray cluster (this process is its driver)."""

    address: str
    ray: Any

    def resources(self) -> dict[str, float]:
        """The cluster's total resources (``CPU``, ``GPU``, …)."""
        return dict(self.ray.cluster_resources())

    def nodes(self) -> int:
        """Alive nodes."""
        return sum(1 for n in self.ray.nodes() if n.get("Alive"))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def connect(address: str) -> Iterator[Cluster]:
    """Join the cluster at ``address`` for the duration of the block (``local``: start one in this
    process, stopped at the end). Raises :class:`ClusterError` with one line on any failure."""
    ray = import_ray()
    address = (address or "").strip()
    if not address:
        raise ClusterError("--ray needs an address: auto, local, HOST:PORT or ray://HOST:PORT")
    _reachable(address)
    options: dict[str, Any] = {
        "logging_level": logging.WARNING,  # no "Connecting to existing Ray cluster" on the terminal
        "log_to_driver": False,  # the workers' output stays in Ray's logs, never in `--format json`
        "include_dashboard": False,
    }
    # Ray prints the cluster's error messages ("(raylet) A worker died …") on stdout, which must stay
    # the command's output alone (`--format json`): while connected, stdout is stderr
    with contextlib.redirect_stdout(sys.stderr):
        if ray.is_initialized():  # an earlier command of this process (tests) left it connected
            ray.shutdown()
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            hint = ""
            if address not in ("auto", "local") and not os.environ.get("RAY_AUTH_MODE"):
                hint = " (a cluster with token authentication needs RAY_AUTH_MODE=token and its token: docs/scaling.md)"
            raise ClusterError(f"cannot connect to the Ray cluster at {address}: {_first_line(exc)}{hint}") from exc
        try:
            yield Cluster(address, ray)
        finally:
            ray.shutdown()
