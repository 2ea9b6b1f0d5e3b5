"""The FAISS index against brute force numpy, and its life as a cache of SQLite."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import delete, text, update

from phototag.db.models import Embedding, Photo
from phototag.search.errors import SearchError
from phototag.search.index import FLAT, HNSW, EmbeddingIndex
from phototag.tagging.base import Prediction, Tagger

from .conftest import add_photos, unit_vectors

MODEL = "test/model"


def brute_force(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int):
    scores = vectors @ (query / np.linalg.norm(query))
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


def test_flat_index_equals_brute_force(engine, home):
    rng = np.random.default_rng(0)
    vectors = unit_vectors(rng, 500, 48)
    ids = np.array(add_photos(engine, vectors))
    index = EmbeddingIndex.open(home, engine, MODEL)
    assert index.kind == FLAT and len(index) == 500
    for query in unit_vectors(rng, 20, 48):
        hits = index.search(query, 10)
        want_ids, want_scores = brute_force(vectors, ids, query, 10)
        assert [h[0] for h in hits] == want_ids.tolist()
        np.testing.assert_allclose([h[1] for h in hits], want_scores, rtol=0, atol=1e-5)


def test_hnsw_recall_at_10_on_random_data(engine, home):
    rng = np.random.default_rng(1)
    n, dim = 20_000, 64
    vectors = unit_vectors(rng, n, dim)
    ids = np.arange(1, n + 1, dtype=np.int64) * 7  # photo ids are not positions
    index = EmbeddingIndex(home, engine, MODEL, hnsw_threshold=1_000)
    index.add(ids, vectors)
    assert index.kind == HNSW
    queries = unit_vectors(rng, 100, dim)
    found = 0
    for query in queries:
        want, _ = brute_force(vectors, ids, query, 10)
        got = [pid for pid, _ in index.search(query, 10)]
        found += len(set(got) & set(want.tolist()))
    recall = found / (10 * len(queries))
    assert recall >= 0.95, recall


def test_index_is_saved_reused_and_follows_the_database(engine, home):
    rng = np.random.default_rng(2)
    vectors = unit_vectors(rng, 50, 16)
    add_photos(engine, vectors)
    first = EmbeddingIndex.open(home, engine, MODEL)
    assert first.index_path.exists() and first.manifest_path.exists()
    mtime = first.index_path.stat().st_mtime_ns

    again = EmbeddingIndex.open(home, engine, MODEL)
    assert again.sync() is False  # in step: nothing to do
    assert again.index_path.stat().st_mtime_ns == mtime
    assert len(again) == 50

    # a new photo appears, one is deleted, one gets a new embedding
    new_vec = unit_vectors(rng, 1, 16)
    add_photos(engine, new_vec, start=100, created_at=dt.datetime(2026, 2, 1))
    replaced = unit_vectors(rng, 1, 16)[0]
    with engine.begin() as conn:
        conn.execute(delete(Photo).where(Photo.id == 3))
        conn.execute(delete(Embedding).where(Embedding.photo_id == 3))
        conn.execute(
            update(Embedding).where(Embedding.photo_id == 5)
            .values(vector=replaced.astype("<f4").tobytes(), created_at=dt.datetime(2026, 3, 1))
        )
    index = EmbeddingIndex.open(home, engine, MODEL)
    assert len(index) == 50
    assert 3 not in index and 100 in index
    assert index.search(new_vec[0], 1)[0][0] == 100
    top = index.search(replaced, 1)[0]
    assert top[0] == 5 and top[1] == pytest.approx(1.0, abs=1e-5)
    assert index.search(vectors[4], 1)[0][0] != 5 or index.search(vectors[4], 1)[0][1] < 0.999


def test_damaged_index_file_is_rebuilt(engine, home):
    rng = np.random.default_rng(3)
    vectors = unit_vectors(rng, 40, 8)
    add_photos(engine, vectors)
    index = EmbeddingIndex.open(home, engine, MODEL)
    index.index_path.write_bytes(index.index_path.read_bytes()[:100])  # torn write
    index = EmbeddingIndex.open(home, engine, MODEL)
    assert len(index) == 40
    assert index.search(vectors[7], 1)[0][0] == 8


def test_rebuild_after_all_rows_are_gone(engine, home):
    rng = np.random.default_rng(4)
    add_photos(engine, unit_vectors(rng, 10, 8))
    EmbeddingIndex.open(home, engine, MODEL)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM embeddings"))
    index = EmbeddingIndex.open(home, engine, MODEL)
    assert len(index) == 0 and index.search(np.ones(8, np.float32), 5) == []
    assert not index.index_path.exists()


def test_hnsw_removal_and_replacement(home, engine):
    rng = np.random.default_rng(5)
    vectors = unit_vectors(rng, 2_000, 32)
    ids = np.arange(10, 2_010, dtype=np.int64)
    index = EmbeddingIndex(home, engine, MODEL, hnsw_threshold=500)
    index.add(ids, vectors)
    assert index.kind == HNSW
    assert index.remove([10, 11, 99999]) == 2
    assert len(index) == 1_998
    assert all(pid not in (10, 11) for pid, _ in index.search(vectors[0], 20))
    # replacing a vector: the old one can no longer be found under that id
    index.add([12], vectors[1000:1001])
    hits = index.search(vectors[1000], 2)
    assert {pid for pid, _ in hits} == {12, 1010}
    assert index.search(vectors[2], 1)[0][0] != 12
    # past a quarter of tombstones the graph is rebuilt without them
    index.remove(ids[:600])
    assert len(index) == 1_400 and index._tombstones == 0
    assert index._index.ntotal == 1_400
    index.save()
    reopened = EmbeddingIndex(home, engine, MODEL)
    reopened._load()
    assert len(reopened) == 1_400


def test_flat_becomes_hnsw_past_the_threshold(home, engine):
    rng = np.random.default_rng(6)
    vectors = unit_vectors(rng, 300, 16)
    index = EmbeddingIndex(home, engine, MODEL, hnsw_threshold=200)
    index.add(np.arange(150), vectors[:150])
    assert index.kind == FLAT
    index.add(np.arange(150, 300), vectors[150:])
    assert index.kind == HNSW and len(index) == 300
    assert index.search(vectors[42], 1)[0][0] == 42


def test_wrong_dimension_is_a_clear_error(home, engine):
    index = EmbeddingIndex(home, engine, MODEL)
    index.add([1], np.ones((1, 8), np.float32))
    with pytest.raises(SearchError, match="8"):
        index.search(np.ones(4, np.float32), 3)
    with pytest.raises(SearchError):
        index.add([2], np.ones((1, 4), np.float32))


class ColourTagger(Tagger):
    """A real (if simple) tagger: the embedding is the photo's colour histogram."""

    name = "colour"
    model_id = MODEL
    embedding_dim = 24

    @property
    def weights_sha256(self) -> str:
        return "0" * 64

    def prepare(self, image: Image.Image):
        return np.asarray(image.resize((64, 64)), dtype=np.uint8)

    def predict(self, batch):
        out = []
        for pixels in batch:
            hist = np.concatenate(
                [np.histogram(pixels[..., c], bins=8, range=(0, 256))[0] for c in range(3)]
            ).astype(np.float32)
            out.append(Prediction(tags=[], embedding=hist / np.linalg.norm(hist)))
        return out


def test_similar_to_file_and_to_photo_with_real_photos(tmp_path, home, engine):
    skimage_data = pytest.importorskip("skimage.data")
    tagger = ColourTagger()
    images = {
        "chelsea": skimage_data.chelsea(), "coffee": skimage_data.coffee(),
        "astronaut": skimage_data.astronaut(), "rocket": skimage_data.rocket(),
    }
    vectors = []
    for pixels in images.values():
        vectors.append(tagger.predict([tagger.prepare(Image.fromarray(pixels))])[0].embedding)
    add_photos(engine, np.stack(vectors))
    index = EmbeddingIndex.open(home, engine, MODEL)

    # a resized, re-encoded copy of the cat, not in the library
    copy = tmp_path / "cat-copy.jpg"
    Image.fromarray(images["chelsea"]).resize((200, 150)).save(copy, quality=80)
    hits = index.similar_to_file(copy, tagger, k=2)
    assert hits[0][0] == 1 and hits[0][1] > 0.95

    with engine.connect() as conn:
        near = index.similar_to_photo(conn, 1, k=3)
    assert len(near) == 3 and 1 not in [pid for pid, _ in near]
    assert [s for _, s in near] == sorted([s for _, s in near], reverse=True)

    with pytest.raises(SearchError, match="no embedding"):
        index.similar_to_photo(None, 999, k=3)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(SearchError, match="cannot read image"):
        index.similar_to_file(broken, tagger)


def test_similar_resolver_for_the_query_language(engine, home, tmp_path):
    from sqlalchemy.orm import Session

    from phototag.search import similar_resolver

    rng = np.random.default_rng(7)
    vectors = unit_vectors(rng, 30, 16)
    add_photos(engine, vectors)  # stored at /photos/<id>.jpg
    resolve = similar_resolver(home, engine, k=5)
    with Session(engine) as session:
        hits = resolve(session, "/photos/4.jpg")
    want, _ = brute_force(vectors, np.arange(1, 31), vectors[3], 6)
    assert [pid for pid, _ in hits] == [p for p in want.tolist() if p != 4][:5]
    with Session(engine) as session, pytest.raises(SearchError, match="neither"):
        resolve(session, str(tmp_path / "nothing.jpg"))


def test_catch_up_with_additions_only_and_with_rows_it_never_saw(engine, home):
    rng = np.random.default_rng(8)
    vectors = unit_vectors(rng, 40, 8)
    add_photos(engine, vectors[:20], start=100)
    EmbeddingIndex.open(home, engine, MODEL)
    # later photos arrive (higher row ids)
    add_photos(engine, vectors[20:30], start=200, created_at=dt.datetime(2026, 2, 1))
    index = EmbeddingIndex.open(home, engine, MODEL)
    assert len(index) == 30 and index.search(vectors[25], 1)[0][0] == 205
    # a row slipped in below the watermark (low id, old timestamp): caught by the count
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO photos (id, path, status, added_at, updated_at) "
                          "VALUES (1, '/photos/1.jpg', 'ok', '2026-01-01', '2026-01-01')"))
        conn.execute(
            text("INSERT INTO embeddings (id, photo_id, model_id, dim, vector, created_at) "
                 "VALUES (-5, 1, :m, 8, :v, '2000-01-01 00:00:00.000000')"),
            {"m": MODEL, "v": vectors[35].astype("<f4").tobytes()},
        )
    index = EmbeddingIndex.open(home, engine, MODEL)
    assert len(index) == 31 and index.search(vectors[35], 1)[0][0] == 1
