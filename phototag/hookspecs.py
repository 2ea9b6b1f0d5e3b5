"""The plugin contract: every hook phototag calls, in one file.

A plugin is a module (or object) with functions decorated by :data:`hookimpl` whose names match
the specifications below. A plugin needs to implement only the hooks it cares about, and each
implementation may accept only the arguments it uses (pluggy passes them by name).

Plugins are found through the entry-point group ``phototag`` and are active only when their
entry-point name is listed in ``[plugins] enabled`` of ``config.toml``; the one exception is
``register_exporters``, which is also asked of an installed plugin that is not enabled when the user
names one of its exporters (``phototag export --to NAME``: naming it is consent). phototag's own
plugins (``xmp``, ``digikam``) are registered exactly the same way. See ``docs/plugins.md``.

Rules that every hook follows:

* no hook may do slow work at import time: import heavy libraries inside the function;
* ``register_*`` hooks return a list (or None) and are called once per process;
* errors meant for the user are raised as :class:`phototag.plugins.PluginError` (or a subclass),
  with a message that says what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import pluggy

if TYPE_CHECKING:  # pragma: no cover - types only
    from phototag.config import Settings
    from phototag.export.contract import Exporter
    from phototag.library import Library
    from phototag.tagging.base import Tagger, TagScore

PROJECT = "phototag"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_exporters(settings: "Settings") -> "Sequence[Exporter] | None":
    """Return exporters: objects that write a photo's tags somewhere outside phototag.

    Each item is an instance of a :class:`phototag.export.Exporter` subclass with a unique
    ``name`` (what the user types after ``phototag export --to``). ``settings`` is the merged
    configuration; an exporter reads its own table with ``settings.section("plugins.<name>")``.
    Construction must be cheap: open files or databases in :meth:`Exporter.open`.
    """


@hookspec
def register_taggers(settings: "Settings") -> "Sequence[Tagger] | None":
    """Return extra taggers (instances of :class:`phototag.tagging.base.Tagger`).

    Each tagger's ``name`` becomes a model name the user can pick (``phototag scan --model NAME``).
    A tagger must load its weights lazily, on the first ``predict()``, so that listing models
    stays fast. Tags it gives are stored with source ``plugin``.
    """


@hookspec
def register_query_fields() -> "Sequence[Any] | None":
    """Return extra fields for the search language (``field:value`` terms).

    Each item is a :class:`phototag.query.fields.FieldSpec`: a ``name`` (letters, digits, ``_``),
    a ``factory`` that turns a :class:`phototag.query.fields.FieldValue` into a query node (built
    with bound parameters only), and a ``help`` text. A name that is already taken (by a built-in
    field or another plugin) is an error.
    """


@hookspec
def adjust_tags(photo_path: str, tags: "list[TagScore]", model_id: str) -> None:
    """Edit the tags a model gave to one photo before they are stored.

    ``tags`` is a list of :class:`phototag.tagging.base.TagScore`; change it in place (remove,
    append or replace items). Implementations run one after another on the same list, so each sees
    the previous one's edits. ``photo_path`` is the absolute path of the photo and ``model_id`` the
    tagger's model id. Manual tags are never passed here and cannot be removed by this hook.
    """


@hookspec
def photos_tagged(library: "Library", photo_ids: "list[int]") -> None:
    """Called after a batch of photos was tagged and the batch's transaction committed.

    ``library`` is the open :class:`phototag.library.Library` (``library.db`` is the database,
    ``library.settings`` the settings), ``photo_ids`` the ids of the photos whose tags were stored
    in that batch. Called from the tagging thread of ``scan``, ``watch`` and ``retag`` (so slow work
    here slows tagging down), and after ``phototag tag add/remove`` changed a photo's tags by hand.
    phototag's built-in implementation (:mod:`phototag.export.auto`) exports the photos with the
    enabled exporters (``[export] auto = false`` turns that off). Callers use :func:`phototag.plugins.photos_tagged`,
    which runs each implementation on its own and logs an exception instead of undoing the batch.
    """
