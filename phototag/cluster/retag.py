"""``phototag retag --ray ADDRESS``: the re-tag service (:mod:`phototag.retag.service`) — its session
file, snapshot, queue and report — with the model's work on a Ray cluster."""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Iterator

from phototag.cluster.connect import Cluster
from phototag.cluster.pipeline import RayPipeline

_swap = threading.Lock()


@contextlib.contextmanager
def _ray_pipelines(cluster: Cluster) -> Iterator[None]:
    """While the block runs, the re-tag service builds :class:`RayPipeline`\\ s.

    The service constructs its pipeline itself (``drain_retag``); until it takes a pipeline factory,
    its module's ``Pipeline`` name is pointed at the Ray one for the duration (a CLI command is one
    re-tag in one process; the lock keeps two from interleaving)."""
    from phototag.retag import service

    with _swap:
        original = service.Pipeline
        service.Pipeline = functools.partial(RayPipeline, cluster=cluster)  # type: ignore[misc]
        try:
            yield
        finally:
            service.Pipeline = original  # type: ignore[misc]


def retag(library, cluster: Cluster, query=None, model: str | None = None, **kwargs: Any):
    """:func:`phototag.retag.service.retag` with the model on ``cluster``."""
    from phototag.retag import service

    with _ray_pipelines(cluster):
        return service.retag(library, query, model, **kwargs)
