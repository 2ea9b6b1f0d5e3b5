"""Test helpers for the watch daemon: a tiny real tagger, photo files, a watcher in a thread."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from phototag.db.models import ModelRun, Photo, WorkItem
from phototag.tagging.base import Prediction, Tagger, TagScore


class ColourTagger(Tagger):
    """A legitimate tiny model: tags a photo by its mean colour (dominant channel, brightness).

    Deterministic and fast, so a 1,000-photo burst runs in seconds on two shared cores."""

    name = "colour"
    model_id = "test/mean-colour"
    batch_size = 16

    def __init__(self):
        self.predicted = 0  # photos that went through predict() in this process
        self.lock = threading.Lock()

    @property
    def weights_sha256(self) -> str:
        return "0" * 64

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.float32).mean(axis=(0, 1))

    def predict(self, batch: list[np.ndarray]) -> list[Prediction]:
        out = []
        for mean in batch:
            channel = ("red", "green", "blue")[int(np.argmax(mean))]
            share = float(mean.max() / max(mean.sum(), 1e-6))
            tags = [TagScore(channel, min(1.0, share)), TagScore("bright" if mean.mean() > 127 else "dark", 0.9)]
            out.append(Prediction(tags))
        with self.lock:
            self.predicted += len(batch)
        return out


def write_photo(path: Path, seed: int, size: int = 64, fmt: str | None = None, colour: str | None = None) -> Path:
    """A distinct small photo (seeded noise over a base colour) written atomically enough for tests."""
    rng = np.random.default_rng(seed)
    base = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}.get(
        colour or ("red", "green", "blue")[seed % 3])
    arr = np.clip(np.array(base, dtype=np.int16) + rng.integers(-25, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or ("PNG" if path.suffix.lower() == ".png" else "JPEG")
    Image.fromarray(arr).save(path, format=fmt)
    return path


def photo_bytes(seed: int, size: int = 64, suffix: str = ".jpg") -> bytes:
    import io

    rng = np.random.default_rng(seed)
    base = np.array([(200, 30, 30), (30, 200, 30), (30, 30, 200)][seed % 3], dtype=np.int16)
    arr = np.clip(base + rng.integers(-25, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG" if suffix == ".png" else "JPEG")
    return buf.getvalue()


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def model_work(lib) -> int:
    """Photos stored by model runs (each store_prediction adds one): a photo tagged twice counts twice."""
    with lib.session() as s:
        return s.scalar(select(func.coalesce(func.sum(ModelRun.photo_count), 0)))


def photo_row(lib, path: Path):
    with lib.session() as s:
        return lib.photo_by_path(s, path)


def tag_names(lib, path: Path) -> set[str]:
    with lib.session() as s:
        photo = lib.photo_by_path(s, path)
        return {t["name"] for t in lib.photo_tags(s, photo.id)} if photo else set()


def tagged_count(lib) -> int:
    with lib.session() as s:
        return s.scalar(select(func.count()).select_from(Photo).where(Photo.tagged_run_id.is_not(None))) or 0


def queue_length(lib) -> int:
    with lib.session() as s:
        return s.scalar(select(func.count()).select_from(WorkItem)) or 0


@contextlib.contextmanager
def watching(lib, tagger, roots, **kwargs) -> Iterator["Watcher"]:
    """A real Watcher (real watchdog observer, real SQLite file) running in a thread."""
    from phototag.watch.daemon import Watcher

    kwargs.setdefault("stable_seconds", 0.5)
    kwargs.setdefault("batch_timeout", 0.2)
    kwargs.setdefault("decode_workers", 2)
    watcher = Watcher(lib, tagger, roots, **kwargs)
    errors: list[BaseException] = []

    def main():
        try:
            watcher.run()
        except BaseException as exc:  # surfaced in the test
            errors.append(exc)

    thread = threading.Thread(target=main, name="test-watcher", daemon=True)
    thread.start()
    assert watcher.ready.wait(30), "watcher did not start"
    try:
        yield watcher
    finally:
        watcher.stop()
        thread.join(60)
        assert not thread.is_alive(), "watcher did not stop"
        if errors:
            raise errors[0]
