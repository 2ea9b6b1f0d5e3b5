"""Run the watch daemon with the tiny colour model, as a separate process (for kill -9 tests).

    python tests/watch/run_watcher.py HOME ROOT... [--delay SECONDS]

Everything but the model is what ``phototag watch`` runs: the lock, the Watcher, JSON logs, signals.
``--delay`` makes each predicted photo take that long, like a real model, so kills land mid-batch.
``--hold-after N --release FILE``: once N photos went through the model, the next batch waits in the
model (its claims held, heartbeats going) until FILE exists or the watcher is stopped, so a test can
make another process work while this one holds claims, instead of hoping the timing overlaps.
``--database-url URL``: the library is that server database (``database_url``), shared with other
watchers; the home's lock is then taken shared, as ``phototag watch`` does for such a library.
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
    def __init__(self, delay: float, hold_after: int | None = None, release: Path | None = None):
        super().__init__()
        self.delay = delay
        self.hold_after, self.release = hold_after, release
        self.stopping = threading.Event()

    def predict(self, batch):
        if self.hold_after is not None and self.predicted >= self.hold_after:
            while not (self.release.exists() or self.stopping.wait(0.05)):
                pass
        time.sleep(self.delay * len(batch))
        return super().predict(batch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("home")
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--stable", type=float, default=0.5)
    ap.add_argument("--hold-after", type=int, default=None)
    ap.add_argument("--release", type=Path, default=None)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    configure_logging("json", logging.INFO)
    settings = load_settings(args.home, environ={"PHOTOTAG_DATABASE_URL": args.database_url}
                             if args.database_url else {})
    lib = Library(settings)
    with WatchLock(settings.home, shared=lib.db.dialect != "sqlite"):
        stop = threading.Event()
        tagger = SlowColourTagger(args.delay, args.hold_after, args.release)
        watcher = Watcher(lib, tagger, args.roots, stable_seconds=args.stable,
                          batch_timeout=0.3, decode_workers=2, stop_event=stop,
                          on_state=lambda st: write_state(settings.home, st))
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda *_: (tagger.stopping.set(), watcher.stop()))
        watcher.run()
    lib.close()


if __name__ == "__main__":
    main()
