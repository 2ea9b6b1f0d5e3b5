"""Export after tagging: phototag's own ``photos_tagged`` hook implementation.

A built-in plugin, registered like a third-party one (:data:`phototag.plugins.BUILTIN_PLUGINS`):
after each committed batch of ``scan``/``watch``/``retag`` and after ``phototag tag add/remove``,
the photos are exported with the exporters ``[export] auto`` names (every enabled one by default).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from phototag import plugins
from phototag.export.contract import SKIPPED
from phototag.export.service import UNREAD_EDITS_HINT, export_photos
from phototag.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from phototag.config import Settings
    from phototag.library import Library

log = logging.getLogger(__name__)


def auto_export_names(settings: "Settings") -> list[str] | None:
    """Which exporters run after tagging: ``[export] auto`` is true (all enabled, the default),
    false (none → empty list) or a list of exporter names."""
    value = settings.get("export.auto", True)
    if value is True:
        return None
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


_warned_not_enabled: set[str] = set()  # [export] auto names warned about once per process


@hookimpl
def photos_tagged(library: "Library", photo_ids: list[int]) -> None:
    """Export freshly tagged photos with the enabled exporters (``[export] auto``): after each batch of
    ``scan``/``watch``/``retag``, and after ``phototag tag add/remove``.

    Problems are logged, never raised: tagging must go on when a sidecar cannot be written."""
    settings = library.settings
    names = auto_export_names(settings)
    if names == [] or not photo_ids:
        return
    try:
        enabled = plugins.exporters(settings)  # only enabled plugins export on their own
        if names is None:
            names = sorted(enabled)
        for name in names:
            if name not in enabled and name not in _warned_not_enabled:
                _warned_not_enabled.add(name)
                log.warning("[export] auto names %r, but no enabled plugin provides it: add its plugin to "
                            "[plugins] enabled", name)
        chosen = [enabled[n] for n in names if n in enabled]
        if not chosen:
            return
        report = export_photos(library, photo_ids, chosen, settings=settings)
    except Exception as exc:
        log.error("automatic export after tagging failed: %s", exc)
        return
    for result in report.failed:
        log.warning("automatic %s export of %s failed: %s", result.exporter, result.path, result.detail)
    for result in report.results:
        if result.action == SKIPPED and result.detail.endswith(UNREAD_EDITS_HINT):
            log.warning("automatic %s export of %s skipped: %s", result.exporter, result.path, result.detail)
