"""Model versions made from the user's corrections, and the user's per-tag thresholds.

Layout in the library home::

    <home>/models/<name>/thresholds.user.json   per-tag thresholds from ``phototag calibrate --apply``
    <home>/models/<version>/finetune.json       a fine-tuned model version (``phototag finetune``)
    <home>/models/<version>/head.safetensors    its tagging head

:func:`load_model` is how every command (through ``registry.get_tagger``) gets a
tagger by name: a fine-tuned version if one has that name, else the registry's tagger; then the
user's thresholds, if any, are applied by :class:`ThresholdedTagger`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from phototag import atomic
from phototag.config import Settings
from phototag.tagging.base import Prediction, Tagger, TaggerError, TagScore

THRESHOLDS_FILE = "thresholds.user.json"
FINETUNE_FILE = "finetune.json"
HEAD_FILE = "head.safetensors"
FINETUNE_FORMAT = "phototag-finetune/1"


def write_json_atomic(path: Path, data: Any) -> None:
    atomic.write_json(path, data, indent=2, sort_keys=True)


def model_dir(settings: Settings, name: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise TaggerError(f"{name!r} is not a valid model name")
    return settings.models_dir / name


# ---- user thresholds ----------------------------------------------------------------------------


def thresholds_path(settings: Settings, name: str) -> Path:
    return model_dir(settings, name) / THRESHOLDS_FILE


def read_user_thresholds(settings: Settings, name: str) -> dict[str, float]:
    """``tag → threshold`` from ``thresholds.user.json`` (empty when there is none)."""
    path = thresholds_path(settings, name)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in data.get("thresholds", {}).items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise TaggerError(f"{path}: unreadable user thresholds ({exc}); delete it or run phototag calibrate --apply") from exc


def write_user_thresholds(settings: Settings, name: str, thresholds: Mapping[str, float], info: Mapping[str, Any]) -> Path:
    path = thresholds_path(settings, name)
    write_json_atomic(path, {"model": name, "thresholds": {k: round(float(v), 6) for k, v in sorted(thresholds.items())},
                             **dict(info)})
    return path


class ThresholdedTagger(Tagger):
    """Another tagger with the user's per-tag thresholds applied to its full score vector.

    A tag with a user threshold is given exactly when its score reaches the threshold; every other
    tag is given as the inner tagger decided. Needs ``Prediction.scores`` aligned with
    ``vocabulary()``; without them only tags the inner tagger gave can be dropped (never added).
    """

    def __init__(self, inner: Tagger, thresholds: Mapping[str, float]):
        self.inner = inner
        self.thresholds = dict(thresholds)
        self.name = inner.name
        self.model_id = inner.model_id
        self.embedding_dim = inner.embedding_dim
        self.batch_size = inner.batch_size
        self._index: dict[str, int] | None = None

    @property
    def weights_sha256(self) -> str:  # type: ignore[override]
        return self.inner.weights_sha256

    def settings(self) -> dict[str, Any]:
        blob = json.dumps(self.thresholds, sort_keys=True).encode()
        return {**self.inner.settings(), "user_thresholds": len(self.thresholds),
                "user_thresholds_sha256": hashlib.sha256(blob).hexdigest()}

    def tag_parents(self):
        return self.inner.tag_parents()

    def tag_names_zh(self):
        return self.inner.tag_names_zh()

    def vocabulary(self) -> Sequence[str]:
        return self.inner.vocabulary()

    def prepare(self, image):
        return self.inner.prepare(image)

    def close(self) -> None:
        self.inner.close()

    def predict(self, batch: list[Any]) -> list[Prediction]:
        return [self.apply(p) for p in self.inner.predict(batch)]

    def apply(self, prediction: Prediction) -> Prediction:
        return Prediction(tags=apply_thresholds(prediction, self.vocabulary(), self.thresholds),
                          embedding=prediction.embedding, caption=prediction.caption, scores=prediction.scores)


def vocabulary_index(vocabulary: Sequence[str]) -> dict[str, list[int]]:
    """tag name → its class indices (Tag2Text's vocabulary repeats some names; a tag's score is the max)."""
    index: dict[str, list[int]] = {}
    for i, name in enumerate(vocabulary):
        index.setdefault(name, []).append(i)
    return index


def apply_thresholds(prediction: Prediction, vocabulary: Sequence[str], thresholds: Mapping[str, float]) -> list[TagScore]:
    """The tags of ``prediction`` after the per-tag ``thresholds`` (see :class:`ThresholdedTagger`)."""
    if not thresholds:
        return list(prediction.tags)
    kept = {t.name: t for t in prediction.tags if t.name not in thresholds or t.score >= thresholds[t.name]}
    if prediction.scores is not None and len(prediction.scores) == len(vocabulary):
        index = vocabulary_index(vocabulary)
        zh = {t.name: t.name_zh for t in prediction.tags}
        for name, threshold in thresholds.items():
            i = index.get(name)
            if i is None:
                continue
            score = float(np.max(prediction.scores[i]))
            if score >= threshold:
                kept.setdefault(name, TagScore(name, score, zh.get(name)))
            else:
                kept.pop(name, None)
    return sorted(kept.values(), key=lambda t: (-t.score, t.name))


# ---- fine-tuned versions ------------------------------------------------------------------------


def read_version(settings: Settings, name: str) -> dict[str, Any] | None:
    path = model_dir(settings, name) / FINETUNE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TaggerError(f"{path}: unreadable model version ({exc})") from exc
    if data.get("format") != FINETUNE_FORMAT:
        raise TaggerError(f"{path}: unknown format {data.get('format')!r}")
    return data


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    """Every fine-tuned model version in the home (``finetune.json`` contents), by name."""
    if not settings.models_dir.is_dir():
        return []
    found = []
    for child in sorted(settings.models_dir.iterdir()):
        if (child / FINETUNE_FILE).is_file():
            data = read_version(settings, child.name)
            if data is not None:
                found.append(data)
    return found


def load_base_tagger(settings: Settings, name: str | None) -> Tagger:
    """A tagger by name without the user thresholds: a fine-tuned version, else the registry's."""
    from phototag.tagging import registry

    name = name or settings.default_model
    version = read_version(settings, name) if name != registry.BUILTIN else None
    if version is not None:
        from phototag.learn.finetune import load_finetuned_tagger

        return load_finetuned_tagger(settings, name, version)
    return registry.get_base_tagger(settings, name)


def load_model(settings: Settings, name: str | None = None) -> Tagger:
    """The tagger called ``name`` (default: the default model) with the user's thresholds applied."""
    name = name or settings.default_model
    tagger = load_base_tagger(settings, name)
    thresholds = read_user_thresholds(settings, name)
    return ThresholdedTagger(tagger, thresholds) if thresholds else tagger
