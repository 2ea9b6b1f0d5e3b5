"""The exporter contract: what an exporter plugin implements and what it is given and returns.

An exporter writes a photo's tags somewhere outside phototag (a sidecar, another app's database).
Plugins subclass :class:`Exporter` and return instances from the ``register_exporters`` hook
(:mod:`phototag.hookspecs`); the export service (:mod:`phototag.export.service`) calls them with an
:class:`ExportItem` per photo and records the :class:`ExportResult` they return.

This module is a leaf: it imports nothing of phototag but the keyword-path spelling it shares
with the sidecar reader, so a plugin importing it loads neither the database nor the plugin manager.
"""

from __future__ import annotations

import abc
import hashlib
import json
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from phototag.errors import PhototagError
from phototag.ingest.keywords import SEPARATOR_LOOKALIKES

#: what happened to one photo with one exporter
WRITTEN = "written"
WOULD_WRITE = "would-write"  # dry run
UNCHANGED = "unchanged"  # same content hash as last time: nothing to do
SKIPPED = "skipped"  # the exporter had nothing to do (detail says why)
FAILED = "failed"


class ExportError(PhototagError):
    """An export cannot run (unknown exporter, app database in use, …); the message says why."""


@dataclass(frozen=True)
class ExportTag:
    """One tag of a photo as exporters see it: its hierarchical path from the top-level tag."""

    path: tuple[str, ...]  #: English names, e.g. ("animal", "cat", "tabby cat")
    path_zh: tuple[str, ...]  #: Chinese names, English where a tag has none
    sources: tuple[str, ...]  #: TagSource values that gave the photo this tag

    @property
    def leaf(self) -> str:
        return self.path[-1]


@dataclass
class ExportItem:
    """Everything an exporter needs to know about one photo."""

    photo_id: int
    path: Path
    sha256: str | None
    tags: list[ExportTag]  #: model, manual and plugin tags (never ``imported`` ones)
    imported: list[tuple[str, ...]] = field(default_factory=list)  #: the user's own keywords
    #: what was changed on the way out (a tag name with control characters); shown with the result
    notes: list[str] = field(default_factory=list)

    def tag_paths(self, language: str = "en") -> list[tuple[str, ...]]:
        return sorted({t.path_zh if language == "zh" else t.path for t in self.tags})


@dataclass
class ExportResult:
    exporter: str
    photo_id: int
    path: str
    action: str  # WRITTEN | WOULD_WRITE | UNCHANGED | SKIPPED | FAILED
    target: str | None = None
    detail: str = ""
    content_hash: str | None = None
    #: the photo's sidecars right after this write (:meth:`Exporter.sidecar_stat`), stored with the
    #: photo so that phototag's own write is not read back as the user's edit
    sidecar_stat: str | None = None


@dataclass
class ExportReport:
    dry_run: bool
    exporters: list[str]
    results: list[ExportResult] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for result in self.results:
            out[result.action] = out.get(result.action, 0) + 1
        return out

    @property
    def failed(self) -> list[ExportResult]:
        return [r for r in self.results if r.action == FAILED]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "exporters": self.exporters,
            "counts": self.counts(),
            "results": [asdict(r) for r in self.results],
        }


class Exporter(abc.ABC):
    """Base class of every exporter. Subclasses set ``name`` and implement :meth:`write`.

    Lifecycle per export run: :meth:`open` once, :meth:`write` per photo, :meth:`close` once
    (also after a failure). ``options`` is the plugin's settings table."""

    name: str = ""
    description: str = ""
    #: True when :meth:`close` commits everything at once (an app database): the service then
    #: records export state only after a successful close, so a crash never marks unwritten photos.
    transactional: bool = False

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    def target(self, item: ExportItem) -> str | None:
        """Where :meth:`write` would write for this photo (sidecar path, database path)."""
        return None

    def content_hash(self, item: ExportItem) -> str:
        """Hash of what would be written; equal hashes mean the photo is skipped."""
        payload = {
            "exporter": self.name,
            "tags": [list(p) for p in sorted({t.path for t in item.tags})],
            "tags_zh": [list(p) for p in sorted({t.path_zh for t in item.tags})],
            "options": self.options,
            "target": self.target(item),
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()

    def is_current(self, item: ExportItem, state_target: str | None) -> bool:
        """Whether what was written last time is still there (else it is written again)."""
        return state_target is not None and Path(state_target).exists()

    def sidecar_stat(self, item: ExportItem) -> str | None:
        """For an exporter that writes the photo's sidecars (which phototag also reads: two-way sync,
        docs/sync.md): their stat on disk, as :func:`phototag.ingest.keywords.sidecar_stat` gives it.
        None (the default): this exporter writes no sidecar. A sidecar whose stat differs from the one
        phototag stored when it last read or wrote it was changed by someone else since: it is written
        only if :meth:`unread_edits` finds nothing a write would lose, and its stat is then not stored,
        so that the next scan reads what the other app added."""
        return None

    def unread_edits(self, item: ExportItem) -> str | None:
        """Why the photo's sidecar must be read by a scan before it is written (the user's edits in the
        part phototag rewrites, which the write would lose), or None. Asked only of a sidecar that
        changed since phototag last read or wrote it."""
        return None

    def open(self, dry_run: bool) -> None:
        """Prepare for a run (check an app is closed, back up its database, …)."""

    @abc.abstractmethod
    def write(self, item: ExportItem, dry_run: bool) -> ExportResult:
        """Write one photo's tags (or, with ``dry_run``, say what would be written)."""

    def close(self, ok: bool) -> None:
        """End the run; ``ok`` is False when it was interrupted by an error."""


# ---- tag names as other apps can hold them -----------------------------------------------------


def names_with_separators(item: ExportItem) -> bool:
    """Whether a tag name of ``item`` contains a hierarchy separator (``AC/DC``). Exporters add a
    marker to their content hash for such photos: sidecars written before separators were replaced
    (where ``AC/DC`` became two levels) then count as changed and are rewritten. How a name is
    written as one level: :func:`phototag.ingest.keywords.level_name`."""
    return any(sep in name for tag in item.tags for name in (*tag.path, *tag.path_zh)
               for sep in SEPARATOR_LOOKALIKES)


_CONTROL_WHITESPACE = "\t\n\r\v\f\x1c\x1d\x1e\x1f\x85"


def clean_tag_name(name: str) -> str:
    """``name`` without control characters, as exporters write it.

    XMP (XML 1.0) cannot hold most control characters at all, and a tab or line break inside a
    keyword breaks the apps that show it. Control characters that separate (tab, line breaks) become
    one space, every other one (Unicode category Cc) is dropped, and runs of spaces are collapsed.
    The result may be empty (the tag is then not exported)."""
    if name.isprintable():
        return name
    out = []
    for char in name:
        if char in _CONTROL_WHITESPACE:
            out.append(" ")
        elif unicodedata.category(char) != "Cc":
            out.append(char)
    return _squash("".join(out))


def _squash(text: str) -> str:
    while "  " in text:
        text = text.replace("  ", " ")
    return text.strip()
