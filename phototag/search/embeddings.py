"""The embeddings of the library as the search layer reads them: from SQLite (table ``embeddings``,
the source of truth of every index) or made from any image file with a tagger.

A vector is stored as little-endian float32 bytes with its ``dim``; :func:`read_embeddings` reads a
model's rows in batches, :func:`table_state` gives the watermark (row count, highest row id, newest
``created_at``) that an index manifest records.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from phototag.search.errors import SearchError

_STATE_SQL = text(
    "SELECT count(*), max(id), max(created_at) FROM embeddings WHERE model_id = :model_id"
)


@dataclass(frozen=True)
class TableState:
    """The watermark of one model's rows in ``embeddings``."""

    count: int
    max_id: int
    max_created_at: str

    @classmethod
    def empty(cls) -> "TableState":
        return cls(0, 0, "")


class Database:
    """Reads embeddings through whatever the caller has: an Engine, a session factory or a library."""

    def __init__(self, source: Any):
        self._source = source

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        src = self._source
        if isinstance(src, Engine):
            with src.connect() as conn:
                yield conn
            return
        engine = getattr(src, "engine", None)
        if isinstance(engine, Engine):
            with engine.connect() as conn:
                yield conn
            return
        if callable(src):  # sessionmaker / session factory
            with src() as session:
                yield session.connection()
            return
        raise TypeError(f"cannot read embeddings from {src!r}: pass an Engine or a session factory")


def table_state(conn: Connection, model_id: str) -> TableState:
    count, max_id, max_created = conn.execute(_STATE_SQL, {"model_id": model_id}).one()
    return TableState(int(count or 0), int(max_id or 0), str(max_created or ""))


def vector_from_blob(blob: bytes, dim: int, photo_id: int) -> np.ndarray:
    vec = np.frombuffer(blob, dtype="<f4")
    if vec.shape[0] != dim:
        raise SearchError(
            f"embedding of photo {photo_id} has {vec.shape[0]} values, expected {dim}"
        )
    return vec


def read_embeddings(
    conn: Connection, model_id: str, where: str = "", params: dict | None = None, batch: int = 50_000
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(photo_ids int64, vectors float32 [n, dim], dim) of one model's rows matching ``where``."""
    sql = "SELECT photo_id, dim, vector FROM embeddings WHERE model_id = :model_id"
    if where:
        sql += f" AND ({where})"
    result = conn.execute(text(sql), {"model_id": model_id, **(params or {})})
    ids: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    dim: int | None = None
    while True:
        rows = result.fetchmany(batch)
        if not rows:
            break
        photo_ids, dims, blobs = zip(*rows)
        if dim is None:
            dim = int(dims[0])
        if any(d != dim for d in dims) or any(len(b) != 4 * dim for b in blobs):
            bad = next(i for i, (d, b) in enumerate(zip(dims, blobs)) if d != dim or len(b) != 4 * dim)
            raise SearchError(
                f"model {model_id!r}: the embedding of photo {photo_ids[bad]} has "
                f"{len(blobs[bad]) // 4} values, others have {dim}; re-run the model on the library"
            )
        ids.append(np.array(photo_ids, dtype=np.int64))
        # one copy for the whole batch instead of one small array per row
        chunks.append(np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(rows), dim))
    if not ids:
        return np.empty(0, np.int64), np.empty((0, dim or 0), np.float32), dim
    return np.concatenate(ids), np.concatenate(chunks).astype(np.float32, copy=False), dim


def model_ids_with_embeddings(conn: Connection) -> list[tuple[str, int]]:
    """(model_id, number of embeddings), most embeddings first."""
    rows = conn.execute(
        text("SELECT model_id, count(*) AS n FROM embeddings GROUP BY model_id ORDER BY n DESC")
    ).all()
    return [(str(m), int(n)) for m, n in rows]


def embed_file(path: Path | str, tagger: Any, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file as a scan does (EXIF orientation applied, HEIC/RAW, ``scan.max_pixels`` as
    the size limit) and return the tagger's embedding of it."""
    from phototag.config import get_settings
    from phototag.ingest.decode import DecodeError, decode_photo

    if max_pixels is None:
        max_pixels = int(get_settings().get("scan.max_pixels"))
    try:
        image = decode_photo(path, max_pixels=max_pixels).image
    except (OSError, DecodeError) as exc:
        raise SearchError(f"cannot read image {path}: {exc}") from exc
    prediction = tagger.predict([tagger.prepare(image)])[0]
    if prediction.embedding is None:
        raise SearchError(f"model {getattr(tagger, 'name', tagger)!r} gives no embeddings")
    return np.asarray(prediction.embedding, dtype=np.float32)
