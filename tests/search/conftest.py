"""Fixtures for the search tests: a real SQLite library file in a tmp dir."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, event, insert

from phototag.db.models import Base, Embedding, Photo
from phototag.search.encoder import TextEncoder


def make_engine(path: Path):
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
        dbapi_conn.execute("PRAGMA foreign_keys = ON")

    Base.metadata.create_all(engine)
    return engine


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def add_photos(engine, vectors: np.ndarray, model_id: str = "test/model", start: int = 1,
               created_at: dt.datetime | None = None) -> list[int]:
    """Insert one photo + one embedding per vector; returns the photo ids."""
    ids = list(range(start, start + len(vectors)))
    when = created_at or dt.datetime(2026, 1, 1)
    with engine.begin() as conn:
        conn.execute(insert(Photo), [{"id": i, "path": f"/photos/{i}.jpg"} for i in ids])
        conn.execute(
            insert(Embedding),
            [
                {"photo_id": i, "model_id": model_id, "dim": vectors.shape[1],
                 "vector": v.astype("<f4").tobytes(), "created_at": when}
                for i, v in zip(ids, vectors)
            ],
        )
    return ids


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(tmp_path / "library.db")
    yield eng
    eng.dispose()


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


class CountingEncoder(TextEncoder):
    """The real encoder, counting what it is asked to embed (to see the cache at work)."""

    def __init__(self):
        super().__init__()
        self.encoded: list[str] = []

    def encode(self, texts, batch_size=128):
        self.encoded.extend(texts)
        return super().encode(texts, batch_size)


@pytest.fixture(scope="module")
def encoder():
    return CountingEncoder()


@pytest.fixture
def counting_encoder() -> type[CountingEncoder]:
    """The class, for tests that need a fresh encoder (or several)."""
    return CountingEncoder
