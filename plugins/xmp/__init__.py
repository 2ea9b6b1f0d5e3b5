"""phototag plugin ``xmp``: write tags to XMP sidecars (and, when asked, into the image file).

Only the writing is here; reading sidecars back (the user's keywords, their edits under the root) is
phototag's core, :mod:`phototag.ingest.keywords`, and works whether this plugin is enabled or not.

Settings (``[plugins.xmp]`` in config.toml):

``root`` (``"phototag"``)
    the top-level keyword phototag's tags are written under; only that tree is ever replaced.
``sidecar`` (``true``)
    write sidecars.
``sidecar_style`` (``"name.ext.xmp"``)
    the name of new sidecars: ``"name.ext.xmp"`` (photo.jpg.xmp, digiKam's and darktable's default)
    or ``"name.xmp"`` (photo.xmp). An existing sidecar of either name is always the one updated
    (``photo.xmp`` when both exist, as digiKam does).
``write_image`` (``false``)
    also write the keywords into the image file itself (JPEG, PNG, TIFF, WebP), through a copy
    that is renamed over the original.
``languages`` (``["en"]``)
    ``"en"``, ``"zh"`` or both: which names to write (a tag without a Chinese name keeps its
    English one).
"""

from __future__ import annotations

import hashlib
import json
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
from phototag.atomic import remove_stale_temp_files
from phototag.hookspecs import hookimpl
from phototag.ingest.keywords import DEFAULT_ROOT, SidecarError, read_fields_of, sidecar_edits, sidecar_stat

from .sidecar import WRITABLE_IMAGE_SUFFIXES, XmpError, merge_keywords, sidecar_path, update_keywords

__all__ = ["XmpExporter", "XmpError", "sidecar_path", "merge_keywords", "update_keywords"]

DEFAULTS: dict[str, Any] = {
    "root": DEFAULT_ROOT,
    "sidecar": True,
    "sidecar_style": "name.ext.xmp",
    "write_image": False,
    "languages": ["en"],
}


class XmpExporter(Exporter):
    name = "xmp"
    description = "XMP sidecars (digiKam TagsList, Lightroom hierarchicalSubject, dc:subject)"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        merged = {**DEFAULTS, **dict(options or {})}
        languages = merged["languages"]
        if isinstance(languages, str):
            languages = [languages]
        bad = [lang for lang in languages if lang not in ("en", "zh")]
        if bad or not languages:
            raise ExportError(f"[plugins.xmp] languages must be \"en\" and/or \"zh\", not {languages!r}")
        merged["languages"] = list(languages)
        root = merged["root"]
        if not isinstance(root, str) or not root.strip() or "/" in root or "|" in root:
            raise ExportError(f"[plugins.xmp] root must be one keyword without / or |, not {root!r}")
        if not merged["sidecar"] and not merged["write_image"]:
            raise ExportError("[plugins.xmp] sidecar and write_image are both false: nothing to write")
        sidecar_path(Path("check.jpg"), merged["sidecar_style"])  # validates the style early
        super().__init__(merged)
        self._cleaned: set[Path] = set()

    def open(self, dry_run: bool) -> None:
        self._cleaned = set()

    @property
    def root(self) -> str:
        return self.options["root"].strip()

    def sidecar_stat(self, item: ExportItem) -> str | None:
        return sidecar_stat(item.path) if self.options["sidecar"] else None

    def unread_edits(self, item: ExportItem) -> str | None:
        target = Path(self.target(item) or "")
        if not self.options["sidecar"] or not target.is_file():
            return None
        try:
            edits = sidecar_edits(read_fields_of(target), self.root)
        except SidecarError:
            return None  # not readable: the write reports that
        if not (edits.added or edits.removed):
            return None
        return (f"{target.name} has keywords under {self.root!r} that another app added or removed "
                "since phototag wrote it")

    def content_hash(self, item: ExportItem) -> str:
        digest = super().content_hash(item)
        if names_with_separators(item):  # written differently since separators are replaced
            digest = hashlib.sha256(f"{digest}:separators-replaced".encode()).hexdigest()
        # the sync records (what phototag wrote, which of it is manual: docs/sync.md) are part of what
        # is written: a tag turning manual changes the sidecar, and sidecars from before the records
        # are written once more to gain them
        manual = sorted(self.manual_paths(item))
        blob = json.dumps(["sync-records-1", digest, manual], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8", "surrogateescape")).hexdigest()

    def manual_paths(self, item: ExportItem) -> set[tuple[str, ...]]:
        """The written paths of the photo's manual tags (in every language written)."""
        paths: set[tuple[str, ...]] = set()
        for tag in item.tags:
            if "manual" in tag.sources:
                for language in self.options["languages"]:
                    paths.add(tag.path_zh if language == "zh" else tag.path)
        return paths

    def paths(self, item: ExportItem) -> list[tuple[str, ...]]:
        paths: set[tuple[str, ...]] = set()
        for language in self.options["languages"]:
            paths.update(item.tag_paths(language))
        return sorted(paths)

    def target(self, item: ExportItem) -> str | None:
        if self.options["sidecar"]:
            return str(sidecar_path(item.path, self.options["sidecar_style"]))
        return str(item.path)

    def write(self, item: ExportItem, dry_run: bool) -> ExportResult:
        photo = Path(item.path)
        result = ExportResult(self.name, item.photo_id, str(photo), SKIPPED, self.target(item))
        if not photo.exists():
            result.detail = "photo file not found"
            return result
        if not dry_run and photo.parent not in self._cleaned:  # once per folder and run
            remove_stale_temp_files(photo.parent)
            self._cleaned.add(photo.parent)
        paths = self.paths(item)
        changed_any = False
        notes: list[str] = []
        try:
            if self.options["sidecar"]:
                target = Path(result.target or "")
                changed, _ = update_keywords(target, paths, self.root, create=True, dry_run=dry_run,
                                             manual=self.manual_paths(item))
                changed_any |= changed
                if not changed and not target.exists():
                    result.detail = "no tags to write"
                    return result
            if self.options["write_image"]:
                if photo.suffix.lower() in WRITABLE_IMAGE_SUFFIXES:
                    changed, _ = update_keywords(photo, paths, self.root, create=False, dry_run=dry_run,
                                                 manual=self.manual_paths(item))
                    changed_any |= changed
                else:
                    notes.append(f"exiv2 cannot safely write {photo.suffix} files; sidecar only")
        except XmpError as exc:
            raise ExportError(str(exc)) from exc
        if dry_run:
            result.action = WOULD_WRITE if changed_any else UNCHANGED
        else:
            result.action = WRITTEN
            if not changed_any:
                notes.append("keywords already up to date")
        result.detail = "; ".join(notes)
        return result


@hookimpl
def register_exporters(settings):
    return [XmpExporter(settings.section("plugins.xmp"))]
