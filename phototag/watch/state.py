"""``<home>/watch.json``: the running watcher's state (roots, paused roots, polling or inotify,
counters), rewritten atomically when it changes; ``phototag status`` reads it.

A folder name that is not valid UTF-8 is kept with ``\\udcXX`` escapes for its undecodable bytes
(``json.loads`` then ``os.fsencode`` give them back).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from phototag import atomic

STATE_NAME = "watch.json"


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

