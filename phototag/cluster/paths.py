"""``ray.path_map``: where the workers see a photo when their mount point differs from this machine's.

Each entry is ``"LOCAL_PREFIX=WORKER_PREFIX"``; the longest local prefix that a path starts with (at
a folder boundary) is replaced. Paths travel as bytes (:func:`os.fsencode`): a file name that is not
valid UTF-8 reaches the worker exactly as it is on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from phototag.cluster.connect import ClusterError


class PathMap:
    def __init__(self, entries: Iterable[str] = ()):
        pairs: list[tuple[bytes, bytes]] = []
        for entry in entries:
            local, sep, worker = str(entry).partition("=")
            if not sep or not local.strip() or not worker.strip():
                raise ClusterError(f"ray.path_map: {entry!r} is not LOCAL_PREFIX=WORKER_PREFIX")
            pairs.append((os.fsencode(local.strip()).rstrip(b"/") or b"/", os.fsencode(worker.strip()).rstrip(b"/") or b"/"))
        self.pairs = sorted(pairs, key=lambda p: -len(p[0]))

    def to_worker(self, path: Path | str | bytes) -> bytes:
        """``path`` as the workers see it, as bytes."""
        raw = os.fsencode(path)
        for local, worker in self.pairs:
            if raw == local:
                return worker
            if raw.startswith(local if local.endswith(b"/") else local + b"/"):
                rest = raw[len(local):].lstrip(b"/")
                return worker.rstrip(b"/") + b"/" + rest
        return raw
