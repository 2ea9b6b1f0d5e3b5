"""Errors raised by the search layer, with messages meant for the user."""

from __future__ import annotations

from phototag.errors import PhototagError


class SearchError(PhototagError):
    """A search could not be run (no embeddings, unknown photo, model missing, …)."""


class TextModelUnavailable(SearchError):
    """The offline sentence-embedding model used for plain-language search cannot be loaded."""
