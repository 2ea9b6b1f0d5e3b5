"""Writing tags where photo apps read them.

* :mod:`phototag.export.contract`: what an exporter plugin implements (:class:`Exporter`) and the
  values it is given and returns. Its names are re-exported here: ``from phototag.export import
  Exporter, ExportResult, WRITTEN`` is the import path plugins use (docs/plugins.md).
* :mod:`phototag.export.service`: :func:`~phototag.export.service.export_photos`, the one writer of
  ``export_state``.
* :mod:`phototag.export.auto`: the built-in ``photos_tagged`` hook that exports after tagging.

Importing this package loads only the contract (no database, no plugin manager).
"""

from phototag.export.contract import (
    FAILED,
    SKIPPED,
    UNCHANGED,
    WOULD_WRITE,
    WRITTEN,
    ExportError,
    Exporter,
    ExportItem,
    ExportReport,
    ExportResult,
    ExportTag,
    clean_tag_name,
    names_with_separators,
)

__all__ = [
    "FAILED", "SKIPPED", "UNCHANGED", "WOULD_WRITE", "WRITTEN",
    "ExportError", "Exporter", "ExportItem", "ExportReport", "ExportResult", "ExportTag",
    "clean_tag_name", "names_with_separators",
]
