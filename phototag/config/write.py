"""Writing config.toml: one setting at a time keeping the user's comments and layout (tomlkit,
imported only when something is written), or a whole checked text; always atomically through
:mod:`phototag.atomic`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Mapping

from phototag.config.errors import ConfigError
from phototag.config.spec import show_value


def write_config_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (:func:`phototag.atomic.write_text`: a uniquely named
    temp file beside it, fsync, rename, fsync of the folder). The file's permissions are kept; a new
    config.toml is readable by its owner only (0600)."""
    from phototag.atomic import write_text  # not at start-up: only a command that writes needs it

    write_text(path, text, mode=None if path.exists() else 0o600)


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
