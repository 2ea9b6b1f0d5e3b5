"""How a query term compares one value: string matchers (:class:`Fold`, :class:`Exact`,
:class:`Contains`, :class:`Regex`, :class:`Prefix`) and numeric ranges (:class:`NumberRange`).

Each has a Python face (``test``); the SQL face lives in :mod:`phototag.query.compile`. Nothing
here touches the database; the module only depends on the standard library.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from phototag.query.errors import QueryError


def fold(text: str) -> str:
    """Case-insensitive form of a string (the SQL face calls the same function)."""
    return text.casefold()


@functools.lru_cache(maxsize=256)
def compiled_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise QueryError(f"invalid regular expression {pattern!r}: {exc}") from None


# ---- string matchers ------------------------------------------------------------------------


class Matcher:
    """How a string value is compared (the SQL face lives in ``compile.matcher_clause``)."""

    def test(self, value: str | None) -> bool:
        raise NotImplementedError


@dataclass(frozen=True, repr=False)
class Fold(Matcher):
    """Whole value, case-insensitive (the default for tag, model)."""

    value: str

    def test(self, value: str | None) -> bool:
        return value is not None and fold(value) == fold(self.value)

    def __repr__(self) -> str:
        return f"Fold({self.value!r})"


@dataclass(frozen=True, repr=False)
class Exact(Matcher):
    """Whole value, case-sensitive (``field:=value``)."""

    value: str

    def test(self, value: str | None) -> bool:
        return value is not None and value == self.value

    def __repr__(self) -> str:
        return f"Exact({self.value!r})"


@dataclass(frozen=True, repr=False)
class Contains(Matcher):
    """Substring, case-insensitive (the default for camera, lens, path, caption)."""

    value: str

    def test(self, value: str | None) -> bool:
        return value is not None and fold(self.value) in fold(value)

    def __repr__(self) -> str:
        return f"Contains({self.value!r})"


@dataclass(frozen=True, repr=False)
class Regex(Matcher):
    """Python regular expression, searched anywhere in the value, case-sensitive (``field::re``)."""

    pattern: str

    def __post_init__(self) -> None:
        compiled_regex(self.pattern)  # fail at parse time, not inside SQLite

    def test(self, value: str | None) -> bool:
        return value is not None and compiled_regex(self.pattern).search(value) is not None

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


@dataclass(frozen=True, repr=False)
class Prefix(Matcher):
    """The path itself or anything below it (``path:/photos/2021``)."""

    value: str  # without trailing slash (except the root "/")

    @property
    def dir_prefix(self) -> str:
        return self.value if self.value.endswith("/") else self.value + "/"

    def test(self, value: str | None) -> bool:
        return value is not None and (value == self.value or value.startswith(self.dir_prefix))

    def __repr__(self) -> str:
        return f"Prefix({self.value!r})"


# ---- ranges ---------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class NumberRange:
    """Inclusive range; ``None`` is an open end."""

    low: float | None
    high: float | None

    def test(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.low is not None and value < self.low:
            return False
        if self.high is not None and value > self.high:
            return False
        return True

    def __repr__(self) -> str:
        if self.low is not None and self.low == self.high:
            return _num(self.low)
        return f"{_num(self.low)}..{_num(self.high)}"


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else repr(float(x))
