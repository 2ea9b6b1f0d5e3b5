"""Tagging on a Ray cluster: ``phototag scan --ray ADDRESS`` and ``phototag retag --ray ADDRESS``.

Only the model's part of the work leaves this machine. Discovery, fingerprinting, the scan's rules
(new / changed / copied / moved / unchanged), the work-queue claims and every write to the library
stay in the driver (this process), exactly as in a local scan; what a batch of photos needs from
the model — reading the file, decoding it, EXIF, the tagger's ``prepare`` and ``predict`` — runs on
a Ray actor, which reads the photo itself from storage that every node mounts (``ray.path_map``
when the mount points differ). The results come back and are stored by the same code as a local
scan's (:class:`phototag.pipeline.Pipeline`'s batch store), one transaction per batch, so the
exactly-once guarantees are the local ones.

* :mod:`~phototag.cluster.connect` — joining the cluster (``auto``, ``host:6379``, ``ray://…`` or
  ``local``) with one-line errors, and starting the tagging actors;
* :mod:`~phototag.cluster.worker` — the actor: one model load, a batch of paths in, facts and
  predictions (or each photo's error) out;
* :mod:`~phototag.cluster.paths` — ``ray.path_map``: this machine's path prefix → the workers';
* :mod:`~phototag.cluster.pipeline` — :class:`RayPipeline`: batches to the actors, a batch whose
  actor died retried on another (then photo by photo), results committed in the driver;
* :mod:`~phototag.cluster.retag` — ``retag --ray``: :mod:`phototag.retag.service` with the Ray pipeline.

Ray is imported only when ``--ray`` is given (``pip install 'phototag[ray]'``).
"""

from phototag.cluster.connect import Cluster, ClusterError, connect

__all__ = ["Cluster", "ClusterError", "connect"]
