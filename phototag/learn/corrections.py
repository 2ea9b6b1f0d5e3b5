"""The user's corrections as labels, and the model's scores for the corrected photos.

What counts as a label. A photo is *reviewed* when the user corrected it at least once (a removal
in ``tag_removals`` or a ``manual`` tag). On a reviewed photo, for every tag of the model's
vocabulary, the user's answer is:

* **yes** — a manual or imported tag, or a model tag the user left in place;
* **no** — a tag the user removed, or a tag nobody gave (the user looked and did not add it).

*Explicit* corrections (removals and manual adds) are what calibration needs enough of before it
moves a tag's threshold.

Where the scores come from. A removal remembers the model's score when it was removed, but a
manual add has no score, and ``photo_tags`` keeps only the tags that passed the thresholds. So we
re-run the model on the reviewed photos (``Prediction.scores``: every class's score) and cache the
result in ``<home>/cache/learn/`` by model version and photo content hash: later runs only compute
photos corrected since. This works for every tagger that fills ``Prediction.scores`` (built-in,
RAM packs) without storing thousands of floats per photo in the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from phototag import atomic
from phototag.config import Settings
from phototag.db.models import Photo, PhotoStatus, PhotoTag, Tag, TagRemoval, TagSource
from phototag.library import LibraryError
from phototag.tagging.base import Tagger


class LearnError(LibraryError):
    """Calibration or fine-tuning cannot run (too few corrections, a model without scores, …)."""


@dataclass
class Reviewed:
    """One reviewed photo and what the user says about it."""

    photo_id: int
    path: str
    sha256: str
    yes: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    added: set[str] = field(default_factory=set)  # manual adds (explicit positives)


def load_reviewed(session: Session) -> list[Reviewed]:
    """Every reviewed photo with status ok, by id."""
    removal_rows = session.execute(
        select(TagRemoval.photo_id, Tag.name).join(Tag, Tag.id == TagRemoval.tag_id)
    ).all()
    manual_rows = session.execute(
        select(PhotoTag.photo_id, Tag.name).join(Tag, Tag.id == PhotoTag.tag_id)
        .where(PhotoTag.source == TagSource.manual.value)
    ).all()
    ids = sorted({r[0] for r in removal_rows} | {r[0] for r in manual_rows})
    if not ids:
        return []
    photos: dict[int, Reviewed] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for pid, path, sha in session.execute(
            select(Photo.id, Photo.path, Photo.sha256).where(Photo.id.in_(chunk), Photo.status == PhotoStatus.ok.value)
        ):
            if sha:
                photos[pid] = Reviewed(pid, path, sha)
        for pid, name, source in session.execute(
            select(PhotoTag.photo_id, Tag.name, PhotoTag.source).join(Tag, Tag.id == PhotoTag.tag_id)
            .where(PhotoTag.photo_id.in_(chunk))
        ):
            if pid in photos and source in (TagSource.model.value, TagSource.manual.value, TagSource.imported.value):
                photos[pid].yes.add(name)
    for pid, name in removal_rows:
        if pid in photos:
            photos[pid].removed.add(name)
            photos[pid].yes.discard(name)
    for pid, name in manual_rows:
        if pid in photos:
            photos[pid].added.add(name)
    return [photos[i] for i in sorted(photos)]


def split_held_out(items: Sequence[Reviewed], fraction: float = 0.3) -> tuple[list[Reviewed], list[Reviewed]]:
    """(train, held-out): a stable split by content hash, so a photo stays on its side between runs."""
    train, held = [], []
    for item in items:
        bucket = zlib.crc32(item.sha256.encode()) % 1000
        (held if bucket < fraction * 1000 else train).append(item)
    return train, held


# ---- running the model, cached ------------------------------------------------------------------


def version_key(tagger: Tagger) -> str:
    """Identifies a model version and the settings that change its output."""
    blob = json.dumps([tagger.name, tagger.model_id, tagger.weights_sha256, tagger.settings()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ArrayCache:
    """``sha256 → float32 vector`` (plus a JSON extra per photo), one ``.npz`` file per model version."""

    def __init__(self, path: Path, dtype=np.float32):
        self.path = path
        self.dtype = dtype
        self.rows: dict[str, np.ndarray] = {}
        self.extra: dict[str, object] = {}
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as data:
                    keys = [str(k) for k in data["keys"]]
                    values = data["values"]
                    extra = json.loads(str(data["extra"])) if "extra" in data else {}
                self.rows = {k: values[i] for i, k in enumerate(keys)}
                self.extra = extra
            except (OSError, ValueError, KeyError):
                self.rows, self.extra = {}, {}  # a damaged cache is rebuilt

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def save(self) -> None:
        if not self.rows:
            return
        keys = sorted(self.rows)
        with atomic.replacing(self.path) as tmp, open(tmp, "wb") as handle:  # a file object: savez adds no suffix
            np.savez(handle, keys=np.array(keys), values=np.stack([self.rows[k] for k in keys]).astype(self.dtype),
                     extra=np.array(json.dumps(self.extra)))


def cache_dir(settings: Settings) -> Path:
    return settings.home / "cache" / "learn"


ProgressFn = Callable[[str, int], None]


def iter_prepared(tagger_prepare, items: Sequence[Reviewed], batch: int, workers: int = 2):
    """Decode + prepare photos in a small thread pool; yields (items, prepared) batches; unreadable
    photos are left out."""
    from concurrent.futures import ThreadPoolExecutor

    from phototag.ingest.decode import DecodeError, decode_photo

    def load(item):
        try:
            return item, tagger_prepare(decode_photo(item.path).image)
        except (DecodeError, OSError):
            return item, None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(items), batch):
            done = [r for r in pool.map(load, items[start:start + batch]) if r[1] is not None]
            if done:
                yield [d[0] for d in done], [d[1] for d in done]


def model_outputs(
    settings: Settings, tagger: Tagger, items: Sequence[Reviewed], progress: ProgressFn | None = None
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """``sha256 → score vector`` and ``sha256 → tags the model gives`` for ``items`` (cached)."""
    cache = ArrayCache(cache_dir(settings) / f"scores-{version_key(tagger)}.npz")
    todo = [it for it in items if it.sha256 not in cache]
    if progress:
        progress("total", len(todo))
    for batch_items, prepared in iter_prepared(tagger.prepare, todo, tagger.batch_size,
                                               int(settings.get("decode_workers") or 0) or (os.cpu_count() or 2)):
        predictions = tagger.predict(prepared)
        for item, prediction in zip(batch_items, predictions):
            if prediction.scores is None:
                raise LearnError(
                    f"model {tagger.name} gives no score vector (Prediction.scores), so its thresholds cannot be calibrated"
                )
            cache.rows[item.sha256] = np.asarray(prediction.scores, dtype=np.float32)
            cache.extra[item.sha256] = [t.name for t in prediction.tags]
        if progress:
            progress("advance", len(batch_items))
        cache.save()
    scores = {it.sha256: cache.rows[it.sha256] for it in items if it.sha256 in cache}
    tags = {sha: list(cache.extra.get(sha, [])) for sha in scores}
    return scores, tags


# ---- agreement ----------------------------------------------------------------------------------


@dataclass
class Agreement:
    """How well a tag set agrees with the user on reviewed photos (micro-averaged over tags)."""

    photos: int = 0
    true_positive: int = 0
    false_positive: int = 0  # given, but the user says no
    false_negative: int = 0  # not given, but the user says yes

    @property
    def precision(self) -> float:
        given = self.true_positive + self.false_positive
        return self.true_positive / given if given else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positive + self.false_negative
        return self.true_positive / wanted if wanted else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def add(self, given: Iterable[str], truth: Iterable[str], universe: set[str]) -> None:
        given = set(given) & universe
        truth = set(truth) & universe
        self.photos += 1
        self.true_positive += len(given & truth)
        self.false_positive += len(given - truth)
        self.false_negative += len(truth - given)

    def as_dict(self) -> dict[str, float | int]:
        return {"photos": self.photos, "precision": round(self.precision, 4), "recall": round(self.recall, 4),
                "f1": round(self.f1, 4), "true_positive": self.true_positive,
                "false_positive": self.false_positive, "false_negative": self.false_negative}
