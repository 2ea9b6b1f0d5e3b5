"""How the watch daemon logs: text, or one JSON object per line (``--log-format json``) for
journald or a log shipper.

With JSON every line parses: Python warnings go through logging, and whatever a library writes to
stdout/stderr itself (a C decoder's warning, exiv2, a traceback) is wrapped into a JSON record
(logger ``stderr``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import threading

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
