"""Text embeddings kept on disk, so that a query embeds only itself.

* :class:`VocabularyCache`: the vectors of every tag's texts, in ``<home>/cache/text/vocabulary-*.npz``,
  keyed by the text model (id + weights file) and a hash of the texts; when either changes the file
  is rebuilt (reusing the rows of texts it already had) and replaced atomically.
* :class:`TextEmbeddingCache`: captions, one vector per text, beside it (only new captions are
  embedded).

Both files are written through :func:`phototag.atomic.replacing`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from phototag.atomic import replacing
from phototag.search.encoder import TextEncoder
from phototag.tagging.base import unit_rows

log = logging.getLogger(__name__)


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
        return unit_rows(rows)

    def _save(self) -> None:
        with replacing(self.path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, keys=self._keys, vectors=self._vecs)


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
        vecs = unit_rows(vecs)
        self._memo = (digest, vecs)
        return vecs

    def _write(self, digest: str, model_key: str, texts: list[str], vecs: np.ndarray) -> None:
        with replacing(self.path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh, digest=np.array(digest), model=np.array(model_key),
                texts=np.array(texts, dtype=str), vectors=vecs.astype(np.float16),
            )
        self.rebuilds += 1
