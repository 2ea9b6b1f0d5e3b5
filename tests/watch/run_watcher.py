"""Run the watch daemon with the tiny colour model, as a separate process (for kill -9 tests).

    python tests/watch/run_watcher.py HOME ROOT... [--delay SECONDS]

Everything but the model is what ``phototag watch`` runs: the lock, the Watcher, JSON logs, signals.
``--delay`` makes each predicted photo take that long, like a real model, so kills land mid-batch.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from watch.helpers import ColourTagger  # noqa: E402

from phototag.config import load_settings  # noqa: E402
from phototag.library import Library  # noqa: E402
from phototag.watch.daemon import Watcher  # noqa: E402
from phototag.watch.lock import WatchLock  # noqa: E402
from phototag.watch.logs import configure_logging  # noqa: E402
from phototag.watch.state import write_state  # noqa: E402


class SlowColourTagger(ColourTagger):
    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def predict(self, batch):
        time.sleep(self.delay * len(batch))
        return super().predict(batch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("home")
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--stable", type=float, default=0.5)
    args = ap.parse_args()
    configure_logging("json", logging.INFO)
    settings = load_settings(args.home, environ={})
    lib = Library(settings)
    with WatchLock(settings.home):
        stop = threading.Event()
        watcher = Watcher(lib, SlowColourTagger(args.delay), args.roots, stable_seconds=args.stable,
                          batch_timeout=0.3, decode_workers=2, stop_event=stop,
                          on_state=lambda st: write_state(settings.home, st))
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda *_: watcher.stop())
        watcher.run()
    lib.close()


if __name__ == "__main__":
    main()
