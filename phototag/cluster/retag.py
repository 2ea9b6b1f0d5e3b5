"""``phototag retag --ray ADDRESS``: the re-tag service (:mod:`phototag.retag.service`) — its session
file, snapshot, queue and report — with the model's work on a Ray cluster."""

from __future__ import annotations

import functools
from typing import Any

from phototag.cluster.connect import Cluster
from phototag.cluster.pipeline import RayPipeline


def retag(library, cluster: Cluster, query=None, model: str | None = None, **kwargs: Any):
    """:func:`phototag.retag.service.retag` with the model on ``cluster``."""
    from phototag.retag import service

    return service.retag(library, query, model, pipeline_class=functools.partial(RayPipeline, cluster=cluster),
                         **kwargs)
