"""One declared setting: its key, type, default, doc and constraints; how a value is checked
against it and how text (an environment variable, ``phototag config set``) is read as its type."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from typing import Any


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
