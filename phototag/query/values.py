"""Parsing of field values: numbers and ranges, dates, periods, relative dates, booleans.

Pure functions: the current time is always passed in, so a parse is reproducible.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from phototag.query.errors import QueryError
from phototag.query.matchers import NumberRange

_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_RANGE_RE = re.compile(rf"^(?P<low>{_NUMBER})?(?P<dots>\.\.)?(?P<high>{_NUMBER})?$")


def parse_number_range(text: str, *, field: str, integer: bool = True) -> NumberRange:
    """``100`` (exactly), ``100..800`` (inclusive), ``100..``, ``..800``."""
    m = _RANGE_RE.match(text.strip())
    if not text or m is None or (m["low"] is None and m["high"] is None):
        kind = "a whole number" if integer else "a number"
        raise QueryError(f"{field}: expects {kind} or a range like 100..800, got {text!r}")
    conv = int if integer else float
    try:
        low = conv(m["low"]) if m["low"] is not None else None
        high = conv(m["high"]) if m["high"] is not None else None
    except ValueError:
        raise QueryError(f"{field}: expects a whole number, got {text!r}") from None
    if m["dots"] is None:
        high = low if m["low"] is not None else high
        low = low if m["low"] is not None else high
    if low is not None and high is not None and low > high:
        raise QueryError(f"{field}: empty range {text!r} (the low end is above the high end)")
    return NumberRange(low, high)


def looks_like_range(text: str) -> bool:
    m = _RANGE_RE.match(text)
    return bool(text) and m is not None and (m["low"] is not None or m["high"] is not None)


# ---- dates ----------------------------------------------------------------------------------

_ABS_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{1,2})(?:-(?P<d>\d{1,2})"
    r"(?:[T ](?P<H>\d{1,2})(?::(?P<M>\d{2})(?::(?P<S>\d{2}))?)?)?)?)?$"
)
_REL_RE = re.compile(r"^(?P<sign>[+-])(?P<n>\d+)(?P<unit>[dwmy])$")
#: beets' convention: a month is 30 days, a year 365
_UNIT_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


@dataclass(frozen=True)
class Period:
    """A span of time ``[start, end)``; a relative date is an instant (``start == end``)."""

    start: dt.datetime
    end: dt.datetime
    relative: bool = False


def parse_period(text: str, now: dt.datetime, *, field: str) -> Period:
    """One date: absolute (to any precision, ``2021`` … ``2021-06-15T10:30:00``), relative
    (``-3d``, ``+1w``; units d w m y) or ``today`` / ``yesterday``. ``now`` is naive local time."""
    text = text.strip()
    if text in ("today", "yesterday"):
        day = dt.datetime.combine(now.date(), dt.time())
        if text == "yesterday":
            day -= dt.timedelta(days=1)
        return Period(day, day + dt.timedelta(days=1))
    m = _REL_RE.match(text)
    if m:
        days = int(m["n"]) * _UNIT_DAYS[m["unit"]]
        try:
            instant = now + dt.timedelta(days=days if m["sign"] == "+" else -days)
        except OverflowError:
            raise QueryError(f"{field}: {text!r} is too far away") from None
        return Period(instant, instant, relative=True)
    m = _ABS_RE.match(text)
    if not m:
        raise QueryError(
            f"{field}: cannot read the date {text!r} (use 2021, 2021-06, 2021-06-15, "
            f"2021-06-15T10:30, a relative date like -2w, or today)"
        )
    parts = [int(m[k]) if m[k] is not None else None for k in ("y", "m", "d", "H", "M", "S")]
    y, mo, d, hh, mi, ss = parts
    try:
        start = dt.datetime(y, mo or 1, d or 1, hh or 0, mi or 0, ss or 0)
    except ValueError as exc:
        raise QueryError(f"{field}: invalid date {text!r} ({exc})") from None
    if mo is None:
        end = start.replace(year=y + 1) if y < dt.MAXYEAR else dt.datetime.max
    elif d is None:
        end = start.replace(year=y + 1, month=1) if mo == 12 else start.replace(month=mo + 1)
    elif hh is None:
        end = start + dt.timedelta(days=1)
    elif mi is None:
        end = start + dt.timedelta(hours=1)
    elif ss is None:
        end = start + dt.timedelta(minutes=1)
    else:
        end = start + dt.timedelta(seconds=1)
    return Period(start, end)


def parse_date_range(
    text: str, now: dt.datetime, *, field: str
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """A date or a range of dates → ``[start, end)`` in naive local time.

    ``2021`` is the whole year; ``2019..2021`` runs from the start of 2019 to the end of 2021;
    either end may be left open. A lone relative date is the span between it and now
    (``-1w`` = the last week).
    """
    if ".." in text:
        left, _, right = text.partition("..")
        if not left and not right:
            raise QueryError(f"{field}: a range needs at least one end, got {text!r}")
        start = parse_period(left, now, field=field).start if left else None
        end = parse_period(right, now, field=field).end if right else None
        if start is not None and end is not None and start >= end:
            raise QueryError(f"{field}: empty range {text!r} (it ends before it starts)")
        return start, end
    if not text:
        raise QueryError(f"{field}: needs a date, e.g. {field}:2021-06")
    period = parse_period(text, now, field=field)
    if period.relative:
        return (period.start, now) if period.start <= now else (now, period.start)
    return period.start, period.end


_TRUE = {"true", "yes", "1", "on", "y"}
_FALSE = {"false", "no", "0", "off", "n"}


def parse_bool(text: str, *, field: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise QueryError(f"{field}: expects true or false, got {text!r}")
