"""The one pool of decode threads: photos are decoded (and prepared for a model) on several threads.

Pillow, pillow-heif, Exiv2 and the hash functions release the GIL, so decoding on a few threads
overlaps the model's work. Two ways in, one machinery:

* :class:`DecodePool` streams: a producer feeds it work items (blocking while ``max_in_flight``
  results wait to be taken) and a consumer takes results as they complete, with a timeout — the
  pipeline's ``scan``/``watch``/``retag`` (:mod:`phototag.pipeline`);
* :func:`prepared_batches` maps a list in order, batch by batch — learning from corrections
  (:mod:`phototag.learn`), which runs the model on photos the user reviewed.

How many threads decode and how many the model computes with is one decision, :func:`plan_resources`
(pure: the machine's cores, the model's device and free memory in, the split out), so that the two
never oversubscribe the CPU (2 cores are not 16):

* CPU: the cores are shared in proportion to where a photo's work is (the tagger's ``prepare_share``:
  ~0.7 for the built-in model, whose face detector runs in ``prepare``; ~0.02 for RAM's Swin-L); the
  decoders get at least one thread, and the model all cores that decoding does not keep busy;
* CUDA: every core decodes (the model thread mostly waits for the GPU; it keeps 2 threads for its
  CPU-side work) and the batch is sized to the GPU's free memory (:func:`cuda_batch_size`).

The ``decode_workers`` and ``batch_size`` settings (0 = auto) and a command's ``--workers`` /
``--batch-size`` override the plan.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, Sequence, TypeVar

from phototag.ingest.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_photo

T = TypeVar("T")
R = TypeVar("R")

THREAD_NAME = "phototag-decode"


#: largest batch the CUDA rule picks (throughput of the models here is flat beyond it)
CUDA_MAX_BATCH = 64
#: share of the GPU's free memory the batch's activations may use (the rest: weights' workspace, other users)
CUDA_MEMORY_SHARE = 0.5
#: peak activation memory of a forward pass per photo, in multiples of its float32 input tensor
#: (Swin-L at 384 px in bf16 measures about 60×; a margin for fp32 and other models)
ACTIVATION_FACTOR = 96


@dataclass(frozen=True)
class ResourcePlan:
    """How a run uses the machine: decode threads, the model's CPU threads, photos per model call."""

    decode_workers: int
    model_threads: int
    batch_size: int


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or ``taskset``'s limit), else all."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cuda_batch_size(free_bytes: int, input_size: int, *, cap: int = CUDA_MAX_BATCH) -> int:
    """Photos per model call on a GPU with ``free_bytes`` free, for a model whose input is
    ``input_size``² pixels: half the free memory divided by an estimate of one photo's activations."""
    per_photo = 3 * input_size * input_size * 4 * ACTIVATION_FACTOR
    fits = int(free_bytes * CUDA_MEMORY_SHARE) // per_photo
    return max(1, min(cap, fits))


def plan_resources(
    cores: int,
    device: str = "cpu",
    *,
    prepare_share: float = 0.1,
    cpu_batch: int = 8,
    free_memory: int | None = None,
    input_size: int = 224,
    workers: int = 0,
    batch_size: int = 0,
) -> ResourcePlan:
    """The split of ``cores`` between decoding and the model, and the batch size (pure).

    ``device``: ``cpu``, ``cuda[:N]`` or ``mps``; ``prepare_share``: the tagger's estimate of the
    share of a photo's CPU work done in ``prepare`` (decode pool) rather than in ``predict``;
    ``cpu_batch``: the tagger's preferred batch on a CPU; ``free_memory``: the GPU's free bytes
    (CUDA), ``input_size``: the model's input side in pixels. ``workers`` / ``batch_size`` > 0
    override (a setting or a command's option)."""
    cores = max(1, cores)
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        busy = min(cores - 1, round(cores * min(max(prepare_share, 0.0), 1.0)))  # cores decoding keeps busy
        auto_workers = max(1, busy)
        threads = max(1, cores - busy)
        batch = cpu_batch
    else:  # the model runs on an accelerator: the CPU's job is to keep it fed
        auto_workers = cores
        threads = min(2, cores)
        batch = cuda_batch_size(free_memory, input_size) if kind == "cuda" and free_memory else cpu_batch
    decode = workers or auto_workers
    if workers and kind == "cpu":
        threads = max(1, cores - min(workers, cores - 1))  # the asked decoders get their cores
    return ResourcePlan(decode_workers=decode, model_threads=threads, batch_size=batch_size or max(1, batch))


def decode_workers(settings: Any, asked: int | None = None) -> int:
    """Decode threads: ``asked`` (a command's ``--workers``), else the ``decode_workers`` setting,
    else the CPU share :func:`plan_resources` gives decoding on this machine for a typical model."""
    return asked or int(settings.get("decode_workers") or 0) or plan_resources(usable_cpus()).decode_workers


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
