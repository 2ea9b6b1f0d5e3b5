"""The probe: one suspect photo decoded in a separate process.

Native decoders (libjpeg, libheif, libraw, exiv2) are where a file can crash a process. When the
watcher restarts after a crash, the photo that was in flight is first decoded here, alone, in a
child process (:mod:`phototag.ingest.queue`): only a file that kills that child too counts against
the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from phototag.ingest.decode import decode_photo
from phototag.ingest.exif import read_exif
from phototag.ingest.fingerprint import sha256_file
from phototag.ingest.keywords import read_keywords

PROBE_OK, PROBE_UNREADABLE = 0, 3


def probe_decode(path: Path | str, max_pixels: int) -> None:
    """Everything the pipeline does to one file before the model (hash, decode, EXIF, keywords):
    native decoders (libjpeg, libheif, libraw, exiv2) are where a file can crash a process."""
    path = Path(path)
    sha256_file(path)
    decode_photo(path, max_pixels=max_pixels)
    read_exif(path)
    read_keywords(path)


def _probe_main(argv: list[str]) -> int:
    path, max_pixels = argv[0], int(argv[1])
    try:
        probe_decode(path, max_pixels)
    except Exception:  # a Python-level error is handled (recorded) by the pipeline itself: no crash
        return PROBE_UNREADABLE
    return PROBE_OK


def probe_in_child(path: Path | str, max_pixels: int, timeout: float = 120.0) -> str | None:
    """Decode ``path`` in a child process. None when the child came through (the file decodes, or
    fails with an ordinary error the pipeline records); else what happened to the child — the
    evidence that this file kills a process (:mod:`phototag.ingest.queue`)."""
    code = ("import sys; from phototag.pipeline.probe import _probe_main; "
            "sys.exit(_probe_main(sys.argv[1:]))")
    try:
        done = subprocess.run([sys.executable, "-c", code, os.fsencode(str(path)), str(max_pixels)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"decoding it alone in a separate process hung for over {timeout:g} s"
    if done.returncode in (PROBE_OK, PROBE_UNREADABLE):
        return None
    if done.returncode < 0:
        import signal

        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"decoding it alone in a separate process crashed that process ({name})"
    tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    return f"decoding it alone in a separate process failed (exit {done.returncode}) {tail[0]}".strip()
