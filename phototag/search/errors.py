"""Errors raised by the search layer, with messages meant for the user."""

from __future__ import annotations

try:  # the lead's common base class, once it exists
    from phototag.errors import PhototagError as _Base  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the checkout state
    _Base = Exception


class SearchError(_Base):
    """A search could not be run (no embeddings, unknown photo, model missing, …)."""


class TextModelUnavailable(SearchError):
    """The offline sentence-embedding model used for plain-language search cannot be loaded."""
