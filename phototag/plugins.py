"""The plugin manager: lazy, idempotent loading and typed facades over the hooks.

Nothing is imported or loaded until something asks for a hook: :func:`load_plugins` runs on first
use, registers phototag's built-in hook implementations, then every plugin of the entry-point group
``phototag`` whose name is listed in ``[plugins] enabled``. Calling it again does nothing new
unless more plugins were enabled in the meantime.

Callers use the facades (:func:`exporters`, :func:`taggers`, :func:`query_fields`,
:func:`adjust_tags`, :func:`photos_tagged`) rather than ``pm.hook`` directly.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import pluggy

from phototag import __version__, hookspecs
from phototag.errors import PhototagError
from phototag.export.contract import Exporter

if TYPE_CHECKING:  # pragma: no cover
    import importlib.metadata as metadata

    from phototag.config import Settings
    from phototag.library import Library
    from phototag.tagging.base import Tagger, TagScore

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "phototag"

#: phototag's own hook implementations that are always active (like datasette's DEFAULT_PLUGINS).
BUILTIN_PLUGINS: tuple[str, ...] = ("phototag.export.auto",)


class PluginError(PhototagError):
    """A plugin could not be loaded or did something wrong; the message says which and why."""


@dataclass
class PluginInfo:
    """A row of ``phototag plugins``."""

    name: str
    version: str
    hooks: list[str]
    enabled: bool
    kind: str  # "builtin" | "entry point" | "registered"
    module: str = ""
    distribution: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "hooks": self.hooks,
            "enabled": self.enabled,
            "kind": self.kind,
            "module": self.module,
            "distribution": self.distribution,
            "error": self.error,
        }


@dataclass
class _State:
    pm: pluggy.PluginManager
    loaded_builtins: bool = False
    entry_point_names: set[str] = field(default_factory=set)  # registered from entry points
    failed: dict[str, str] = field(default_factory=dict)  # enabled name -> why it did not load
    query_fields_installed: bool = False


_lock = threading.RLock()
_state: _State | None = None


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _get_state() -> _State:
    global _state
    if _state is None:
        _state = _State(pm=_new_manager())
    return _state


def _settings(settings: "Settings | None") -> "Settings":
    if settings is not None:
        return settings
    from phototag.config import get_settings

    return get_settings()


def entry_points() -> list[metadata.EntryPoint]:
    """Every installed entry point of the ``phototag`` group, enabled or not (sorted by name)."""
    import importlib.metadata as metadata  # only when a plugin is looked for: a search with none enabled skips it

    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    unique: dict[str, metadata.EntryPoint] = {}
    for ep in eps:
        unique.setdefault(ep.name, ep)
    return [unique[name] for name in sorted(unique)]


def load_plugins(settings: "Settings | None" = None) -> pluggy.PluginManager:
    """Register built-in hooks and the enabled plugins; cheap and safe to call many times.

    An enabled plugin that is not installed or fails to import is logged and reported by
    :func:`list_plugins` instead of breaking every command."""
    with _lock:
        state = _get_state()
        pm = state.pm
        if not state.loaded_builtins:
            for dotted in BUILTIN_PLUGINS:
                pm.register(importlib.import_module(dotted), name=dotted)
            state.loaded_builtins = True
        enabled = _settings(settings).plugins_enabled
        wanted = [name for name in enabled if name not in state.entry_point_names]
        if not wanted:
            return pm
        available = {ep.name: ep for ep in entry_points()}
        for name in wanted:
            ep = available.get(name)
            if ep is None:
                if name not in state.failed:
                    state.failed[name] = "enabled in config.toml but not installed"
                    log.warning("plugin %r is enabled but no installed package provides it", name)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # an import error in someone else's package
                state.failed[name] = f"cannot import {ep.value}: {exc}"
                log.warning("plugin %r could not be imported: %s", name, exc)
                continue
            if pm.is_registered(plugin):
                state.entry_point_names.add(name)
                continue
            try:
                pm.register(plugin, name=name)
            except (ValueError, pluggy.PluginValidationError) as exc:
                state.failed[name] = f"invalid plugin: {exc}"
                log.warning("plugin %r is invalid: %s", name, exc)
                continue
            state.failed.pop(name, None)
            state.entry_point_names.add(name)
        return pm


def register_plugin(plugin: object, name: str) -> None:
    """Register a plugin object directly (tests, embedding applications)."""
    with _lock:
        load_plugins()
        _get_state().pm.register(plugin, name=name)


def unregister_plugin(name: str) -> None:
    with _lock:
        state = _get_state()
        plugin = state.pm.get_plugin(name)
        if plugin is not None:
            state.pm.unregister(plugin, name=name)
        state.entry_point_names.discard(name)


def reset_plugins() -> None:
    """Forget every registered plugin; the next use loads them again (tests use this)."""
    global _state
    with _lock:
        _state = None


def plugin_manager(settings: "Settings | None" = None) -> pluggy.PluginManager:
    """The loaded plugin manager (prefer the facades below to ``pm.hook``)."""
    return load_plugins(settings)


get_plugin_manager = plugin_manager


# ---- listing -----------------------------------------------------------------------------------


def _hook_names(plugin: object) -> list[str]:
    """Names of the hooks a plugin object implements, found without registering it."""
    marker_attr = f"{hookspecs.PROJECT}_impl"
    names = []
    for attr in dir(plugin):
        try:
            value = getattr(plugin, attr)
        except Exception:  # pragma: no cover - properties that raise
            continue
        if callable(value) and hasattr(value, marker_attr):
            names.append(attr)
    return sorted(names)


def _dist_version(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", ""
    return dist.version or "", dist.metadata["Name"] or ""


def list_plugins(settings: "Settings | None" = None) -> list[PluginInfo]:
    """Built-in hook modules, every installed ``phototag`` plugin (enabled or not), and any
    enabled name that is missing."""
    settings = _settings(settings)
    pm = load_plugins(settings)
    state = _get_state()
    enabled = set(settings.plugins_enabled)
    rows: list[PluginInfo] = []
    for dotted in BUILTIN_PLUGINS:
        module = importlib.import_module(dotted)
        rows.append(PluginInfo(dotted, __version__, _hook_names(module), True, "builtin", dotted, "phototag"))
    seen: set[str] = set(BUILTIN_PLUGINS)
    for ep in entry_points():
        seen.add(ep.name)
        version, dist = _dist_version(ep)
        error = state.failed.get(ep.name)
        hooks: list[str] = []
        plugin = pm.get_plugin(ep.name)
        if plugin is None and error is None:
            try:  # importing is cheap by contract: plugins do no work at import time
                plugin = ep.load()
            except Exception as exc:
                error = f"cannot import {ep.value}: {exc}"
        if plugin is not None:
            hooks = _hook_names(plugin)
        rows.append(
            PluginInfo(ep.name, version, hooks, ep.name in enabled and error is None, "entry point",
                       ep.value, dist, error)
        )
    for name in sorted(enabled - seen):
        rows.append(PluginInfo(name, "", [], False, "entry point", "", "", state.failed.get(name)
                               or "enabled in config.toml but not installed"))
    for name, plugin in pm.list_name_plugin():
        if name in seen or name is None:
            continue
        rows.append(PluginInfo(name, "", _hook_names(plugin), True, "registered",
                               getattr(plugin, "__name__", type(plugin).__name__)))
    return rows


# ---- typed facades -----------------------------------------------------------------------------


def _flatten(results: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for result in results:
        if result:
            out.extend(result)
    return out


def exporters(settings: "Settings | None" = None) -> dict[str, Exporter]:
    """name → exporter, from every active plugin. Duplicate names are an error."""
    settings = _settings(settings)
    pm = load_plugins(settings)
    found: dict[str, Exporter] = {}
    for exporter in _flatten(pm.hook.register_exporters(settings=settings)):
        if not isinstance(exporter, Exporter):
            raise PluginError(f"register_exporters returned {exporter!r}, not a phototag.export.Exporter")
        if exporter.name in found:
            raise PluginError(f"two plugins provide an exporter named {exporter.name!r}")
        found[exporter.name] = exporter
    return found


def installed_exporters(settings: "Settings | None" = None,
                        wanted: Iterable[str] | None = None) -> tuple[dict[str, Exporter], dict[str, str]]:
    """name → exporter from every *installed* plugin, enabled or not, and name → why an installed
    plugin could not provide exporters.

    Naming an exporter on the command line (``phototag export --to xmp``) is the user's consent to
    run it, so ``--to`` looks here; ``[plugins] enabled`` only decides what runs on its own (after
    tagging). A plugin that is not enabled is asked for its exporters through a manager of its
    own: its other hooks (``adjust_tags``, ``photos_tagged``) never run. With ``wanted``, plugins
    are imported only until every wanted name is found (the entry point of the same name first),
    so naming one exporter does not import every installed plugin."""
    settings = _settings(settings)
    found = exporters(settings)
    problems: dict[str, str] = {}
    wanted_set = set(wanted) if wanted is not None else None
    if wanted_set is not None and wanted_set <= set(found):
        return found, problems
    with _lock:
        state = _get_state()
        active = set(state.entry_point_names) | set(state.failed)
    candidates = [ep for ep in entry_points() if ep.name not in active]
    if wanted_set is not None:  # the plugin named like the exporter is the likely provider
        candidates.sort(key=lambda ep: ep.name not in wanted_set)
    for ep in candidates:
        if wanted_set is not None and wanted_set <= set(found):
            break
        try:
            plugin = ep.load()
        except Exception as exc:  # someone else's package: report it, keep going
            problems[ep.name] = f"cannot import {ep.value}: {exc}"
            continue
        pm = _new_manager()
        try:
            pm.register(plugin, name=ep.name)
            provided = _flatten(pm.hook.register_exporters(settings=settings))
        except (ValueError, pluggy.PluginValidationError) as exc:
            problems[ep.name] = f"invalid plugin: {exc}"
            continue
        except Exception as exc:  # e.g. an ExportError about the plugin's own settings
            if wanted_set is not None and ep.name in wanted_set:
                raise
            problems[ep.name] = str(exc)
            continue
        for exporter in provided:
            if not isinstance(exporter, Exporter):
                problems[ep.name] = f"register_exporters returned {exporter!r}, not a phototag.export.Exporter"
            elif exporter.name in found:  # an enabled plugin's exporter of that name wins
                problems[ep.name] = f"its exporter {exporter.name!r} is also provided by another plugin"
            else:
                found[exporter.name] = exporter
    return found, problems


def taggers(settings: "Settings | None" = None) -> "list[Tagger]":
    """Extra taggers from active plugins."""
    from phototag.tagging.base import Tagger

    settings = _settings(settings)
    pm = load_plugins(settings)
    result = _flatten(pm.hook.register_taggers(settings=settings))
    for tagger in result:
        if not isinstance(tagger, Tagger):
            raise PluginError(f"register_taggers returned {tagger!r}, not a phototag Tagger")
    names = [t.name for t in result]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PluginError(f"two plugins provide taggers named {', '.join(duplicates)}")
    return result


def query_fields(settings: "Settings | None" = None) -> list[Any]:
    """Extra search fields from active plugins."""
    pm = load_plugins(settings)
    fields = _flatten(pm.hook.register_query_fields())
    names = [getattr(f, "name", None) for f in fields]
    duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
    if duplicates:
        raise PluginError(f"two plugins provide query fields named {', '.join(duplicates)}")
    return fields


def install_query_fields(settings: "Settings | None" = None) -> None:
    """Register the active plugins' query fields with the query language (once per process)."""
    from phototag.query import register_field

    state = _get_state()
    if getattr(state, "query_fields_installed", False):
        return
    for spec in query_fields(settings):
        register_field(spec)
    state.query_fields_installed = True


def adjust_tags(photo_path: str, tags: "list[TagScore]", model_id: str,
                settings: "Settings | None" = None) -> "list[TagScore]":
    """Run every ``adjust_tags`` implementation on a copy of ``tags``; return the edited list."""
    pm = load_plugins(settings)
    edited = list(tags)
    pm.hook.adjust_tags(photo_path=str(photo_path), tags=edited, model_id=model_id)
    return edited


def photos_tagged(library: "Library", photo_ids: list[int]) -> list[str]:
    """Tell plugins that ``photo_ids`` were tagged and committed (call after each batch).

    Each implementation runs on its own: one that raises is logged and the others still run.
    Returns the error messages (empty when all went well)."""
    pm = load_plugins(library.settings)
    errors: list[str] = []
    for impl in reversed(pm.hook.photos_tagged.get_hookimpls()):  # pluggy's call order: LIFO
        kwargs = {"library": library, "photo_ids": list(photo_ids)}
        try:
            impl.function(*[kwargs[arg] for arg in impl.argnames])
        except Exception as exc:
            message = f"{impl.plugin_name}: {exc}"
            log.error("photos_tagged hook failed: %s", message, exc_info=True)
            errors.append(message)
    return errors
