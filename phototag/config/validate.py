"""Checking a settings source (a config.toml's table, PHOTOTAG_* variables, one value given on the
command line) against the schema: typed values, and one error line per problem naming the key, the
value and what is expected (with the nearest known key for a misspelt one)."""

from __future__ import annotations

import copy
import tomllib
from typing import Any, Mapping

from phototag.config.errors import ConfigError
from phototag.config.schema import SETTINGS, TABLES, did_you_mean, nearest_key, nested, setting
from phototag.config.spec import show_value

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
            errors.append(f"{where}: [{dotted}]: no installed plugin is called {str(key)!r}{did_you_mean(dotted)}")
        else:
            errors.append(f"{where}: unknown setting {dotted!r}{did_you_mean(dotted)}")
    return values, errors


def read_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str], dict[str, str]]:
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
    return nested(flat), errors, origin


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


def is_third_party_key(dotted: str) -> bool:
    """``plugins.<name>.<key>`` of an installed plugin whose settings are not declared here (the
    plugin checks them itself)."""
    parts = dotted.split(".")
    return (len(parts) >= 3 and parts[0] == "plugins" and ".".join(parts[:2]) not in TABLES
            and _installed_plugin(parts[1]))


def checked_value(dotted: str, value: Any) -> Any:
    """``value`` as the type of setting ``dotted`` (a third-party plugin's key passes as it is);
    ConfigError naming the key, the value and what is expected."""
    spec = SETTINGS.get(dotted)
    if spec is None:
        if is_third_party_key(dotted):
            return value
        raise ConfigError(f"unknown setting {dotted!r}{did_you_mean(dotted)}")
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
