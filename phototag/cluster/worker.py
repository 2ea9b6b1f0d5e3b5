"""The tagging actor: one model load, then batches of photos in, what the model says out.

A :class:`TaggingWorker` is started by :func:`start_workers` on the cluster (``num_gpus=1`` each when
the cluster has GPUs, else a share of the CPUs), resolves the same model name with the same settings
through :func:`phototag.tagging.registry.get_tagger`, and for each batch of paths reads every file
itself (hash when asked, decode, EXIF, the tagger's ``prepare`` — on a few threads) and runs
``predict`` on the photos that decoded. It never touches the library: a photo that cannot be read
comes back as that photo's error (the words a local scan records), the rest as facts + prediction.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("phototag.cluster")

#: restarts Ray gives one actor that died (a killed process, a lost node) before it is given up
MAX_RESTARTS = 4


@dataclass
class PhotoResult:
    """What a worker found out about one photo: its facts and the prediction, or its error."""

    error: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    exif: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    prediction: Any = None


@dataclass
class BatchResult:
    photos: list[PhotoResult]
    model_seconds: float = 0.0
    pid: int = 0


class TaggingWorker:
    """Runs on a Ray worker (wrapped by ``ray.remote`` in :func:`start_workers`)."""

    def __init__(self, home: bytes, data: dict[str, Any], model: str, threads: int, max_pixels: int):
        from phototag.config import Settings
        from phototag.tagging.registry import get_tagger

        self.threads = max(1, threads)
        self.max_pixels = max_pixels
        self.tagger = get_tagger(Settings(home=Path(os.fsdecode(home)), data=data), model)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="phototag-decode")
        # two batches run at once (max_concurrency=2): one is read and decoded while the other is in
        # the model, which one thread at a time owns
        self.model_lock = threading.Lock()
        try:
            import torch

            torch.set_num_threads(self.threads)
        except ImportError:  # a plugin tagger without torch
            pass

    def identity(self) -> tuple[int, int, str, str, str]:
        """(pid, preferred batch size, model id, weights sha256, settings): the driver checks that every
        node runs the same model."""
        import json

        self.tagger.set_threads(self.threads)  # before the load: an exported runtime takes its threads then
        self.tagger.ready()  # the model loads now, while the driver waits for every actor
        return (os.getpid(), self.tagger.batch_size, self.tagger.model_id, self.tagger.weights_sha256,
                json.dumps(self.tagger.settings(), sort_keys=True, default=str))

    def _read(self, item: tuple[bytes, bool]) -> tuple[PhotoResult, Any]:
        from phototag.ingest.decode import decode_photo, read_error
        from phototag.ingest.exif import read_exif
        from phototag.ingest.fingerprint import sha256_file

        raw, want_hash = item
        path = Path(os.fsdecode(raw))
        try:
            digest = sha256_file(path) if want_hash else None
            decoded = decode_photo(path, max_pixels=self.max_pixels)
            exif = read_exif(path).as_columns()
            prepared = self.tagger.prepare(decoded.image)
            return PhotoResult(width=decoded.width, height=decoded.height, format=decoded.format, exif=dict(exif),
                               sha256=digest), prepared
        except Exception as exc:  # one bad photo must never stop the batch
            if not isinstance(exc, OSError) and type(exc).__name__ != "DecodeError":
                log.exception("unexpected error decoding %s", path)
            return PhotoResult(error=read_error(exc)), None

    def tag(self, items: list[tuple[bytes, bool]]) -> BatchResult:
        """``items``: (path as the worker sees it, whether to hash the file). One result per item, in order."""
        read = list(self.pool.map(self._read, items))
        good = [i for i, (result, _) in enumerate(read) if result.error is None]
        seconds = 0.0
        if good:
            with self.model_lock:
                t0 = time.perf_counter()
                predictions = self.tagger.predict([read[i][1] for i in good])
                seconds = time.perf_counter() - t0
            for i, prediction in zip(good, predictions):
                read[i][0].prediction = prediction
        return BatchResult([result for result, _ in read], seconds, os.getpid())


def plan_workers(resources: dict[str, float], nodes: int, asked: int) -> tuple[int, dict[str, float], int]:
    """(actors, the resources of each, threads of each): ``asked`` actors, or one per GPU, or one per
    node without GPUs; a CPU actor asks for a share of the CPUs so that all of them fit."""
    gpus = int(resources.get("GPU", 0))
    cpus = max(1.0, float(resources.get("CPU", 1)))
    count = asked or gpus or max(1, nodes)
    if gpus:
        return count, {"num_gpus": 1, "num_cpus": min(1.0, cpus / count)}, max(1, int(cpus // count))
    share = min(1.0, cpus / count)
    return count, {"num_cpus": share}, max(1, int(cpus // count))


def start_workers(cluster, settings, model: str, home: bytes, asked: int) -> tuple[list, Callable[[], Any]]:
    """Start the tagging actors (each loads the model once, on its first batch); also returns a function
    that starts one more (a replacement for an actor that used up its restarts)."""
    ray = cluster.ray
    count, resources, threads = plan_workers(cluster.resources(), cluster.nodes(), asked)
    actor_class = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=0, max_concurrency=2, **resources)(TaggingWorker)
    max_pixels = int(settings.get("scan.max_pixels") or 300_000_000)

    def spawn() -> Any:
        return actor_class.remote(home, settings.data, model, threads, max_pixels)

    return [spawn() for _ in range(count)], spawn
