"""What flows through the pipeline: a :class:`Job` (one file that needs work), what decoding it gave
(:class:`Decoded`), and the run's :class:`Report`."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from phototag.errors import PhototagError
from phototag.ingest.keywords import PhotoKeywords
from phototag.library import PhotoFacts


class PersistError(PhototagError):
    """A batch could not be stored (the database failed, not the photos): nothing is to blame on them."""


@dataclass
class Job:
    """One file that needs the model."""

    path: Path
    root: Path | None
    reason: str = "new"  # new | changed | retag | sidecar (its sidecar changed: keywords only, no model)
    size: int | None = None
    mtime: float | None = None
    sha256: str | None = None
    #: set for jobs claimed from the work queue: the row's ``enqueued_at`` at claim time. The batch
    #: deletes the row only if it was not enqueued again meanwhile (the file changed in flight).
    queued_at: datetime.datetime | None = None
    #: a tagged photo with the same content, model, weights and settings: its results are copied
    copy_of: int | None = None


@dataclass
class Report:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    failed: int = 0
    missing: int = 0
    retagged: int = 0
    tagged: int = 0
    busy: int = 0  # files another running phototag process was tagging (left to it)
    copied: int = 0  # new/changed photos given the tags of a byte-identical photo (no model work)
    synced: int = 0  # unchanged photos whose sidecar changed: keywords read again (no model work)
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: seconds the model took to load (paid once per run, before its first batch)
    load_seconds: float = 0.0
    #: seconds in the model's ``predict`` (tagging only, the load not included)
    model_seconds: float = 0.0
    #: photos that went through the model's ``predict`` (copies and sidecar-only jobs need no model)
    model_photos: int = 0

    @property
    def tagging_seconds(self) -> float:
        """The run's wall time less the model's load: what throughput is measured against."""
        return max(0.0, self.seconds - self.load_seconds)

    @property
    def photos_per_second(self) -> float:
        """Photos through the model per second of the run, the model's load not counted."""
        return self.model_photos / self.tagging_seconds if self.tagging_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "new": self.new, "updated": self.updated, "unchanged": self.unchanged, "moved": self.moved,
            "failed": self.failed, "missing": self.missing, "retagged": self.retagged, "tagged": self.tagged,
            "busy": self.busy, "copied": self.copied, "synced": self.synced,
            "seconds": round(self.seconds, 3), "model_seconds": round(self.model_seconds, 3),
            "load_seconds": round(self.load_seconds, 3), "tagging_seconds": round(self.tagging_seconds, 3),
            "photos_per_second": round(self.photos_per_second, 3),
            "errors": [{"path": p, "error": e} for p, e in self.errors],
        }


@dataclass
class Decoded:
    """A job after decoding: the photo's facts, the model's input, its keywords — or why it failed."""

    job: Job
    facts: PhotoFacts | None = None
    prepared: Any = None
    keywords: PhotoKeywords = field(default_factory=PhotoKeywords)  # the user's keywords and sidecar edits
    error: str | None = None

    @property
    def kind(self) -> str:
        """model | copy | sidecar: what storing it takes."""
        if self.job.reason == "sidecar":
            return "sidecar"
        return "copy" if self.job.copy_of is not None else "model"


ProgressFn = Callable[[str, int], None]  # (event, n): "total", "advance"
CommitFn = Callable[[list[int]], None]  # photo ids committed with new tags
