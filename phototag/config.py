"""Settings: defaults < ``<home>/config.toml`` < ``PHOTOTAG_*`` environment variables.

The library home holds everything phototag owns: ``phototag.db``, the FAISS index, converted model
packs and ``config.toml``. It is ``--home`` / ``PHOTOTAG_HOME`` or, by default, the platform's user
data directory (``~/.local/share/phototag`` on Linux).

Environment overrides use the dotted key with dots replaced by double underscores, upper-cased:
``PHOTOTAG_DEFAULT_MODEL=ram_plus``, ``PHOTOTAG_WATCH__STABLE_SECONDS=5``.
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

CONFIG_NAME = "config.toml"

DEFAULTS: dict[str, Any] = {
    "default_model": "builtin",
    "device": "auto",  # auto | cpu | cuda
    "precision": "auto",  # auto | fp32 | bf16 | fp16
    "batch_size": 0,  # 0 = the model's preference
    "decode_workers": 0,  # 0 = number of CPUs
    "threshold": None,  # global override of per-class thresholds (RAM); None = model's own
    "scan": {
        "follow_symlinks": False,  # links are followed only when they stay inside the scanned root
        "extensions": [
            ".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp",
            ".heic", ".heif", ".avif",
            ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw",
        ],
        "max_pixels": 300_000_000,  # decompression-bomb guard
    },
    "watch": {
        "roots": [],  # folders `phototag watch` uses when none are given
        "stable_seconds": 3.0,  # a file is tagged once its size/mtime were stable this long
        "batch_timeout": 1.0,  # a partial batch goes to the model after this many seconds
        "reconcile_minutes": 60,  # full pass over the roots to catch missed events
        "polling": False,  # poll instead of inotify (automatic on network filesystems)
        "poll_seconds": 10,
        "delete_seconds": 1,  # a delete waits this long for a matching create (a move)
    },
    "retag": {
        "every": None,  # re-tag photos whose tags are older than this ("30d"); None = only on model change
        "window": None,  # local-time window for background re-tags ("01:00-06:00"); None = any time
        "check_seconds": 60,  # how often `watch` looks for photos due a re-tag
    },
    "plugins": {"enabled": []},
}


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("phototag", appauthor=False))


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _env_overrides(environ: dict[str, str]) -> dict:
    result: dict = {}
    for name, raw in environ.items():
        if not name.startswith("PHOTOTAG_") or name == "PHOTOTAG_HOME" or name == "PHOTOTAG_WEIGHTS":
            continue
        path = name[len("PHOTOTAG_"):].lower().split("__")
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw)
    return result


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    """The merged settings of one library home."""

    home: Path
    data: dict[str, Any] = field(default_factory=dict)

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

    # -- persisting ---------------------------------------------------------------------------
    def _read_file(self) -> dict:
        if not self.config_path.exists():
            return {}
        return tomllib.loads(self.config_path.read_text(encoding="utf-8"))

    def set_value(self, dotted: str, value: Any) -> None:
        """Persist one setting into config.toml (atomic rewrite) and apply it here."""
        file_data = self._read_file()
        node = file_data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".toml.tmp")
        tmp.write_text(dump_toml(file_data), encoding="utf-8")
        os.replace(tmp, self.config_path)
        node = self.data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def set_default_model(self, name: str) -> None:
        self.set_value("default_model", name)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to config.toml")


def dump_toml(data: dict, prefix: str = "") -> str:
    """Write a nested dict as TOML (the subset phototag's settings use)."""
    lines: list[str] = []
    tables: list[tuple[str, dict]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        out += f"\n[{name}]\n" + dump_toml(table, prefix=f"{name}.")
    return out


def load_settings(home: Path | str | None = None, environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    if home is None:
        home = environ.get("PHOTOTAG_HOME") or default_home()
    home = Path(home).expanduser().resolve()
    settings = Settings(home=home, data=copy.deepcopy(DEFAULTS))
    try:
        file_data = settings._read_file()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{settings.config_path}: {exc}") from exc
    settings.data = _deep_merge(_deep_merge(settings.data, file_data), _env_overrides(environ))
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
