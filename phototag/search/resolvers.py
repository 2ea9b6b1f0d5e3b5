"""The resolvers the query language calls for its non-SQL terms (``~"…"`` and ``similar:PATH``),
and how a model id or a path becomes what they need. Models and indexes are loaded lazily, on the
first call, and kept for later calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sqlalchemy import text as sql

from phototag.search.errors import SearchError

Hits = list[tuple[int, float]]


def _connection(session: Any) -> Any:
    return session.connection() if hasattr(session, "connection") and callable(session.connection) else session


def default_model_id(conn: Any) -> str:
    """The model with the most stored embeddings (what ``similar`` uses unless told otherwise)."""
    from phototag.search.embeddings import model_ids_with_embeddings

    models = model_ids_with_embeddings(_connection(conn))
    if not models:
        raise SearchError("no photo has an embedding yet: scan the library with a model that makes them")
    return models[0][0]


def photo_id_for_path(conn: Any, path: Path | str) -> int | None:
    """The library photo stored at ``path`` (resolved), if any; any file name, also one that is not
    valid UTF-8 (compared in its stored form, :func:`phototag.db.models.encode_path`)."""
    from phototag.db.models import encode_path

    resolved = encode_path(str(Path(path).expanduser().resolve()))
    row = _connection(conn).execute(sql("SELECT id FROM photos WHERE path = :p"), {"p": resolved}).first()
    return None if row is None else int(row[0])


def text_resolver(
    home: Path | str,
    engine: Any = None,
    *,
    k: int | None = None,
    encoder: Any = None,
    min_score: float = 0.15,
    relative: float = 0.5,
    **options: Any,
) -> Callable[[Any, str], Hits]:
    """``fn(session, text)`` → photos whose tags/captions mean ``text``, best first.

    A query term matches the photos it returns, so weak hits are cut: under ``min_score``, or
    under ``relative`` × the best hit's score. ``k`` caps the count (None: no cap).
    """
    from phototag.search.text import TextSearcher

    searcher: list[TextSearcher] = []

    def resolve(session: Any, query: str) -> Hits:
        if not searcher:
            searcher.append(TextSearcher(home, engine, encoder=encoder, **options))
        return searcher[0].search(query, k, conn=session, min_score=min_score, relative=relative)

    return resolve


def similar_resolver(
    home: Path | str,
    engine: Any,
    *,
    model_id: str | None = None,
    tagger_factory: Callable[[str], Any] | None = None,
    k: int = 200,
    **index_options: Any,
) -> Callable[[Any, str], Hits]:
    """``fn(session, path)`` → the ``k`` photos most like the photo at ``path``.

    A photo of the library uses its stored embedding (and is left out of its own results); any
    other image file is embedded with ``tagger_factory(model_id)``, which must return a tagger
    of the index's model. Without a factory only library photos can be used.
    """
    from phototag.search.index import EmbeddingIndex

    indexes: dict[str, EmbeddingIndex] = {}

    def resolve(session: Any, path: str) -> Hits:
        conn = _connection(session)
        mid = model_id or default_model_id(conn)
        index = indexes.get(mid)
        if index is None:
            index = indexes[mid] = EmbeddingIndex.open(home, engine, mid, **index_options)
        else:
            index.sync()
        photo_id = photo_id_for_path(conn, path)
        if photo_id is not None and index.vector_of(photo_id) is not None:
            return index.similar_to_photo(conn, photo_id, k)
        if not Path(path).expanduser().is_file():
            raise SearchError(f"similar: {path} is neither a photo of the library nor an image file")
        if tagger_factory is None:
            raise SearchError(
                f"similar: {path} is not in the library, and no model is available to embed it"
            )
        return index.similar_to_file(Path(path).expanduser(), tagger_factory(mid), k)

    return resolve


def tagger_for_model_id(settings: Any, model_id: str) -> Any:
    """A tagger (from the registry) whose embeddings are those of ``model_id``."""
    from phototag.tagging.registry import get_tagger, list_taggers

    infos = list_taggers(settings)
    names = [i.name for i in infos if i.model_id == model_id]
    if not names:
        known = ", ".join(f"{i.name} ({i.model_id})" for i in infos) or "none"
        raise SearchError(
            f"no installed model makes {model_id!r} embeddings (installed: {known}); "
            "only photos already in the library can be compared"
        )
    return get_tagger(settings, names[0])


def default_resolvers(lib: Any) -> dict[str, Callable[[Any, str], Hits]]:
    """The ``similar`` and ``text`` resolvers of a :class:`phototag.library.Library`."""
    home = lib.settings.home
    return {
        "similar": similar_resolver(
            home, lib.engine, tagger_factory=lambda mid: tagger_for_model_id(lib.settings, mid)
        ),
        "text": text_resolver(home, lib.engine),
    }
