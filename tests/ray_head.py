"""A real one-node Ray cluster for tests and benches: ``ray start --head --block`` in a short temp dir
(Ray's socket paths have a length limit), stopped by PID — never ``ray stop``, which would stop every
Ray on the machine. Benches import it with ``tests/`` on ``sys.path`` (as they import tests/pg.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"
#: no token authentication (Ray 2.60 turns it on) and no usage reports: a private loopback cluster
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class RayHead:
    """``ray start --head --block`` with ``cpus`` CPUs; :attr:`address` is ``127.0.0.1:PORT`` once it
    is up; :meth:`stop` ends it and every process it started (its descendants, and those naming its
    temp dir: Ray daemonises some) by PID."""

    def __init__(self, cpus: int, timeout: float = 120):
        self.temp = tempfile.mkdtemp(prefix="ptray", dir="/tmp")
        self.port = free_port()
        self.log = open(os.path.join(self.temp, "start.log"), "wb")
        self.proc = subprocess.Popen(
            [str(RAY), "start", "--head", "--port", str(self.port), "--num-cpus", str(cpus), "--block",
             "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
             "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", self.temp],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **RAY_ENV}, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while "will now block" not in Path(self.temp, "start.log").read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = Path(self.temp, "start.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"ray start did not come up in {timeout:.0f} s: {log}")
            time.sleep(0.5)
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        pids = set(descendants(self.proc.pid))
        pids |= {int(p) for p in os.listdir("/proc") if p.isdigit() and self.temp in cmdline(int(p))}
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids | {self.proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)
