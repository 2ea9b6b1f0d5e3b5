"""Loading the settings of a library home: defaults < ``<home>/config.toml`` < ``PHOTOTAG_*``
variables, each validated; and the settings of the current process (:func:`get_settings`)."""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import platformdirs

from phototag.config.errors import ConfigError
from phototag.config.schema import DEFAULTS, SETTINGS
from phototag.config.validate import checked_value, read_environment, validate
from phototag.config.write import set_in_config

CONFIG_NAME = "config.toml"


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
    def machine_cache_dir(self) -> Path:
        """Files derived only from installed packages and this machine (not from the library), shared by
        every library home of this user: e.g. the built-in model exported to ONNX once, not once per home."""
        return Path(platformdirs.user_cache_dir("phototag", appauthor=False))

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
    def set_value(self, dotted: str, value: Any) -> None:
        """Check ``value`` against the schema, write it into config.toml keeping every comment and
        the layout (atomically), and apply it here. ``None`` removes an optional setting from the
        file. A wrong value raises ConfigError and leaves the file untouched."""
        value = checked_value(dotted, value)
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
    env_values, env_errors, env_origin = read_environment(environ)
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
