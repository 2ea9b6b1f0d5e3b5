"""Settings: defaults < ``<home>/config.toml`` < ``PHOTOTAG_*`` environment variables.

The library home holds everything phototag owns: ``phototag.db``, the FAISS index, converted model
packs and ``config.toml``. It is ``--home`` / ``PHOTOTAG_HOME`` or, by default, the platform's user
data directory (``~/.local/share/phototag`` on Linux).

Every setting is declared exactly once, in :data:`SCHEMA`: its dotted key, type, default and a
one-line doc (``docs/configuration.md`` is checked against it). Both sources are validated when
they are loaded: a wrong value is a :class:`ConfigError` whose one line names the key, the value
and what is expected; an unknown key is refused with the nearest known one. Code that reads
``settings.get("batch_size")`` therefore always gets a value of the declared type.

Environment overrides use the dotted key with dots replaced by double underscores, upper-cased:
``PHOTOTAG_DEFAULT_MODEL=ram_plus``, ``PHOTOTAG_WATCH__STABLE_SECONDS=5``. Their text is read as
the setting's type (a list as ``["a", "b"]`` or ``a,b``; ``none`` unsets an optional setting).

``config.toml`` is written only through :meth:`Settings.set_value` / :func:`write_config_text`:
style-preserving (tomlkit keeps the user's comments and layout) and atomic (a uniquely named
temp file, fsync, rename).

A plugin's own table is ``[plugins.<name>]``. The bundled plugins' settings (``xmp``,
``digikam``) are declared here like every other setting; the table of a third-party plugin that
is installed is passed through as it is, for the plugin to check.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import platformdirs

from phototag.errors import PhototagError

CONFIG_NAME = "config.toml"

#: PHOTOTAG_* environment variables that are not settings (everything else must be one).
NON_SETTING_ENV = frozenset({
    "PHOTOTAG_HOME",  # the library home (--home)
    "PHOTOTAG_WEIGHTS",  # tests: where real RAM checkpoints are
    "PHOTOTAG_TEXT_MODEL",  # a local copy of the sentence model for ~"…" search
    "PHOTOTAG_UPDATE_GOLDEN",  # tests: rewrite golden files
    "PHOTOTAG_RAM_FILES_URL",  # models download: where the official tag lists come from (a mirror)
})

#: the entry-point group plugins register under (phototag.plugins.ENTRY_POINT_GROUP)
_PLUGIN_GROUP = "phototag"


class ConfigError(PhototagError):
    """A settings problem the user can fix: shown as one line, exit 2."""


# ---- the schema ----------------------------------------------------------------------------------

_NOT_SET = object()


@dataclass(frozen=True)
class Setting:
    """One setting: ``key`` (dotted), ``type`` (``str``, ``int``, ``float``, ``bool``, ``list[str]``
    or ``bool|list[str]``), ``default``, a one-line ``doc``, and optional constraints."""

    key: str
    type: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()  # allowed values (of each item, for a list)
    min: float | None = None
    max: float | None = None
    optional: bool = False  # may be unset (None): TOML has no null, so "unset" means "not in the file"
    pattern: str | None = None  # a regex each string (or list item) must match in full
    pattern_doc: str = ""  # what a valid string is, in words (for the error message)
    example: str = ""  # a valid value as written in config.toml (for the error message)

    @property
    def env_name(self) -> str:
        return "PHOTOTAG_" + self.key.replace(".", "__").upper()

    def expectation(self) -> str:
        """What a valid value looks like, in words (the end of every error message)."""
        bounds = ""
        if self.min is not None and self.max is not None:
            bounds = f" from {_num(self.min)} to {_num(self.max)}"
        elif self.min is not None:
            bounds = f" ≥ {_num(self.min)}"
        if self.type == "bool":
            text = "true or false"
        elif self.type == "int":
            text = "an integer" + bounds
        elif self.type == "float":
            text = "a number" + bounds
        elif self.type == "str":
            if self.choices:
                text = "one of " + ", ".join(f'"{c}"' for c in self.choices)
            else:
                text = self.pattern_doc or "a non-empty string"
        elif self.type == "list[str]":
            text = "a list of strings"
            if self.choices:
                text += " from " + ", ".join(f'"{c}"' for c in self.choices)
            if self.pattern_doc:
                text += f" ({self.pattern_doc})"
            text += f", e.g. {self.example or show_value(list(self.default)[:2])}"
        elif self.type == "bool|list[str]":
            text = 'true, false or a list of names, e.g. ["xmp"]'
        else:  # pragma: no cover - a schema mistake
            raise AssertionError(f"setting {self.key}: unknown type {self.type}")
        if self.optional:
            text += " (or leave it out: unset)"
        return text

    # -- checking -------------------------------------------------------------------------------
    def check(self, value: Any) -> Any:
        """``value`` as this setting's type (ints become floats for a float setting), or
        ValueError whose text is :meth:`expectation`."""
        if value is None and self.optional:
            return None
        ok, normalised = self._typed(value)
        if not ok:
            raise ValueError(self.expectation())
        return normalised

    def _typed(self, value: Any) -> tuple[bool, Any]:
        t = self.type
        if t == "bool":
            return isinstance(value, bool), value
        if t == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return False, None
            return self._in_range(value), value
        if t == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False, None
            return self._in_range(value), float(value)
        if t == "str":
            return self._good_string(value), value
        if t == "list[str]":
            if not isinstance(value, list) or not all(self._good_string(v) for v in value):
                return False, None
            return True, list(value)
        if t == "bool|list[str]":
            if isinstance(value, bool):
                return True, value
            if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
                return True, list(value)
            return False, None
        raise AssertionError(f"setting {self.key}: unknown type {t}")  # pragma: no cover

    def _in_range(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def _good_string(self, value: Any) -> bool:
        if not isinstance(value, str) or not value.strip():
            return False
        if self.choices and value not in self.choices:
            return False
        return self.pattern is None or re.fullmatch(self.pattern, value) is not None

    def parse(self, text: str) -> Any:
        """The value of an environment variable or of ``phototag config set KEY TEXT``, read as
        this setting's type (then checked). ValueError when it cannot be."""
        raw = text.strip()
        if self.optional and raw.lower() in ("", "none", "null", "unset"):
            return None
        t = self.type
        value: Any = text
        if t == "bool" or (t == "bool|list[str]" and not raw.startswith("[")):
            lowered = raw.lower()
            if lowered in ("true", "yes", "on", "1"):
                value = True
            elif lowered in ("false", "no", "off", "0"):
                value = False
            elif t == "bool|list[str]":
                value = [v.strip() for v in raw.split(",") if v.strip()]
        elif t == "int":
            try:
                value = int(raw)
            except ValueError:
                pass
        elif t == "float":
            try:
                value = float(raw)
            except ValueError:
                pass
        elif t in ("list[str]", "bool|list[str]"):
            if raw.startswith("["):
                try:
                    value = tomllib.loads(f"v = {raw}")["v"]
                except tomllib.TOMLDecodeError:
                    pass
            else:
                value = [v.strip() for v in raw.split(",") if v.strip()]
        return self.check(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_EXTENSIONS = [
    ".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp",
    ".heic", ".heif", ".avif",
    ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw",
]

#: Every setting phototag (and its bundled plugins) reads. docs/configuration.md mirrors this list.
SCHEMA: tuple[Setting, ...] = (
    Setting("default_model", "str", "builtin", "the model scan/watch/retag use: builtin or an installed pack's name"),
    Setting("device", "str", "auto", "where models run: auto (a GPU when there is one), cpu, cuda or cuda:N",
            pattern=r"auto|cpu|cuda(:\d+)?|mps", pattern_doc='one of "auto", "cpu", "cuda", "cuda:N", "mps"'),
    Setting("precision", "str", "auto", "number format of the tagging path (bf16 on CPUs that support it)",
            choices=("auto", "fp32", "bf16", "fp16")),
    Setting("batch_size", "int", 0, "photos per model call; 0 = the model's preference", min=0),
    Setting("decode_workers", "int", 0, "parallel photo decoders; 0 = the number of CPUs", min=0),
    Setting("threshold", "float", None, "one score threshold for every tag, instead of the model's per-tag ones",
            min=0, max=1, optional=True),
    Setting("scan.follow_symlinks", "bool", False,
            "follow symbolic links (only those that stay inside the folder being scanned)"),
    Setting("scan.extensions", "list[str]", _EXTENSIONS, "file name extensions that are photos",
            pattern=r"\.[^./\\]+", pattern_doc='each starting with "."'),
    Setting("scan.max_pixels", "int", 300_000_000, "photos larger than this are refused (decompression-bomb guard)",
            min=1),
    Setting("watch.roots", "list[str]", [], "folders `phototag watch` uses when none are given",
            example='["~/Pictures"]'),
    Setting("watch.stable_seconds", "float", 3.0, "a new file is tagged once its size and mtime were stable this long",
            min=0),
    Setting("watch.batch_timeout", "float", 1.0, "seconds a partial batch waits before it goes to the model", min=0),
    Setting("watch.reconcile_minutes", "float", 60.0,
            "minutes between full passes over the roots (catches missed events)",
            min=0),
    Setting("watch.polling", "bool", False, "poll instead of inotify (automatic on network filesystems)"),
    Setting("watch.poll_seconds", "float", 10.0, "seconds between two polls of a polled folder", min=0.1),
    Setting("watch.delete_seconds", "float", 1.0, "seconds a delete waits for a matching create (a move)", min=0),
    Setting("retag.every", "str", None, 're-tag photos whose tags are older than this ("30d", "12h", "2w")',
            optional=True),
    Setting("retag.window", "str", None, 'local-time window for background re-tags ("01:00-06:00")',
            optional=True),
    Setting("retag.check_seconds", "float", 60.0,
            "seconds between two checks of `watch` for photos due a re-tag (0 = never)", min=0),
    Setting("retag.batch_limit", "int", 1000, "most photos one background re-tag check queues", min=1),
    Setting("export.auto", "bool|list[str]", True,
            "exporters run after tagging: true = every enabled one, false = none, or a list of names"),
    Setting("export.min_score", "float", 0.0,
            "a model's tag scored below this is kept in the library but not written to sidecars/apps; "
            "your own tags always are", min=0, max=1),
    Setting("plugins.enabled", "list[str]", [], "plugins that are active (names as `phototag plugins` shows them)",
            example='["xmp"]'),
    Setting("plugins.xmp.root", "str", "phototag", "the keyword phototag's tags are written under",
            pattern=r"[^/|]*[^/|\s][^/|]*", pattern_doc="one keyword without / or |"),
    Setting("plugins.xmp.sidecar", "bool", True, "write XMP sidecars"),
    Setting("plugins.xmp.sidecar_style", "str", "name.ext.xmp",
            "name of new sidecars: photo.jpg.xmp (name.ext.xmp) or photo.xmp (name.xmp)",
            choices=("name.ext.xmp", "name.xmp")),
    Setting("plugins.xmp.write_image", "bool", False, "also write the keywords into JPEG, PNG, TIFF and WebP files"),
    Setting("plugins.xmp.languages", "list[str]", ["en"], "tag names to write: English and/or Chinese",
            choices=("en", "zh")),
    Setting("plugins.digikam.database", "str", None, "digikam4.db, or the folder that holds it (database mode)",
            optional=True),
    Setting("plugins.digikam.root", "str", "phototag", "the top-level digiKam tag phototag's tags go under"),
    Setting("plugins.digikam.languages", "list[str]", ["en"], "tag names to write: English and/or Chinese",
            choices=("en", "zh")),
    Setting("plugins.digikam.keep_backups", "int", 5,
            "backups of the digiKam database to keep (older ones are deleted)",
            min=1),
)

SETTINGS: dict[str, Setting] = {s.key: s for s in SCHEMA}
#: tables (``[scan]``, ``[plugins.xmp]``, …): every proper prefix of a declared key
TABLES: frozenset[str] = frozenset(
    ".".join(s.key.split(".")[:i]) for s in SCHEMA for i in range(1, len(s.key.split(".")))
)


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return out


#: The defaults as a nested dict (tables included), built from :data:`SCHEMA`.
DEFAULTS: dict[str, Any] = _nested({s.key: s.default for s in SCHEMA})


def setting(key: str) -> Setting:
    """The declared setting ``key``; ConfigError (with the nearest known key) when there is none."""
    try:
        return SETTINGS[key]
    except KeyError:
        raise ConfigError(f"unknown setting {key!r}{_suggest(key)}") from None


def nearest_key(key: str) -> str | None:
    """The declared setting or table whose name is closest to ``key`` (None when none is close)."""
    near = difflib.get_close_matches(key, [*SETTINGS, *TABLES], n=1, cutoff=0.6)
    if not near:  # a bare name whose table was forgotten: "stable_seconds" → "watch.stable_seconds"
        near = [k for k in SETTINGS if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:1]
    return near[0] if near else None


def _suggest(key: str) -> str:
    near = nearest_key(key)
    return f" (did you mean {near!r}?)" if near else ""


def show_value(value: Any) -> str:
    """A value as it is written in config.toml (strings quoted), for messages."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict,)):
        return "{" + ", ".join(f"{k} = {show_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---- validating a source ------------------------------------------------------------------------


def _installed_plugin(name: str) -> bool:
    from importlib import metadata

    return any(ep.name == name for ep in metadata.entry_points(group=_PLUGIN_GROUP))


def validate(tree: Mapping[str, Any], where: str, prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """Check a (nested) settings table read from ``where``. Returns the values (typed, unknown and
    wrong ones left out) and one error line per problem."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    for key, value in tree.items():
        dotted = prefix + str(key)
        spec = SETTINGS.get(dotted)
        if spec is not None:
            try:
                values[key] = spec.check(value)
            except ValueError as exc:
                errors.append(f"{where}: {dotted} = {show_value(value)}: expected {exc}")
        elif dotted in TABLES:
            if isinstance(value, dict):
                sub, sub_errors = validate(value, where, dotted + ".")
                values[key] = sub
                errors += sub_errors
            else:
                members = ", ".join(k[len(dotted) + 1:] for k in SETTINGS
                                    if k.startswith(dotted + ".") and "." not in k[len(dotted) + 1:])
                errors.append(f"{where}: {dotted} = {show_value(value)}: expected a table "
                              f"([{dotted}] with {members})")
        elif prefix == "plugins." and isinstance(value, dict) and _installed_plugin(str(key)):
            values[key] = copy.deepcopy(value)  # a third-party plugin's own table: the plugin checks it
        elif prefix == "plugins." and isinstance(value, dict):
            errors.append(f"{where}: [{dotted}]: no installed plugin is called {str(key)!r}{_suggest(dotted)}")
        else:
            errors.append(f"{where}: unknown setting {dotted!r}{_suggest(dotted)}")
    return values, errors


def _env_tree(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """The settings given as PHOTOTAG_* variables: (values, errors, {dotted key: variable})."""
    flat: dict[str, Any] = {}
    errors: list[str] = []
    origin: dict[str, str] = {}
    for name in sorted(environ):
        if not name.startswith("PHOTOTAG_") or name in NON_SETTING_ENV:
            continue
        raw = environ[name]
        dotted = name[len("PHOTOTAG_"):].lower().replace("__", ".")
        spec = SETTINGS.get(dotted)
        if spec is None:
            near = nearest_key(dotted)
            hint = f" (did you mean {SETTINGS[near].env_name}?)" if near in SETTINGS else ""
            errors.append(f"environment: {name} is not a setting{hint}")
            continue
        try:
            flat[dotted] = spec.parse(raw)
            origin[dotted] = name
        except ValueError as exc:
            errors.append(f"environment: {name}={raw!r}: {dotted} expects {exc}")
    return _nested(flat), errors, origin


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _flat_keys(tree: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for key, value in tree.items():
        dotted = prefix + str(key)
        if isinstance(value, dict) and dotted not in SETTINGS:
            yield from _flat_keys(value, dotted + ".")
        else:
            yield dotted


def check_config_text(text: str, where: str) -> dict[str, Any]:
    """Parse and validate the text of a config.toml; ConfigError with every problem, one per line."""
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    values, errors = validate(tree, where)
    if errors:
        raise ConfigError("\n".join(errors))
    return values


# ---- settings -----------------------------------------------------------------------------------


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("phototag", appauthor=False))


def resolve_home(home: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The library home: ``home``, else PHOTOTAG_HOME, else the platform's data dir (absolute)."""
    environ = os.environ if environ is None else environ
    if home is None:
        home = environ.get("PHOTOTAG_HOME") or default_home()
    return Path(home).expanduser().resolve()


@dataclass
class Settings:
    """The merged settings of one library home."""

    home: Path
    data: dict[str, Any] = field(default_factory=dict)
    #: where each setting that is not a default came from: "config.toml" or the variable's name
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.home / "phototag.db"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_NAME

    @property
    def default_model(self) -> str:
        return str(self.data.get("default_model") or "builtin")

    @property
    def plugins_enabled(self) -> list[str]:
        return list(self.data.get("plugins", {}).get("enabled", []))

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def section(self, name: str) -> dict[str, Any]:
        """A settings table such as ``watch`` or ``plugins.xmp`` (empty dict when absent)."""
        value = self.get(name, {})
        return dict(value) if isinstance(value, dict) else {}

    def source(self, dotted: str) -> str:
        """Where the value of ``dotted`` comes from: ``default``, ``config.toml`` or PHOTOTAG_…"""
        return self.sources.get(dotted, "default")

    # -- persisting ---------------------------------------------------------------------------
    def _read_file(self) -> dict:
        if not self.config_path.exists():
            return {}
        return tomllib.loads(self.config_path.read_text(encoding="utf-8"))

    def set_value(self, dotted: str, value: Any) -> None:
        """Check ``value`` against the schema, write it into config.toml keeping every comment and
        the layout (atomically), and apply it here. ``None`` removes an optional setting from the
        file. A wrong value raises ConfigError and leaves the file untouched."""
        value = _checked(dotted, value)
        set_in_config(self.config_path, dotted, value)
        node = self.data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None and dotted not in SETTINGS:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
        self.sources[dotted] = CONFIG_NAME

    def set_default_model(self, name: str) -> None:
        self.set_value("default_model", name)


def is_third_party_key(dotted: str) -> bool:
    """``plugins.<name>.<key>`` of an installed plugin whose settings are not declared here (the
    plugin checks them itself)."""
    parts = dotted.split(".")
    return (len(parts) >= 3 and parts[0] == "plugins" and ".".join(parts[:2]) not in TABLES
            and _installed_plugin(parts[1]))


def _checked(dotted: str, value: Any) -> Any:
    spec = SETTINGS.get(dotted)
    if spec is None:
        if is_third_party_key(dotted):
            return value
        raise ConfigError(f"unknown setting {dotted!r}{_suggest(dotted)}")
    try:
        return spec.check(value)
    except ValueError as exc:
        raise ConfigError(f"{dotted} = {show_value(value)}: expected {exc}") from None


def parse_value(dotted: str, text: str) -> Any:
    """``text`` (as typed on a command line) read as the type of setting ``dotted``; ConfigError
    naming the key, the value and what is expected."""
    spec = setting(dotted)
    try:
        return spec.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{dotted} = {text!r}: expected {exc}") from None


# ---- writing config.toml ----------------------------------------------------------------------


def write_config_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a uniquely named temp file beside it, fsync,
    rename, fsync of the folder. The file's permissions are kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def _assign(container: Any, key: str, value: Any) -> None:
    """Set ``container[key]`` keeping what tomlkit can keep: an existing array is edited in place
    (so comments on its items survive) when that gives the new list in order."""
    import tomlkit.items

    current = container.get(key) if key in container else None
    if isinstance(current, tomlkit.items.Array) and isinstance(value, list):
        kept = [v for v in current if v in value]
        if kept == [v for v in value if v in kept]:
            for index in reversed(range(len(current))):
                if current[index] not in value:
                    del current[index]
            for v in value:
                if v not in current:
                    current.append(v)
            if list(current) == value:
                return
    container[key] = value


def set_in_config(path: Path, dotted: str, value: Any) -> None:
    """Write one setting into the config.toml at ``path`` (``None`` removes it), keeping the
    user's comments and layout. The whole result is checked before it replaces the file."""
    import tomlkit

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    *parents, last = dotted.split(".")
    node: Any = doc
    for depth, part in enumerate(parents):
        if part not in node:
            if value is None:
                return  # nothing to remove
            # an intermediate table ([plugins] for plugins.xmp.root) gets no header of its own
            node[part] = tomlkit.table(is_super_table=depth + 1 < len(parents))
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {'.'.join(parents[: depth + 1])} is not a table; fix it with "
                              "`phototag config edit`")
    if value is None:
        if last in node:
            del node[last]
    else:
        _assign(node, last, value)
    new_text = tomlkit.dumps(doc)
    try:
        tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - tomlkit wrote something unreadable
        raise ConfigError(f"{path}: cannot write {dotted} = {show_value(value)}: {exc}") from None
    write_config_text(path, new_text)


def dump_toml(data: Mapping[str, Any]) -> str:
    """A nested dict as TOML text (for writing a fresh config.toml; None values are left out)."""
    import tomlkit

    def clean(tree: Mapping[str, Any]) -> dict:
        return {k: clean(v) if isinstance(v, Mapping) else v for k, v in tree.items() if v is not None}

    return tomlkit.dumps(clean(data))


# ---- loading ------------------------------------------------------------------------------------


def load_settings(home: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``home`` (default: PHOTOTAG_HOME or the platform's data dir): defaults, then
    config.toml, then PHOTOTAG_* variables, each validated. ConfigError lists every problem."""
    environ = dict(os.environ if environ is None else environ)
    settings = Settings(home=resolve_home(home, environ), data=copy.deepcopy(DEFAULTS))
    errors: list[str] = []
    file_values: dict[str, Any] = {}
    if settings.config_path.exists():
        try:
            text = settings.config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{settings.config_path}: cannot read it: {exc}") from None
        try:
            tree = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{settings.config_path}: not valid TOML: {exc}") from None
        file_values, errors = validate(tree, str(settings.config_path))
    env_values, env_errors, env_origin = _env_tree(environ)
    errors += env_errors
    if errors:
        raise ConfigError("\n".join(errors))
    settings.data = _deep_merge(_deep_merge(settings.data, file_values), env_values)
    settings.sources = {**{k: CONFIG_NAME for k in _flat_keys(file_values)}, **env_origin}
    return settings


_current: Settings | None = None


def get_settings() -> Settings:
    """The settings of the current process (built once; the CLI sets it from ``--home``)."""
    global _current
    if _current is None:
        _current = load_settings()
    return _current


def use_settings(settings: Settings | None) -> None:
    """Make ``settings`` the process-wide settings (the CLI's ``--home`` and tests use this)."""
    global _current
    _current = settings
