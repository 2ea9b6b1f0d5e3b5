"""Following the configuration while watching: a new default model, and background re-tagging.

Every ``retag.check_seconds`` (in the event thread) ``config.toml`` is read again. When
``default_model`` changed, the tagger of the new default is built (the registry,
:func:`phototag.tagging.registry.get_tagger`) and handed to the calling thread, which swaps it in
between two pipeline runs. Then the photos due for re-tagging (:mod:`phototag.retag.policy`) are
queued with the queue's lowest priority, so new photos are tagged first. None is queued while the
start-up catch-up's photos are still being tagged (the consumer says "caught up" first, then asks
for a check at once): queued together, re-tags claimed after the last new photo would still be
decoded beside it, and a batch of re-tags could be stored before it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Callable

from phototag.config import ConfigError, Settings, load_settings
from phototag.retag import RetagError
from phototag.retag.policy import schedule_background_retag
from phototag.tagging.base import Tagger
from phototag.tagging.registry import get_tagger
from phototag.watch.leadership import RETAG

if TYPE_CHECKING:
    from phototag.watch.daemon import Watcher

log = logging.getLogger("phototag.watch")


class ModelFollower:
    """The watcher's model: which tagger is next, and the background re-tagging check."""

    def __init__(self, watcher: Watcher, settings: Settings, *, check_seconds: float, follow_default_model: bool,
                 load_tagger: Callable[[Settings], Tagger] | None):
        self.watcher = watcher
        #: re-read config.toml and look for photos due for re-tagging this often (0: never)
        self.check_seconds = check_seconds
        #: rebuild the tagger when ``default_model`` changes (False for ``phototag watch --model X``)
        self.follow_default_model = follow_default_model
        self._load_tagger = load_tagger
        self.next_check = 0.0  # monotonic; the first check runs right after the catch-up pass (see check)
        self._settings = settings  # config.toml as last read (re-read every check_seconds)
        self._loaded_for = settings.default_model  # the default model name the tagger was built for
        self.next_tagger: Tagger | None = None  # built by the event thread, swapped in by the calling thread
        self._sha_cache: tuple[Tagger, str] | None = None
        self._logged: set[str] = set()  # messages logged once (bad retag settings, a model that won't load)

    def _log_once(self, level: int, message: str, *args, **kwargs) -> None:
        text = message % args if args else message
        if text not in self._logged:
            self._logged.add(text)
            log.log(level, "%s", text, **kwargs)

    def _reload_settings(self) -> Settings:
        """config.toml read again (the daemon's own settings stay as they were at start, but the default
        model and the [retag] table are followed); a file that does not parse keeps the last good one."""
        try:
            self._settings = load_settings(self.watcher.library.settings.home)
        except ConfigError as exc:
            self._log_once(logging.ERROR, "%s (keeping the settings read before)", exc,
                           extra={"event": "config_error", "error": str(exc)})
        return self._settings

    def check(self, now: float) -> None:
        """Every ``check_seconds``: follow a new ``default_model``, then queue photos due for
        re-tagging (:func:`phototag.retag.policy.schedule_background_retag`). Runs in the event thread."""
        if self.check_seconds <= 0 or now < self.next_check:
            return
        self.next_check = now + self.check_seconds
        w = self.watcher
        settings = self._reload_settings()
        default = settings.default_model
        if self.follow_default_model and default != self._loaded_for and self.next_tagger is None:
            self._rebuild_tagger(settings)
        if self.next_tagger is not None:
            return  # queue re-tags once the new model is in place
        tagger = w.tagger
        if tagger.name != default:  # --model X, or the new default would not load: re-tagging would loop
            w.leadership.resign(RETAG)  # a watcher sharing the library that tags with the default schedules
            self._log_once(logging.WARNING, "background re-tagging is off: this watcher tags with %s, "
                           "the default model is %s", tagger.name, default, extra={"event": "retag_off"})
            return
        if w.consumer.catching_up:  # the catch-up's photos first; the consumer calls check_soon() after
            return
        if not w.leadership.leads(RETAG):  # a shared library: one watcher schedules for all
            return
        try:
            queued = schedule_background_retag(w.library, settings, now=dt.datetime.now().astimezone(),
                                               weights_sha256=self.weights_sha256(tagger))
        except RetagError as exc:  # bad retag.every / retag.window: say so once, keep watching
            self._log_once(logging.ERROR, "%s", exc, extra={"event": "retag_error", "error": str(exc)})
            return
        if queued:
            log.info("queued %d photos for background re-tagging with %s", queued, tagger.name,
                     extra={"event": "retag_queued", "count": queued, "model": tagger.name})
            w.wakeup.set()

    def check_soon(self) -> None:
        """Run the next check at the event loop's next turn (the catch-up's photos are all tagged)."""
        self.next_check = 0.0

    def weights_sha256(self, tagger: Tagger) -> str:
        """The tagger's weights hash, computed once per tagger (some hash their weights file on each call)."""
        if self._sha_cache is None or self._sha_cache[0] is not tagger:
            self._sha_cache = (tagger, tagger.weights_sha256)
        return self._sha_cache[1]

    def _rebuild_tagger(self, settings: Settings) -> None:
        """Build the tagger of the new default model; :meth:`swap` puts it in between two pipeline runs.
        A model that does not load is logged (once) and tried again at the next check."""
        w = self.watcher
        name = settings.default_model
        try:
            tagger = (self._load_tagger or get_tagger)(settings)
        except Exception as exc:
            self._log_once(logging.ERROR, "the new default model %s does not load (%s: %s); still tagging "
                           "with %s", name, type(exc).__name__, exc, w.tagger.name,
                           extra={"event": "model_error", "model": name, "error": str(exc)})
            return
        self._loaded_for = name
        current = w.tagger
        if (tagger.name, self.weights_sha256(tagger)) == (current.name, self.weights_sha256(current)):
            tagger.close()  # e.g. changed and changed back: nothing to swap
            return
        log.info("default model is now %s: switching from %s", tagger.name, current.name,
                 extra={"event": "model_changed", "model": tagger.name})
        self.next_tagger = tagger
        w.wakeup.set()  # the consumer ends its pipeline run; the calling thread swaps the tagger

    def swap(self) -> None:
        """In the calling thread, between two pipeline runs: use the tagger the event thread built."""
        tagger, self.next_tagger = self.next_tagger, None
        if tagger is None:
            return
        w = self.watcher
        old, w.tagger = w.tagger, tagger
        w.pipeline.use_tagger(tagger)  # cores and batch size planned for the new model
        try:
            old.close()
        except Exception:  # pragma: no cover - releasing memory only
            log.debug("closing the old tagger failed", exc_info=True)
        self.next_check = 0.0  # queue what the new model has to re-tag without waiting a minute
        w.publish_state()

    def drop_next(self) -> None:
        """Stopping: a tagger built but never swapped in is closed."""
        tagger, self.next_tagger = self.next_tagger, None
        if tagger is not None:
            tagger.close()
