"""phototag plugin ``digikam``: put phototag's tags into digiKam.

Two ways, see ``docs/digikam.md``:

* **sidecar mode** (recommended, nothing to configure here): enable the ``xmp`` plugin and turn on
  digiKam's *Read from sidecar files*; digiKam picks the tags up when it rescans.
* **database mode** (this plugin's exporter, ``phototag export --to digikam``): writes the tags
  straight into a *closed* digiKam SQLite database, after a backup.

Settings (``[plugins.digikam]``):

``database`` (required)
    ``digikam4.db`` or the folder that holds it.
``root`` (``"phototag"``)
    the top-level digiKam tag phototag's tags go under; only that tree is ever changed.
``languages`` (``["en"]``)
    ``"en"`` and/or ``"zh"``.
``keep_backups`` (``5``)
    how many of phototag's backups of the database to keep (the oldest beyond that are deleted
    after each new one); a run that changes nothing makes no backup.

A ``/`` inside a tag name would be a level separator in digiKam's tag paths, so it is written as
``∕`` (DIVISION SLASH): the flat tag ``AC/DC`` stays one tag. Tags below the root that no image
uses any more are removed at the end of a run (not those the user gave an icon or properties).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from phototag.export import (
    SKIPPED,
    UNCHANGED,
    WOULD_WRITE,
    WRITTEN,
    ExportError,
    ExportItem,
    ExportResult,
    Exporter,
    names_with_separators,
)
from phototag.hookspecs import hookimpl
from phototag.ingest.keywords import level_name

from .database import DigikamDatabase, DigikamError, check_closed, database_path, running_digikam_processes

__all__ = ["DigikamExporter", "DigikamDatabase", "DigikamError", "check_closed", "running_digikam_processes"]

DEFAULTS: dict[str, Any] = {"database": None, "root": "phototag", "languages": ["en"], "keep_backups": 5}


class DigikamExporter(Exporter):
    name = "digikam"
    description = "tags written into a closed digiKam database (digikam4.db), after a backup"
    transactional = True  # one SQLite transaction per run, committed in close()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        merged = {**DEFAULTS, **dict(options or {})}
        if isinstance(merged["languages"], str):
            merged["languages"] = [merged["languages"]]
        root = merged["root"]
        if not isinstance(root, str) or not root.strip():
            raise ExportError(f"[plugins.digikam] root must be a non-empty tag name, not {root!r}")
        keep = merged["keep_backups"]
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ExportError(f"[plugins.digikam] keep_backups must be a whole number of at least 1, not {keep!r}")
        super().__init__(merged)
        self.db: DigikamDatabase | None = None
        self._dry_run = False

    def _database_path(self) -> Path:
        setting = self.options.get("database")
        if not setting:
            raise ExportError("set [plugins.digikam] database to your digikam4.db (or its folder) "
                              "to use the digikam exporter; or use sidecars (docs/digikam.md)")
        try:
            return database_path(setting)
        except DigikamError as exc:
            raise ExportError(str(exc)) from exc

    def target(self, item: ExportItem) -> str | None:
        setting = self.options.get("database")
        return str(Path(setting).expanduser()) if setting else None

    def open(self, dry_run: bool) -> None:
        path = self._database_path()
        self.db = DigikamDatabase(path, root=self.options["root"].strip(), keep_backups=self.options["keep_backups"])
        self._dry_run = dry_run
        try:
            self.db.open(write=not dry_run)
        except DigikamError as exc:
            self.db = None
            raise ExportError(str(exc)) from exc

    def content_hash(self, item: ExportItem) -> str:
        digest = super().content_hash(item)
        if names_with_separators(item):  # written differently since separators are replaced
            digest = hashlib.sha256(f"{digest}:separators-replaced".encode()).hexdigest()
        return digest

    def paths(self, item: ExportItem) -> list[tuple[str, ...]]:
        paths: set[tuple[str, ...]] = set()
        for language in self.options["languages"]:
            paths.update(tuple(level_name(name, "/") for name in p) for p in item.tag_paths(language))
        return sorted(paths)

    def write(self, item: ExportItem, dry_run: bool) -> ExportResult:
        if self.db is None:
            raise ExportError("the digikam exporter was not opened")
        result = ExportResult(self.name, item.photo_id, str(item.path), SKIPPED, str(self.db.path))
        image_id = self.db.image_id(Path(item.path))
        if image_id is None:
            result.detail = "not in the digiKam database (add its folder as a collection and let digiKam scan it)"
            return result
        if dry_run:
            current = {p[1:] for p in self.db.image_tag_paths(image_id) if p and p[0] == self.db.root}
            result.action = UNCHANGED if current == set(self.paths(item)) else WOULD_WRITE
            return result
        added, removed = self.db.set_image_tags(image_id, self.paths(item))
        result.action = WRITTEN
        result.detail = f"digiKam image {image_id}: +{added} -{removed} tags"
        return result

    def close(self, ok: bool) -> None:
        if self.db is not None:
            self.db.close(commit=ok and not self._dry_run)
            self.db = None


@hookimpl
def register_exporters(settings):
    return [DigikamExporter(settings.section("plugins.digikam"))]
