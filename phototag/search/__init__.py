"""Search beyond tag names: similar photos (FAISS over embeddings) and plain-language text.

The query language (``phototag.query``) calls two resolvers for its non-SQL terms:

* ``text_resolver(home, engine)`` → ``fn(session, text) -> [(photo_id, score)]`` for ``~"…"``;
* ``similar_resolver(home, engine)`` → ``fn(session, path) -> [(photo_id, score)]`` for
  ``similar:PATH``.

Both load their models and indexes lazily, on the first call, and keep them for later calls.

The package, by job: ``resolvers`` (the two above), ``embeddings`` (reading the ``embeddings`` table;
embedding an image file), ``manifest`` and ``index`` (the FAISS index, a cache rebuilt from SQLite),
``encoder`` (the numpy sentence model), ``text_cache`` (text vectors kept on disk), ``text`` (the
plain-language matcher), ``service`` (what the ``similar`` and ``index`` commands do).
"""

from phototag.search.errors import SearchError, TextModelUnavailable
from phototag.search.resolvers import (
    default_model_id,
    default_resolvers,
    photo_id_for_path,
    similar_resolver,
    tagger_for_model_id,
    text_resolver,
)

__all__ = [
    "SearchError",
    "TextModelUnavailable",
    "default_model_id",
    "default_resolvers",
    "photo_id_for_path",
    "tagger_for_model_id",
    "similar_resolver",
    "text_resolver",
]
