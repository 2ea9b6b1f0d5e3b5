"""What the watch daemon leaves in the library home, and how it logs.

* ``watch.lock`` — held (``flock``) for as long as a watcher runs: one watcher per home. It holds the
  watcher's pid. ``phototag status`` tests the lock rather than trusting the pid.
* ``watch.json`` — the watcher's state (roots, paused roots, polling or inotify, counters), rewritten
  atomically when it changes. A folder name that is not valid UTF-8 is kept with ``\\udcXX``
  escapes for its undecodable bytes (``json.loads`` then ``os.fsencode`` give them back).
* JSON logs: one object per line (``--log-format json``), for journald or a log shipper. Every
  line: Python warnings go through logging, and whatever a library writes to stdout/stderr itself
  (a C decoder's warning, exiv2, a traceback) is wrapped into a JSON record (logger ``stderr``).
* The systemd user unit written by ``phototag service install``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from phototag import atomic

LOCK_NAME = "watch.lock"
STATE_NAME = "watch.json"
UNIT_NAME = "phototag.service"


class DaemonError(Exception):
    """The daemon cannot start or be installed; the message says why and what to do."""


# ---- one watcher per home ---------------------------------------------------------------------
class WatchLock:
    """An exclusive ``flock`` on ``<home>/watch.lock``: released by the kernel when the process dies,
    so a kill -9 never leaves a stale lock."""

    def __init__(self, home: Path):
        self.path = Path(home) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = read_lock_pid(self.path)
            raise DaemonError(
                f"another phototag watch is already running for {self.path.parent}"
                + (f" (pid {pid})" if pid else "") + "; stop it first (systemctl --user stop phototag, or kill it)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        atomic.remove_stale_temp_files(self.path.parent)  # a watch.json being written when a watcher was killed

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "WatchLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_lock_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def running_watcher(home: Path) -> int | None:
    """The pid of the watcher running for ``home``, or None (the lock is tested, not just the pid)."""
    path = Path(home) / LOCK_NAME
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return read_lock_pid(path) or -1  # held: a watcher runs
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ---- state file ---------------------------------------------------------------------------------
def write_state(home: Path, state: dict) -> None:
    """Replace ``watch.json`` with ``state`` (and the time), atomically (:mod:`phototag.atomic`); a
    folder name that is not valid UTF-8 is written with ``\\udcXX`` escapes."""
    state = {**state, "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic.write_json(Path(home) / STATE_NAME, state)


def read_state(home: Path) -> dict | None:
    try:
        return json.loads((Path(home) / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---- logs ---------------------------------------------------------------------------------------
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's structured extras
    (``event``, ``path``, ``count``, ``root``, ``error`` …)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and value is not None:
                data[key] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class _NativeOutputToLog:
    """Everything written to file descriptors 1 and 2 — by Python or by C code (a decoder's warning,
    a library that prints) — becomes log records of ``handler``; JSON lines already are, and pass as
    they are. The handler itself writes to a duplicate of the original stderr."""

    def __init__(self):
        self.stream = os.fdopen(os.dup(2), "w", encoding="utf-8", errors="backslashreplace", buffering=1)
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(write_end, fd)
        os.close(write_end)
        self._reader = os.fdopen(read_end, "rb")
        self.handler: logging.Handler | None = None
        self._thread = threading.Thread(target=self._forward, name="phototag-stderr-to-log", daemon=True)
        self._thread.start()

    def _forward(self) -> None:
        for raw in self._reader:
            line = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            if not line.strip():
                continue
            try:
                is_json = isinstance(json.loads(line), dict)
            except ValueError:
                is_json = False
            handler = self.handler
            if is_json or handler is None:
                self.stream.write(line + "\n")
                continue
            record = logging.LogRecord("stderr", logging.WARNING, "", 0, "%s", (line,), None)
            handler.handle(record)

    def close(self) -> None:
        """Put stdout/stderr back and let the forwarder write what is still in the pipe."""
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # the pipe's last write ends close: the forwarder sees its end
            os.close(saved)
        self._thread.join(timeout=5)


_native_output: _NativeOutputToLog | None = None


def configure_logging(fmt: str = "text", level: int = logging.INFO, capture_output: bool = False) -> None:
    """Route all logs to stderr as text or JSON lines (replacing handlers set up before).

    Python warnings (Pillow's "Corrupt EXIF data" …) are logged (logger ``py.warnings``). With
    ``capture_output`` and JSON, whatever else reaches stdout/stderr — C libraries write there
    directly — is wrapped into JSON records too, so that every line a daemon writes parses."""
    global _native_output
    stream = sys.stderr
    if fmt == "json" and capture_output:
        if _native_output is None:
            import atexit

            _native_output = _NativeOutputToLog()
            atexit.register(_native_output.close)
        stream = _native_output.stream
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if _native_output is not None and fmt == "json" and capture_output:
        _native_output.handler = handler
    logging.captureWarnings(True)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("watchdog").setLevel(max(level, logging.WARNING))
    # exifread warns about every PNG without EXIF ("PNG file does not have exif data"): not news
    logging.getLogger("exifread").setLevel(logging.ERROR)


# ---- systemd ------------------------------------------------------------------------------------
@dataclass
class ServiceFiles:
    unit_path: Path
    text: str


def systemd_user_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "systemd" / "user"


def phototag_command() -> list[str]:
    """The absolute command that runs this phototag: the console script beside this Python if it is
    there, else ``python -m phototag``."""
    script = Path(sys.executable).parent / "phototag"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "phototag"]


def _systemd_quote(arg: str) -> str:
    # systemd's ExecStart is not a shell: it expands % specifiers and $VARS (doubled, they stay literal)
    # and reads C escapes even inside single quotes, so shlex.quote mangles a backslash or "$HOME" in
    # a path. Plain words stay bare; others go in double quotes, backslash and quote escaped
    # (systemd.syntax(7)).
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_unit(home: Path, roots: list[Path], extra_args: list[str] | None = None,
                 command: list[str] | None = None) -> str:
    argv = [*(command or phototag_command()), "--home", str(home), "watch", *(extra_args or []),
            "--log-format", "json", *[str(r) for r in roots]]
    exec_start = " ".join(_systemd_quote(a) for a in argv)
    return (
        "[Unit]\n"
        "Description=phototag: tag new photos as they arrive\n"
        "After=local-fs.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "# SIGTERM: the batch in progress is finished and committed, then it exits\n"
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=120\n"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        "Nice=10\n"
        "IOSchedulingClass=idle\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def install_service(home: Path, roots: list[Path], extra_args: list[str] | None = None, force: bool = False,
                    environ: dict[str, str] | None = None) -> ServiceFiles:
    """Write ``~/.config/systemd/user/phototag.service`` (atomically)."""
    unit_dir = systemd_user_dir(environ)
    unit_path = unit_dir / UNIT_NAME
    text = service_unit(home, roots, extra_args)
    if unit_path.exists() and not force and unit_path.read_text(encoding="utf-8") != text:
        raise DaemonError(f"{unit_path} exists and differs; use --force to replace it")
    atomic.write_text(unit_path, text)
    return ServiceFiles(unit_path, text)
