""":class:`RayPipeline`: a :class:`~phototag.pipeline.Pipeline` whose model work runs on Ray actors.

What stays in this process (the driver), unchanged: discovery, fingerprinting, the scan's rules and
the work-queue claims (:meth:`Pipeline.scan` / the re-tag's claims), reading sidecars, copies of
tagged twins, and storing every batch with the pipeline's batch store — one transaction per batch,
the batch's queue rows settled in it. What moves to the actors: reading and decoding the photo,
EXIF, ``prepare`` and ``predict`` (:class:`~phototag.cluster.worker.TaggingWorker`).

Up to two batches per actor are in flight; the driver commits each as it comes back. When an actor
dies (its process killed, its node lost) its batch is sent again to another actor (Ray restarts the
dead one); a batch that was in flight during two deaths is split and sent photo by photo, and a
photo in flight alone during two deaths is recorded as that photo's error — a crash is counted
against a photo only when it was alone. Nothing is stored before its batch comes back, and a batch
is stored once, so nothing is lost or doubled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from phototag.cluster.connect import Cluster, ClusterError
from phototag.cluster.paths import PathMap
from phototag.cluster.worker import MAX_RESTARTS
from phototag.ingest.decode import read_error
from phototag.ingest.pool import DecodePool
from phototag.library import PhotoFacts
from phototag.pipeline import Pipeline, Report
from phototag.pipeline.jobs import Decoded, Job

log = logging.getLogger("phototag.cluster")

#: deaths of the actor running a batch before the batch is split (and a lone photo is given up)
ATTEMPTS = 2
#: batches in flight per actor (one being tagged, one waiting in the actor's queue)
IN_FLIGHT_PER_ACTOR = 2
#: times a batch may find its actor restarting (not a death of its own) before that counts as one
UNAVAILABLE_RETRIES = 30
#: seconds an actor that died or was unavailable is given before it is sent work again
DOWN_SECONDS = 1.0
#: seconds to wait for the actors to load the model
READY_TIMEOUT = 900.0


@dataclass
class _Flight:
    batch: list[Decoded]  # everything the batch stores (copies, sidecars, local errors too)
    remote: list[Decoded]  # the photos the actor reads and tags
    attempts: int = 0  # deaths of the actor that ran it
    unavailable: int = 0  # times it found its actor restarting
    actor: int = 0


class RayPipeline(Pipeline):
    """``Pipeline(library, tagger, cluster=…)``: the same pipeline, the model on the cluster.

    ``tagger`` is this machine's instance of the model (its identity, names and settings are what the
    library records; its model is never loaded here); the actors resolve ``tagger.name`` themselves."""

    def __init__(self, library, tagger, *, cluster: Cluster, **kwargs: Any):
        super().__init__(library, tagger, **kwargs)
        self.cluster = cluster
        self.path_map = PathMap(library.settings.get("ray.path_map") or [])
        self._batch_size_given = bool(kwargs.get("batch_size") or int(library.settings.get("batch_size") or 0))
        self.actors: list = []
        self.actor_pids: list[int] = []  # the actors' processes, as they reported them (tests kill one)
        self.deaths = 0
        self._down: dict[int, float] = {}  # actor → until when it gets no work (it died: Ray restarts it)
        self._retry: list[_Flight] = []  # batches to send again

    # ---- what stays local -------------------------------------------------------------------
    def _decode(self, job: Job) -> Decoded:
        """Sidecar reads and copies as in a local scan; a photo for the model gets only its stat and its
        keywords here: the actor reads the file."""
        if job.reason == "sidecar" or job.copy_of is not None:
            return super()._decode(job)
        try:
            if job.size is None or job.mtime is None:
                st = os.stat(job.path)
                job.size, job.mtime = st.st_size, st.st_mtime
            stat, keywords = self._keywords(job)
            facts = PhotoFacts(path=job.path, root=job.root, size=job.size, mtime=job.mtime,
                               sha256=job.sha256 or "", sidecar_stat=stat)
            return Decoded(job, facts, None, keywords)
        except (FileNotFoundError, PermissionError) as exc:
            return Decoded(job, error=read_error(exc))
        except Exception as exc:
            log.exception("unexpected error reading %s", job.path)
            return Decoded(job, error=read_error(exc))

    # ---- the actors -------------------------------------------------------------------------
    def _start_actors(self, report: Report) -> None:
        """Start the actors and wait until each has loaded the model (the run's load time)."""
        from phototag.cluster.worker import start_workers  # noqa: PLC0415

        t0 = time.perf_counter()

        settings = self.library.settings
        self.actors, self._spawn = start_workers(self.cluster, settings, self.tagger.name,
                                                 self.path_map.to_worker(settings.home),
                                                 int(settings.get("ray.actors") or 0))
        self._deaths_of = [0] * len(self.actors)
        ray = self.cluster.ray
        refs = [a.identity.remote() for a in self.actors]
        ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=READY_TIMEOUT)
        if waiting:
            raise ClusterError(f"{len(waiting)} of {len(refs)} Ray tagging workers did not start within "
                               f"{READY_TIMEOUT:g} s (does the cluster have the resources?)")
        import json

        mine = (self.tagger.model_id, self.tagger.weights_sha256,
                json.dumps(self.tagger.settings(), sort_keys=True, default=str))
        try:
            identities = ray.get(refs)
        except Exception as exc:  # the model could not be built there
            cause = getattr(exc, "cause", None) or exc
            raise ClusterError(f"the Ray workers cannot load {self.tagger.name}: "
                               f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}") from exc
        for pid, batch_size, *theirs in identities:
            if tuple(theirs) != mine:
                raise ClusterError(
                    f"a Ray worker's {self.tagger.name} is not this machine's (model {theirs[0]}, weights "
                    f"{theirs[1][:12]}): install the same phototag and model pack on every node")
        self.actor_pids = [pid for pid, *_ in identities]
        report.load_seconds += time.perf_counter() - t0
        if not self._batch_size_given:  # the workers' device decides (a GPU takes bigger batches)
            self.batch_size = min(batch_size for _, batch_size, *_ in identities)

    def _stop_actors(self) -> None:
        for actor in self.actors:
            try:
                self.cluster.ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors = []

    # ---- decode → infer → persist, the model's part on the cluster ---------------------------
    def process(self, jobs: Iterable[Job], report: Report | None = None) -> Report:
        report = report if report is not None else Report()
        started = time.perf_counter()
        self._fill_names_zh()
        try:
            self._process_on_cluster(jobs, report)
        finally:
            self._stop_actors()
            self._store.finish_run()
        report.seconds = report.seconds or (time.perf_counter() - started)
        return report

    def _process_on_cluster(self, jobs: Iterable[Job], report: Report) -> None:
        ray = self.cluster.ray
        pool: DecodePool[Job, Decoded] = DecodePool(self._decode, self.decode_workers,
                                                    max(4 * self.batch_size, 2 * self.decode_workers))
        producer = threading.Thread(target=pool.feed, args=(jobs, self.stop_event), name="phototag-discover",
                                    daemon=True)
        producer.start()
        in_flight: dict[Any, _Flight] = {}
        batch: list[Decoded] = []
        ended = False
        try:
            while True:
                if self.stop_event.is_set():
                    break
                capacity = IN_FLIGHT_PER_ACTOR * max(1, len(self.actors))
                now = time.monotonic()
                while self._retry and len(in_flight) < capacity and \
                        any(self._down.get(i, 0.0) <= now for i in range(len(self.actors))):
                    self._dispatch(self._retry.pop(0), in_flight, report)
                while not ended and not self._retry and len(in_flight) < capacity:
                    try:
                        item = pool.get(timeout=0.05 if (in_flight or batch) else 0.5)
                    except queue.Empty:  # nothing decoded yet
                        if batch and not in_flight:  # the actors are idle: a partial batch goes now
                            self._dispatch(self._flight(batch), in_flight, report)
                            batch = []
                        break
                    if item is None:
                        ended = True
                    else:
                        batch.append(item)
                    if batch and (ended or len(batch) >= self.batch_size):
                        self._dispatch(self._flight(batch), in_flight, report)
                        batch = []
                if ended and not in_flight and not self._retry:
                    break
                if in_flight:
                    done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.2)
                    for ref in done:
                        self._collect(ref, in_flight.pop(ref), in_flight, report)
                elif self._retry:  # every actor is restarting
                    time.sleep(0.2)
        except BaseException:
            self.stop_event.set()
            pool.abort()
            raise
        finally:
            for ref in in_flight:
                try:
                    ray.cancel(ref)
                except Exception:
                    pass
            producer.join()
        if pool.error is not None:
            raise pool.error

    @staticmethod
    def _flight(batch: list[Decoded]) -> _Flight:
        return _Flight(batch, [d for d in batch if d.error is None and d.kind == "model"])

    def _dispatch(self, flight: _Flight, in_flight: dict, report: Report) -> None:
        if not flight.remote:  # copies, sidecars and local errors only: no model, stored at once
            self._persist(flight.batch, [], [], report)
            return
        if not self.actors:
            self._start_actors(report)
        now = time.monotonic()
        load = [0.0] * len(self.actors)
        for f in in_flight.values():
            load[f.actor] += 1
        for i in range(len(self.actors)):
            if self._down.get(i, 0.0) > now:  # restarting: the others first
                load[i] += 1000 + self._down[i] - now
        flight.actor = min(range(len(self.actors)), key=load.__getitem__)
        items = [(self.path_map.to_worker(d.job.path), not d.job.sha256) for d in flight.remote]
        in_flight[self.actors[flight.actor].tag.remote(items)] = flight

    def _collect(self, ref: Any, flight: _Flight, in_flight: dict, report: Report) -> None:
        ray = self.cluster.ray
        from ray import exceptions as rex

        try:
            result = ray.get(ref)
        except rex.ActorUnavailableError as exc:  # restarting (after a death), or briefly unreachable
            self._down[flight.actor] = time.monotonic() + DOWN_SECONDS
            flight.unavailable += 1
            log.warning("a Ray tagging worker is unavailable (%s): its %d photos are sent again",
                        (str(exc).splitlines() or [type(exc).__name__])[0], len(flight.remote))
            if flight.unavailable <= UNAVAILABLE_RETRIES:
                self._retry.append(flight)
            else:
                self._died(flight, exc, report)
            return
        except (rex.RayActorError, rex.WorkerCrashedError, rex.ObjectLostError, rex.OwnerDiedError) as exc:
            self._down[flight.actor] = time.monotonic() + DOWN_SECONDS
            self._died(flight, exc, report)
            return
        except rex.RayTaskError as exc:  # the model raised: as in a local scan, the run stops
            cause = getattr(exc, "cause", None) or exc
            raise ClusterError(f"tagging failed on a Ray worker: {type(cause).__name__}: "
                               f"{(str(cause).splitlines() or [''])[0]}") from exc
        good: list[Decoded] = []
        predictions: list = []
        for decoded, photo in zip(flight.remote, result.photos):
            if photo.error is not None:
                decoded.error = photo.error
                continue
            if photo.sha256:
                decoded.job.sha256 = photo.sha256
            decoded.facts = dataclasses.replace(
                decoded.facts, sha256=decoded.job.sha256, width=photo.width, height=photo.height,
                format=photo.format, exif=photo.exif)
            good.append(decoded)
            predictions.append(photo.prediction)
        report.model_seconds += result.model_seconds
        report.model_photos += len(good)
        self._persist(flight.batch, good, predictions, report)

    def _died(self, flight: _Flight, exc: BaseException, report: Report) -> None:
        """The actor running ``flight`` died: send it again, split it, or (a photo alone, twice) record it."""
        self.deaths += 1
        flight.attempts += 1
        self._deaths_of[flight.actor] += 1
        if self._deaths_of[flight.actor] > MAX_RESTARTS:  # Ray gave it up: a new one takes its place
            self.actors[flight.actor] = self._spawn()
            self._deaths_of[flight.actor] = 0
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        log.warning("a Ray tagging worker died with %d photos in flight (%s): sending them again",
                    len(flight.remote), why)
        if self.deaths > ATTEMPTS * (len(self.actors) + 1) * 4 and not report.tagged:
            raise ClusterError(f"the Ray tagging workers keep dying before tagging anything: {why}")
        if flight.attempts < ATTEMPTS:
            self._retry.append(flight)
            return
        if len(flight.remote) > 1:
            others = [d for d in flight.batch if all(d is not r for r in flight.remote)]
            for i, decoded in enumerate(flight.remote):
                self._retry.append(_Flight(([*others] if i == 0 else []) + [decoded], [decoded], actor=flight.actor))
            return
        decoded = flight.remote[0]
        decoded.error = f"tagging it killed a Ray worker {ATTEMPTS} times ({type(exc).__name__})"
        self._persist(flight.batch, [], [], report)
