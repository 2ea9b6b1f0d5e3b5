"""Similar-photo search: a FAISS index over the embeddings stored in SQLite.

The index is a *derived cache*. SQLite (table ``embeddings``) is the source of truth; for each
model id there is one index file ``<home>/index/<model>.faiss`` and a manifest
``<home>/index/<model>.json`` that records which state of the table the file reflects (row
count, highest row id, newest ``created_at``). :meth:`EmbeddingIndex.sync` compares that
watermark with the database and catches up — incrementally when few rows changed, by a full
rebuild otherwise — so a deleted or stale index file is never wrong, only slower to open.

Two kinds of index, both ``IndexIDMap2`` keyed by photo id, inner product on L2-normalised
vectors (= cosine similarity):

* ``flat`` (exact, ``IndexFlatIP``) while the library has fewer than ``hnsw_threshold`` vectors;
* ``hnsw`` (approximate, ``IndexHNSWFlat``) past it. HNSW cannot delete, so a removed or replaced
  photo's entry is tombstoned (its id in the id map is set to -1 and searches skip negative
  ids); the graph is rebuilt from its own stored vectors once tombstones pass a quarter of it.

The index file and its manifest (:mod:`phototag.search.manifest`) are each written through
:func:`phototag.atomic.replacing`; the manifest is written last and names the index file's size, so
a torn write is detected and repaired by a rebuild. Reading the table: :mod:`phototag.search.embeddings`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import faiss
import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection

from phototag.atomic import replacing, write_bytes
from phototag.search.embeddings import (
    Database,
    TableState,
    embed_file,
    read_embeddings,
    table_state,
    vector_from_blob,
)
from phototag.search.errors import SearchError
from phototag.search.manifest import MANIFEST_VERSION, Manifest, index_dir, index_stem

log = logging.getLogger(__name__)

FLAT = "flat"
HNSW = "hnsw"
#: searches only return entries whose id is in [0, _MAX_ID): tombstones are -1
_MAX_ID = 2**62

# ---- the index ---------------------------------------------------------------------------------


def _normalised(vectors: np.ndarray) -> np.ndarray:
    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if out.ndim == 1:
        out = out[None, :]
    faiss.normalize_L2(out)
    return out


class EmbeddingIndex:
    """One model's vectors, searchable by cosine similarity, keyed by photo id."""

    def __init__(
        self,
        home: Path | str,
        db: Any,
        model_id: str,
        *,
        hnsw_threshold: int = 50_000,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 256,
        rebuild_fraction: float = 0.3,
    ):
        self.home = Path(home)
        self.model_id = model_id
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.rebuild_fraction = rebuild_fraction
        self._db = Database(db)
        stem = index_stem(model_id)
        self.index_path = index_dir(self.home) / f"{stem}.faiss"
        self.manifest_path = index_dir(self.home) / f"{stem}.json"
        self._index: faiss.IndexIDMap2 | None = None
        self.kind: str = FLAT
        self.dim: int | None = None
        self.table = TableState.empty()
        self._tombstones = 0
        self._dirty = False

    # -- opening / persistence --------------------------------------------------------------

    @classmethod
    def open(cls, home: Path | str, db: Any, model_id: str, **options: Any) -> "EmbeddingIndex":
        """Load the cached index of ``model_id`` and bring it in step with the database."""
        self = cls(home, db, model_id, **options)
        self._load()
        self.sync()
        return self

    def _load(self) -> None:
        try:
            manifest = Manifest.from_json(self.manifest_path.read_text("utf-8"))
        except FileNotFoundError:
            return
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("index manifest %s unreadable (%s); rebuilding", self.manifest_path, exc)
            return
        if (
            manifest.version != MANIFEST_VERSION
            or manifest.model_id != self.model_id
            or manifest.index_file != self.index_path.name
        ):
            return
        try:
            if self.index_path.stat().st_size != manifest.index_bytes:
                log.warning("index file %s does not match its manifest; rebuilding", self.index_path)
                return
            index = faiss.read_index(str(self.index_path))
        except (OSError, RuntimeError) as exc:
            log.warning("index file %s unreadable (%s); rebuilding", self.index_path, exc)
            return
        if not isinstance(index, faiss.IndexIDMap2) or index.d != manifest.dim:
            return
        self._index = index
        self.kind = manifest.kind
        self.dim = manifest.dim
        self.table = manifest.table
        self._tombstones = int(index.ntotal) - manifest.count
        if self._tombstones < 0:
            self._index = None

    def save(self) -> None:
        """Write the index file then its manifest (each atomically)."""
        if self._index is None or self.dim is None:
            for path in (self.manifest_path, self.index_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._dirty = False
            return
        with replacing(self.index_path) as tmp:
            faiss.write_index(self._index, str(tmp))
        manifest = Manifest(
            model_id=self.model_id,
            dim=self.dim,
            kind=self.kind,
            count=len(self),
            table=self.table,
            index_file=self.index_path.name,
            index_bytes=self.index_path.stat().st_size,
            built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        payload = manifest.to_json().encode("utf-8")

        write_bytes(self.manifest_path, payload)
        self._dirty = False

    # -- keeping in step with SQLite ----------------------------------------------------------

    def sync(self, *, save: bool = True) -> bool:
        """Catch up with the ``embeddings`` table; returns True when the index changed."""
        with self._db.connect() as conn:
            state = table_state(conn, self.model_id)
            if self._index is not None and state == self.table:
                return False
            if self._index is None or state.count == 0 or not self._catch_up(conn, state):
                self._rebuild_from(conn, state)
        if save:
            self.save()
        return True

    def rebuild(self) -> None:
        """Throw the cached index away and build it again from the database."""
        with self._db.connect() as conn:
            self._rebuild_from(conn, table_state(conn, self.model_id))
        self.save()

    def _rebuild_from(self, conn: Connection, state: TableState) -> None:
        ids, vectors, dim = read_embeddings(conn, self.model_id)
        self._index = None
        self._tombstones = 0
        self.dim = dim
        if dim is not None and len(ids):
            self._index = self._new_index(dim, HNSW if len(ids) >= self.hnsw_threshold else FLAT)
            self._add_new(ids, vectors)
        self.table = state
        self._dirty = True

    def _catch_up(self, conn: Connection, state: TableState) -> bool:
        """Apply the rows changed since ``self.table``; False when a rebuild is the better deal."""
        old = self.table
        # rows added or rewritten since the watermark (cheap: rowid range + (model_id, created_at))
        changed_ids, changed_vecs, dim = read_embeddings(
            conn,
            self.model_id,
            "id > :max_id OR created_at > :max_created",
            # "" (no rows yet) is no timestamp on PostgreSQL: the earliest one says the same
            {"max_id": old.max_id, "max_created": old.max_created_at or "0001-01-01 00:00:00"},
        )
        live = self.ids()
        new_ids = np.setdiff1d(changed_ids, live)
        gone = np.empty(0, np.int64)
        if state.count != len(live) + len(new_ids):
            # rows were deleted (or never seen): only then list every photo id of the model
            db_ids = np.fromiter(
                (r[0] for r in conn.execute(
                    text("SELECT photo_id FROM embeddings WHERE model_id = :m"), {"m": self.model_id}
                )),
                dtype=np.int64,
            )
            gone = np.setdiff1d(live, db_ids, assume_unique=True)
            missing = np.setdiff1d(db_ids, live, assume_unique=True)
            if len(missing) and not np.isin(missing, changed_ids).all():
                # rows we never saw and that do not look new: only a rebuild reads them back
                return False
        work = len(gone) + len(changed_ids)
        if dim is not None and dim != self.dim:
            return False
        if work > self.rebuild_fraction * max(state.count, 1):
            return False
        self.remove(gone)
        if len(changed_ids):
            self.add(changed_ids, changed_vecs)
        self.table = state
        return True

    # -- editing ------------------------------------------------------------------------------

    def _new_index(self, dim: int, kind: str) -> faiss.IndexIDMap2:
        if kind == HNSW:
            inner = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.ef_construction
            inner.hnsw.efSearch = self.ef_search
        else:
            inner = faiss.IndexFlatIP(dim)
        self.kind = kind
        return faiss.IndexIDMap2(inner)  # the Python wrapper keeps ``inner`` alive

    def _id_map(self) -> np.ndarray:
        """A writable numpy view of the id map (position → photo id, -1 = tombstone)."""
        assert self._index is not None
        n = self._index.id_map.size()
        if n == 0:
            return np.empty(0, np.int64)
        return faiss.rev_swig_ptr(self._index.id_map.data(), n)

    def ids(self) -> np.ndarray:
        """Sorted photo ids in the index."""
        if self._index is None:
            return np.empty(0, np.int64)
        ids = self._id_map()
        return np.sort(ids[ids >= 0])

    def __len__(self) -> int:
        if self._index is None:
            return 0
        return int(self._index.ntotal) - self._tombstones

    def __contains__(self, photo_id: int) -> bool:
        return self._index is not None and bool(np.any(self._id_map() == int(photo_id)))

    def add(self, photo_ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) the vectors of ``photo_ids``. Vectors are L2-normalised here."""
        ids = np.asarray(photo_ids, dtype=np.int64).reshape(-1)
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim == 1:
            vecs = vecs[None, :]
        if len(ids) != len(vecs):
            raise ValueError(f"{len(ids)} photo ids but {len(vecs)} vectors")
        if len(ids) == 0:
            return
        if len(np.unique(ids)) != len(ids):
            raise ValueError("photo ids must be unique within one add()")
        if (ids < 0).any():
            raise ValueError("photo ids must be >= 0")
        if self.dim is not None and vecs.shape[1] != self.dim:
            raise SearchError(
                f"vectors have {vecs.shape[1]} values but the {self.model_id!r} index has {self.dim}"
            )
        if self._index is None:
            self.dim = vecs.shape[1]
            self._index = self._new_index(self.dim, FLAT)
        self.remove(ids)
        self._add_new(ids, vecs)
        if self.kind == FLAT and len(self) >= self.hnsw_threshold:
            self._convert(HNSW)

    def _add_new(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        assert self._index is not None
        step = 100_000
        for start in range(0, len(ids), step):
            block = _normalised(vectors[start : start + step])
            self._index.add_with_ids(block, np.ascontiguousarray(ids[start : start + step]))
        self._dirty = True

    def remove(self, photo_ids: Iterable[int] | np.ndarray) -> int:
        """Remove photos from the index; returns how many were there."""
        if self._index is None:
            return 0
        ids = np.unique(np.asarray(list(photo_ids) if not isinstance(photo_ids, np.ndarray)
                                   else photo_ids, dtype=np.int64))
        if len(ids) == 0:
            return 0
        if self.kind == FLAT:
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))
        else:
            id_map = self._id_map()
            hit = np.isin(id_map, ids)
            removed = int(hit.sum())
            if removed:
                id_map[hit] = -1
                self._index.construct_rev_map()
                self._tombstones += removed
                if self._tombstones > 0.25 * self._index.ntotal:
                    self._convert(HNSW if len(self) >= self.hnsw_threshold // 2 else FLAT)
        if removed:
            self._dirty = True
        return removed

    def _convert(self, kind: str) -> None:
        """Rebuild the index as ``kind`` from its own stored vectors (drops tombstones)."""
        assert self._index is not None and self.dim is not None
        id_map = self._id_map().copy()
        keep = np.nonzero(id_map >= 0)[0]
        vectors = self._index.index.reconstruct_n(0, self._index.ntotal)[keep]
        self._index = self._new_index(self.dim, kind)
        self._tombstones = 0
        if len(keep):
            self._add_new(id_map[keep], vectors)

    # -- searching ----------------------------------------------------------------------------

    def search(self, vector: np.ndarray, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` photos most similar to ``vector``: (photo_id, cosine similarity), best first."""
        if self._index is None or len(self) == 0 or k <= 0:
            return []
        query = _normalised(np.asarray(vector, dtype=np.float32).reshape(-1))
        if query.shape[1] != self.dim:
            raise SearchError(
                f"query vector has {query.shape[1]} values but the {self.model_id!r} index has {self.dim}"
            )
        k = min(k, len(self))
        if self.kind == HNSW:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
            selector = faiss.IDSelectorRange(0, _MAX_ID)
            params.sel = selector
            scores, labels = self._index.search(query, k, params=params)
        else:
            scores, labels = self._index.search(query, k)
        return [(int(i), float(s)) for i, s in zip(labels[0], scores[0]) if i >= 0]

    def vector_of(self, photo_id: int) -> np.ndarray | None:
        """The stored (normalised) vector of a photo, read from the database."""
        with self._db.connect() as conn:
            row = conn.execute(
                text("SELECT dim, vector FROM embeddings WHERE model_id = :m AND photo_id = :p"),
                {"m": self.model_id, "p": int(photo_id)},
            ).first()
        if row is None:
            return None
        return vector_from_blob(row[1], int(row[0]), photo_id)

    def similar_to_photo(self, session: Any, photo_id: int, k: int = 10) -> list[tuple[int, float]]:
        """Photos most like library photo ``photo_id`` (itself excluded)."""
        if session is not None:
            row = session.execute(
                text("SELECT dim, vector FROM embeddings WHERE model_id = :m AND photo_id = :p"),
                {"m": self.model_id, "p": int(photo_id)},
            ).first()
            vector = None if row is None else vector_from_blob(row[1], int(row[0]), photo_id)
        else:
            vector = self.vector_of(photo_id)
        if vector is None:
            raise SearchError(
                f"photo {photo_id} has no embedding from model {self.model_id!r}; tag it with that model first"
            )
        hits = self.search(vector, k + 1)
        return [(pid, score) for pid, score in hits if pid != int(photo_id)][:k]

    def similar_to_file(self, path: Path | str, tagger: Any, k: int = 10) -> list[tuple[int, float]]:
        """Photos most like any image file, embedded with ``tagger`` (the model of this index)."""
        tagger_model = getattr(tagger, "model_id", None)
        if tagger_model and tagger_model != self.model_id:
            raise SearchError(
                f"tagger {tagger_model!r} does not make the embeddings of this index ({self.model_id!r})"
            )
        vector = embed_file(path, tagger)
        return self.search(vector, k)
