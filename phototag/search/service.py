"""What the ``similar`` and ``index`` commands do, on a :class:`phototag.library.Library`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import text as sql

from phototag.db.models import decode_path
from phototag.search.errors import SearchError
from phototag.search.embeddings import model_ids_with_embeddings, table_state
from phototag.search.index import EmbeddingIndex
from phototag.search.manifest import Manifest

Progress = Callable[[str], None]


@dataclass
class SimilarHit:
    photo_id: int
    path: str
    score: float
    status: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _conn(session: Any) -> Any:
    return session.connection()


def resolve_model(lib: Any, session: Any, model: str | None) -> tuple[str, Any]:
    """(model id, tagger or None) for ``--model`` (a registry name or a model id, or None)."""
    known = model_ids_with_embeddings(_conn(session))
    if not known:
        raise SearchError("no photo has an embedding yet: scan the library with a model that makes them")
    ids = [m for m, _ in known]
    if model is None:
        return ids[0], None
    if model in ids:
        return model, None
    from phototag.tagging.base import TaggerError
    from phototag.tagging.registry import get_tagger

    try:
        tagger = get_tagger(lib.settings, model)
    except TaggerError as exc:
        raise SearchError(f"{exc} (or a model id with embeddings: {', '.join(ids)})") from exc
    if tagger.model_id not in ids:
        raise SearchError(
            f"no photo has embeddings from {model!r} ({tagger.model_id}); "
            f"scan with --model {model} first (embeddings present: {', '.join(ids)})"
        )
    return tagger.model_id, tagger


def open_index(lib: Any, model_id: str, progress: Progress | None = None, **options: Any) -> EmbeddingIndex:
    """The in-step index of ``model_id``, saying so when it has to be (re)built."""
    index = EmbeddingIndex(lib.settings.home, lib.engine, model_id, **options)
    index._load()
    if progress is not None:
        with lib.engine.connect() as conn:
            state = table_state(conn, model_id)
        if state != index.table and abs(state.count - len(index)) > 10_000:
            progress(f"updating the similar-photo index of {model_id} ({state.count:,} photos)…")
    index.sync()
    return index


def find_similar(
    lib: Any,
    session: Any,
    ref: str,
    *,
    limit: int = 20,
    model: str | None = None,
    progress: Progress | None = None,
) -> list[SimilarHit]:
    """The ``limit`` photos most like ``ref`` (a library photo, or any image file)."""
    from phototag.library import LibraryError

    model_id, tagger = resolve_model(lib, session, model)
    try:
        photo = lib.resolve_photo(session, ref)
    except LibraryError:
        photo = None
    index = open_index(lib, model_id, progress)
    k = limit + 20  # room for photos that turn out to be missing
    if photo is not None and index.vector_of(photo.id) is not None:
        hits = index.similar_to_photo(_conn(session), photo.id, k)
    else:
        path = Path(ref).expanduser()
        if not path.is_file():
            if photo is not None:
                raise SearchError(
                    f"{ref} has no embedding from {model_id} and its file is not readable; "
                    "retag it with that model"
                )
            raise SearchError(f"{ref}: not a photo of the library, nor an image file")
        if tagger is None:
            from phototag.search.resolvers import tagger_for_model_id

            tagger = tagger_for_model_id(lib.settings, model_id)
        hits = index.similar_to_file(path, tagger, k)
    return _with_paths(session, hits, limit)


def _with_paths(session: Any, hits: list[tuple[int, float]], limit: int) -> list[SimilarHit]:
    if not hits:
        return []
    ids = ",".join(str(int(pid)) for pid, _ in hits)
    rows = {
        int(r[0]): (r[1], r[2])
        for r in _conn(session).execute(sql(f"SELECT id, path, status FROM photos WHERE id IN ({ids})"))
    }
    out: list[SimilarHit] = []
    for pid, score in hits:
        if pid in rows and rows[pid][1] != "missing":
            # the file name as the file system has it, not its stored (escaped) form
            out.append(SimilarHit(pid, decode_path(rows[pid][0]), round(float(score), 6), rows[pid][1]))
        if len(out) == limit:
            break
    return out


@dataclass
class IndexReport:
    model_id: str
    kind: str
    photos: int
    dim: int | None
    seconds: float
    path: str
    bytes: int
    in_step: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rebuild_indexes(lib: Any, model: str | None = None, progress: Progress | None = None) -> list[IndexReport]:
    """Rebuild the index of ``model`` (registry name or model id), or of every model with embeddings."""
    with lib.session() as session:
        if model is None:
            model_ids = [m for m, _ in model_ids_with_embeddings(_conn(session))]
        else:
            model_ids = [resolve_model(lib, session, model)[0]]
    reports = []
    for model_id in model_ids:
        if progress is not None:
            progress(f"rebuilding the index of {model_id}…")
        t0 = time.perf_counter()
        index = EmbeddingIndex(lib.settings.home, lib.engine, model_id)
        index.rebuild()
        reports.append(
            IndexReport(
                model_id, index.kind, len(index), index.dim, round(time.perf_counter() - t0, 3),
                str(index.index_path), index.index_path.stat().st_size if index.index_path.exists() else 0,
            )
        )
    return reports


def index_status(lib: Any) -> list[IndexReport]:
    """Each model's index as cached on disk, and whether it is in step with the library."""
    with lib.session() as session:
        conn = _conn(session)
        models = model_ids_with_embeddings(conn)
        reports = []
        for model_id, _count in models:
            index = EmbeddingIndex(lib.settings.home, lib.engine, model_id)
            try:
                manifest = Manifest.from_json(index.manifest_path.read_text("utf-8"))
            except (OSError, ValueError, TypeError, KeyError):
                manifest = None
            state = table_state(conn, model_id)
            reports.append(
                IndexReport(
                    model_id,
                    manifest.kind if manifest else "-",
                    manifest.count if manifest else 0,
                    manifest.dim if manifest else None,
                    0.0,
                    str(index.index_path),
                    index.index_path.stat().st_size if index.index_path.exists() else 0,
                    in_step=manifest is not None and manifest.table == state,
                )
            )
    return reports
