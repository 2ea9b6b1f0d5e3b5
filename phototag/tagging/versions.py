"""What the user made of a model: per-tag thresholds and fine-tuned versions — read here, written by
:mod:`phototag.learn`.

Layout in the library home::

    <home>/models/<name>/thresholds.user.json   per-tag thresholds (``phototag calibrate --apply``)
    <home>/models/<version>/finetune.json       a fine-tuned model version (``phototag finetune``)
    <home>/models/<version>/head.safetensors    its tagging head

The registry (:func:`phototag.tagging.registry.get_tagger`) loads a version with
:func:`load_finetuned_tagger` and applies the thresholds with :class:`ThresholdedTagger`; learning
writes the files (:mod:`phototag.learn.calibrate`, :mod:`phototag.learn.finetune`) in this layout.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from phototag.config import Settings
from phototag.ingest.fingerprint import sha256_file
from phototag.tagging.base import ForwardingTagger, Prediction, Tagger, TaggerError, TagScore
from phototag.tagging.builtin import BuiltinTagger, load_efficientnet

THRESHOLDS_FILE = "thresholds.user.json"
FINETUNE_FILE = "finetune.json"
HEAD_FILE = "head.safetensors"
FINETUNE_FORMAT = "phototag-finetune/1"
#: the modules of a RAM / RAM++ model that a fine-tuned version replaces (the rest is the pack's)
RAM_HEAD_MODULES = ("tagging_head", "wordvec_proj", "fc")
#: settings of the built-in tagger a fine-tuned version keeps from the tagger it was tuned from
BUILTIN_VERSION_SETTINGS = ("top_k", "min_score", "category_min_score", "faces", "face_min_score",
                            "portrait_min_face", "precision")


def model_dir(settings: Settings, name: str) -> Path:
    """``<home>/models/<name>``: where the user's thresholds and fine-tuned versions of a model live."""
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


class ThresholdedTagger(ForwardingTagger):
    """Another tagger with the user's per-tag thresholds applied to its full score vector.

    A tag with a user threshold is given exactly when its score reaches the threshold; every other
    tag is given as the inner tagger decided. Needs ``Prediction.scores`` aligned with
    ``vocabulary()``; without them only tags the inner tagger gave can be dropped (never added).
    """

    def __init__(self, inner: Tagger, thresholds: Mapping[str, float]):
        super().__init__(inner)
        self.thresholds = dict(thresholds)

    def settings(self) -> dict[str, Any]:
        blob = json.dumps(self.thresholds, sort_keys=True).encode()
        return {**self.inner.settings(), "user_thresholds": len(self.thresholds),
                "user_thresholds_sha256": hashlib.sha256(blob).hexdigest()}

    def predict(self, batch: list[Any]) -> list[Prediction]:
        return [self.apply(p) for p in self.inner.predict(batch)]

    def apply(self, prediction: Prediction) -> Prediction:
        return Prediction(tags=apply_thresholds(prediction, self.vocabulary(), self.thresholds),
                          embedding=prediction.embedding, caption=prediction.caption, scores=prediction.scores)


# ---- fine-tuned versions ------------------------------------------------------------------------


def read_version(settings: Settings, name: str) -> dict[str, Any] | None:
    """The ``finetune.json`` of version ``name``, or None when ``name`` is not a fine-tuned version."""
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


def _version_settings(base: Mapping[str, Any], version: Mapping[str, Any]) -> dict[str, Any]:
    return {**base, "finetuned_head_sha256": version["head_sha256"],
            "base_weights_sha256": version["base_weights_sha256"]}


class FinetunedBuiltinTagger(BuiltinTagger):
    """The built-in tagger with a fine-tuned classifier (made by :mod:`phototag.learn.finetune`)."""

    def __init__(self, name: str, head_path: Path, version: dict, **kwargs):
        super().__init__(**kwargs)
        self.name = name
        self.head_path = head_path
        self.version = version

    @cached_property
    def base_weights_sha256(self) -> str:
        """sha256 of the backbone weights file (the version's own hash covers the head too)."""
        try:
            return sha256_file(self.weights_path)
        except OSError as e:
            raise TaggerError(f"cannot read the built-in model's weights: {e}") from e

    @property
    def weights_sha256(self) -> str:  # type: ignore[override]
        return self.version["weights_sha256"]

    def settings(self) -> dict[str, Any]:
        return _version_settings(super().settings(), self.version)

    def _load(self):
        import torch
        from safetensors.torch import load_file

        with self._lock:
            if self._model is None:
                model = load_efficientnet(self.weights_path)
                state = load_file(str(self.head_path))
                fc = model.get_classifier()
                if set(state) != {"weight", "bias"} or state["weight"].shape != fc.weight.shape:
                    raise TaggerError(f"{self.head_path}: not a head for EfficientNet-Lite0 (keys {sorted(state)})")
                with torch.no_grad():
                    fc.weight.copy_(state["weight"])
                    fc.bias.copy_(state["bias"])
                self._model = model.eval()
            return self._model


def overlay_ram_head(model, state: dict, source: str) -> None:
    """Copy a saved head into a RAM / RAM++ ``model``: every key must exist with the same shape, and
    every head parameter of the model must be given (no silent partial loads)."""
    import torch

    own = model.state_dict()
    expected = {k for k in own if k.split(".", 1)[0] in RAM_HEAD_MODULES}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    wrong = sorted(k for k in set(state) & expected if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        raise TaggerError(f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                          f"wrong shape {wrong[:5]}")
    with torch.no_grad():
        for k in expected:
            own[k].copy_(state[k].to(own[k].dtype))


class FinetunedRamTagger(ForwardingTagger):
    """A RAM pack tagger whose head is replaced by a fine-tuned one: the pack's tagger with the head laid
    over its model when it loads (:meth:`~phototag.tagging.ram_tagger.RamTagger.with_head`), so the
    version runs on the same runtimes as its pack, with an export of its own in the version's folder."""

    def __init__(self, inner, name: str, head_path: Path, version: dict):
        super().__init__(inner.with_head(head_path, version["weights_sha256"], Path(head_path).parent), name)
        self.head_path = head_path
        self.version = version

    @property
    def weights_sha256(self) -> str:  # type: ignore[override]
        return self.version["weights_sha256"]

    def settings(self) -> dict[str, Any]:
        return _version_settings(self.inner.settings(), self.version)


def load_finetuned_tagger(settings: Settings, name: str, version: dict, pack: Tagger | None = None) -> Tagger:
    """The fine-tuned version ``name`` (``version``: its ``finetune.json``). A version of a pack is
    loaded on top of ``pack``, the tagger of the pack it was tuned from (the registry resolves it)."""
    head_path = model_dir(settings, name) / HEAD_FILE
    if not head_path.is_file():
        raise TaggerError(f"{name}: {head_path} is missing")
    if version.get("base") == "pack":
        if pack is None or pack.weights_sha256 != version["base_weights_sha256"]:
            raise TaggerError(f"{name} was fine-tuned from other weights of pack {version['base_pack']!r}")
        return FinetunedRamTagger(pack, name, head_path, version)
    if version.get("base") != "builtin":
        raise TaggerError(f"{name}: fine-tuned versions of {version.get('base')!r} cannot be loaded")
    kwargs = {k: v for k, v in (version.get("settings") or {}).items() if k in BUILTIN_VERSION_SETTINGS}
    if kwargs.get("face_min_score") is None:
        kwargs.pop("face_min_score", None)
    tagger = FinetunedBuiltinTagger(name, head_path, version, **kwargs)
    if tagger.base_weights_sha256 != version["base_weights_sha256"]:
        raise TaggerError(f"{name} was fine-tuned from other built-in weights "
                          f"({version['base_weights_sha256'][:12]}…, now {tagger.base_weights_sha256[:12]}…)")
    return tagger
