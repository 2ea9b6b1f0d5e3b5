"""The one root of every error phototag raises on purpose.

A :class:`PhototagError` carries a message meant for the person at the keyboard: the CLI prints it
as ``error: <message>`` and exits with :attr:`PhototagError.exit_code` (2: a mistake or a problem the
user can act on), never with a traceback. Any other exception is a bug and keeps its traceback.

Each area keeps its own subclass where it is raised (``ConfigError`` in :mod:`phototag.config`,
``QueryError`` in :mod:`phototag.query.errors`, …) so callers can catch what they expect; the CLI
catches only this root.
"""

from __future__ import annotations


class PhototagError(Exception):
    """A problem phototag explains in its message (a wrong argument, an unreadable file, …)."""

    #: the exit status of the CLI when this error ends a command
    exit_code: int = 2
