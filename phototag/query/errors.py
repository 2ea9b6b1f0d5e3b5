"""The one error the query language raises."""

from __future__ import annotations

from phototag.errors import PhototagError


class QueryError(PhototagError, ValueError):
    """A search query could not be understood or run; the message says why, for the user."""
