"""``phototag finetune``: a new tagging head trained on the user's corrections → a new model version.

One flow for every model that can be fine-tuned; what depends on the model is a
:class:`~phototag.learn.head.TrainableHead` (:mod:`phototag.learn.builtin_head` for the built-in
model, :mod:`phototag.learn.ram_head` for RAM / RAM++ packs; Tag2Text is not supported):

1. the frozen backbone's features of every reviewed photo, computed once and cached in
   ``<home>/cache/learn/features-<model>-<weights>.npz`` (by photo content hash);
2. the head trained on a training split of the reviewed photos (see :mod:`phototag.learn.head` for
   the loss), on the GPU when there is one, else on the CPU;
3. agreement with the user before and after, on a held-out split that training never saw;
4. the version that is saved learns from every reviewed photo: ``<home>/models/<name>/``
   (``finetune.json`` + ``head.safetensors``, the layout of :mod:`phototag.tagging.versions`) with its
   own weights sha256 (of the base weights' hash and the head file's), ready for
   ``phototag retag --model <name>``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from phototag import atomic
from phototag.config import Settings
from phototag.ingest.fingerprint import sha256_file
from phototag.learn.corrections import (
    Agreement,
    ArrayCache,
    LearnError,
    ProgressFn,
    Reviewed,
    cache_dir,
    iter_prepared,
    load_reviewed,
    split_held_out,
)
from phototag.learn.builtin_head import BuiltinHead
from phototag.learn.head import DISTILL_WEIGHT, TrainableHead
from phototag.learn.ram_head import RamHead
from phototag.library import Library
from phototag.tagging.base import Tagger
from phototag.tagging.builtin import BuiltinTagger
from phototag.tagging.registry import get_tagger
from phototag.tagging.versions import FINETUNE_FILE, FINETUNE_FORMAT, HEAD_FILE, model_dir


@dataclass
class FinetuneResult:
    name: str
    base: str
    path: Path | None
    weights_sha256: str | None
    epochs: int
    train_photos: int
    held_out_photos: int
    before: Agreement
    after: Agreement
    device: str
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "base": self.base, "path": str(self.path) if self.path else None,
            "weights_sha256": self.weights_sha256, "epochs": self.epochs, "train_photos": self.train_photos,
            "held_out_photos": self.held_out_photos, "held_out_before": self.before.as_dict(),
            "held_out_after": self.after.as_dict(), "device": self.device, "seconds": round(self.seconds, 2),
            "final_loss": round(self.losses[-1], 5) if self.losses else None,
        }


def training_device(requested: str | None) -> str:
    """``cuda`` when there is a GPU and ``requested`` is auto (or unset), else what was asked for."""
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise LearnError("device cuda was asked for but no CUDA GPU is available")
    return requested


def trainable_head(tagger: Tagger) -> TrainableHead:
    """The head of ``tagger`` that fine-tuning trains (the built-in model, its versions, RAM / RAM++ packs)."""
    from phototag.tagging.ram_tagger import RamTagger  # imports torch: only when fine-tuning runs

    if isinstance(tagger, RamTagger):
        return RamHead(tagger)
    if isinstance(tagger, BuiltinTagger):
        return BuiltinHead(tagger)
    raise LearnError(f"fine-tuning supports the built-in model (and its versions), not {tagger.name}")


def cached_features(settings: Settings, head: TrainableHead, items: Sequence[Reviewed], device: str,
                    progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
    """``sha256 → frozen features`` of ``items`` (float32), computed for photos not in the cache yet."""
    cache = ArrayCache(cache_dir(settings) / f"features-{head.cache_name}.npz", dtype=head.feature_dtype)
    todo = [it for it in items if it.sha256 not in cache]
    if progress:
        progress("total", len(todo))
    if todo:
        prepare, embed = head.embedder(device)
        workers = int(settings.get("decode_workers") or 0) or (os.cpu_count() or 2)
        for batch_items, prepared in iter_prepared(prepare, todo, head.feature_batch, workers):
            for item, features in zip(batch_items, embed(prepared)):
                cache.rows[item.sha256] = features.reshape(-1).astype(head.feature_dtype)
                if features.ndim > 1:
                    cache.extra[item.sha256] = list(features.shape)
            if progress:
                progress("advance", len(batch_items))
            cache.save()
    return {it.sha256: cache.rows[it.sha256].astype(np.float32).reshape(cache.extra.get(it.sha256, (-1,)))
            for it in items if it.sha256 in cache}


def agreement(head: TrainableHead, params: Any, items: Sequence[Reviewed], feats: Mapping[str, np.ndarray],
              device: str) -> Agreement:
    """How well the tags given with ``params`` agree with the user on ``items``."""
    result = Agreement()
    if not items:
        return result
    given = head.given(params, np.stack([feats[it.sha256] for it in items]), device)
    for it, g in zip(items, given):
        result.add(g, it.yes, head.universe)
    return result


def next_version_name(settings: Settings, base: str) -> str:
    root = base.split("-ft")[0]
    n = 1
    while (settings.models_dir / f"{root}-ft{n}").exists():
        n += 1
    return f"{root}-ft{n}"


def finetune(
    library: Library, model: str | None = None, *, epochs: int = 100, name: str | None = None,
    held_out: float = 0.3, device: str | None = None, write: bool = True, progress: ProgressFn | None = None,
    lr: float = 3e-3, tagger: Tagger | None = None, distill: float = DISTILL_WEIGHT,
) -> FinetuneResult:
    """Fine-tune the head of ``model`` (or of ``tagger``, a tagger of that model whose settings the
    new version keeps) on the reviewed photos; write the new version unless ``write`` is False."""
    started = time.perf_counter()
    settings = library.settings
    base_name = model or settings.default_model
    tagger = tagger or get_tagger(settings, base_name, user_thresholds=False)
    device = training_device(device or settings.get("device"))
    head = trainable_head(tagger)
    with library.session() as session:
        reviewed = load_reviewed(session)
    if len(reviewed) < 2:
        raise LearnError("too few corrected photos to fine-tune: fix some tags with `phototag tag add/remove` first")
    feats = cached_features(settings, head, reviewed, device, progress)
    reviewed = [it for it in reviewed if it.sha256 in feats]
    train, held = split_held_out(reviewed, held_out)
    before = agreement(head, head.initial(device), held, feats, device)
    trained, losses = head.train(train, feats, epochs, device, lr, distill)
    after = agreement(head, trained, held, feats, device)
    result = FinetuneResult(
        name=name or next_version_name(settings, base_name), base=base_name, path=None, weights_sha256=None,
        epochs=epochs, train_photos=len(train), held_out_photos=len(held), before=before, after=after,
        device=device, losses=losses,
    )
    if write:
        # the version that is registered learns from every reviewed photo
        final = head.train(reviewed, feats, epochs, device, lr, distill)[0] if held else trained
        result.path, result.weights_sha256 = write_version(settings, result, head, head.head_state(final),
                                                           len(reviewed))
    result.seconds = time.perf_counter() - started
    tagger.close()
    return result


def write_version(settings: Settings, result: FinetuneResult, head: TrainableHead, state: dict,
                  photos: int) -> tuple[Path, str]:
    """Write ``<home>/models/<result.name>/`` (head file, then ``finetune.json``); its dir and weights sha256."""
    from safetensors.torch import save_file

    target = model_dir(settings, result.name)
    if target.exists() and not (target / FINETUNE_FILE).exists():
        raise LearnError(f"{target} exists and is not a fine-tuned version: pick another --name")
    target.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(target / HEAD_FILE) as tmp:
        save_file(state, str(tmp))
    head_sha = sha256_file(target / HEAD_FILE)
    base_sha = head.base_weights_sha256
    weights_sha = hashlib.sha256(f"{base_sha}:{head_sha}".encode()).hexdigest()
    atomic.write_json(target / FINETUNE_FILE, {
        **head.version_record(),
        "format": FINETUNE_FORMAT, "name": result.name, "based_on": result.base,
        "base_weights_sha256": base_sha, "head_sha256": head_sha, "weights_sha256": weights_sha,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "epochs": result.epochs,
        "photos": photos, "held_out": {"before": result.before.as_dict(), "after": result.after.as_dict()},
    }, indent=2, sort_keys=True)
    return target, weights_sha
