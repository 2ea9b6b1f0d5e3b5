"""The one pool of decode threads: photos are decoded (and prepared for a model) on several threads.

Pillow, pillow-heif, Exiv2 and the hash functions release the GIL, so decoding on a few threads
overlaps the model's work. Two ways in, one machinery:

* :class:`DecodePool` streams: a producer feeds it work items (blocking while ``max_in_flight``
  results wait to be taken) and a consumer takes results as they complete, with a timeout — the
  pipeline's ``scan``/``watch``/``retag`` (:mod:`phototag.pipeline`);
* :func:`prepared_batches` maps a list in order, batch by batch — learning from corrections
  (:mod:`phototag.learn`), which runs the model on photos the user reviewed.

The number of threads is the ``decode_workers`` setting, else one per CPU (:func:`decode_workers`).
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, Sequence, TypeVar

from phototag.ingest.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_photo

T = TypeVar("T")
R = TypeVar("R")

THREAD_NAME = "phototag-decode"


def decode_workers(settings: Any, asked: int | None = None) -> int:
    """Decode threads: ``asked`` (a command's ``--workers``), else the ``decode_workers`` setting,
    else the number of CPUs."""
    return asked or int(settings.get("decode_workers") or 0) or (os.cpu_count() or 2)


class DecodePool(Generic[T, R]):
    """``work(item)`` for each fed item on ``workers`` threads; results in completion order.

    :meth:`feed` runs in a producer thread (it blocks while ``max_in_flight`` results are not yet
    taken, so a long stream of jobs never piles up decoded images); :meth:`get` in the consumer.
    ``work`` must not raise (it turns a bad item into a result) and must not return None, which
    marks the end of the stream."""

    def __init__(self, work: Callable[[T], R], workers: int, max_in_flight: int):
        self.work = work
        self.max_in_flight = max_in_flight
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=THREAD_NAME)
        self._results: queue.Queue[R | None] = queue.Queue()
        self._slots = threading.Semaphore(max_in_flight)
        #: what iterating the fed items raised (the producer's error), for the consumer to raise
        self.error: BaseException | None = None

    def feed(self, items: Iterable[T], stop: threading.Event) -> None:
        """Submit every item (until ``stop`` is set), then wait for the threads and put the end
        marker. An exception from ``items`` is kept in :attr:`error`."""
        try:
            for item in items:
                if stop.is_set():
                    break
                self._slots.acquire()
                future = self._executor.submit(self.work, item)
                future.add_done_callback(lambda fut: self._results.put(fut.result()))
        except BaseException as exc:  # surfaced in the consumer
            self.error = exc
        finally:
            self._executor.shutdown(wait=True)
            self._results.put(None)

    def get(self, timeout: float | None = None) -> R | None:
        """The next result, or None once the stream ended; raises :class:`queue.Empty` after
        ``timeout`` seconds without one."""
        item = self._results.get(timeout=timeout)
        if item is not None:
            self._slots.release()
        return item

    def abort(self) -> None:
        """The consumer gives up: unblock a producer that waits for a slot (it should also see its
        ``stop`` event set) so that it ends."""
        for _ in range(self.max_in_flight):
            self._slots.release()


def prepared_batches(
    prepare: Callable[[Any], Any],
    items: Sequence[T],
    batch: int,
    workers: int = 2,
    *,
    path: Callable[[T], Path | str] = lambda item: item.path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[tuple[list[T], list[Any]]]:
    """Decode each item's photo and ``prepare`` it for a model (``Tagger.prepare``) on ``workers``
    threads; yields ``(items, prepared)`` for each run of ``batch`` items, in order. A photo that
    cannot be read (:class:`DecodeError`, ``OSError``) is left out."""

    def load(item: T) -> tuple[T, Any]:
        try:
            return item, prepare(decode_photo(path(item), max_pixels=max_pixels).image)
        except (DecodeError, OSError):
            return item, None

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix=THREAD_NAME) as pool:
        for start in range(0, len(items), batch):
            done = [r for r in pool.map(load, items[start:start + batch]) if r[1] is not None]
            if done:
                yield [d[0] for d in done], [d[1] for d in done]
