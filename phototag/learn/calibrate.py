"""``phototag calibrate``: per-tag thresholds tuned on the user's corrections.

For each tag of the model's vocabulary with at least ``min_corrections`` explicit corrections
(removals + manual adds) among the training photos, pick the score threshold that makes the fewest
disagreements with the user on the reviewed training photos (a threshold in the middle of the best
range, for margin) — and keep it only if it beats what the model does today on those photos.

Agreement (precision/recall over every vocabulary tag of every reviewed photo) is reported before
and after on a **held-out** split of reviewed photos (stable, by content hash) that the thresholds
never saw. With ``--apply`` the thresholds are fitted again on every reviewed photo and written to
``<home>/models/<name>/thresholds.user.json`` (this module is its only writer); the registry
(:func:`phototag.tagging.registry.get_tagger`) applies them, so the next ``phototag retag`` uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from phototag import atomic
from phototag.config import Settings
from phototag.learn.corrections import (
    Agreement,
    LearnError,
    Reviewed,
    load_reviewed,
    model_outputs,
    split_held_out,
)
from phototag.library import Library
from phototag.tagging.base import Prediction, TagScore
from phototag.tagging.registry import get_tagger
from phototag.tagging.versions import apply_thresholds, read_user_thresholds, thresholds_path, vocabulary_index


@dataclass
class TunedTag:
    tag: str
    threshold: float
    positives: int
    negatives: int
    errors_before: int
    errors_after: int


@dataclass
class CalibrationResult:
    model: str
    reviewed: int
    train_photos: int
    held_out_photos: int
    tuned: list[TunedTag]
    before: Agreement
    after: Agreement
    applied: Path | None = None
    applied_thresholds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "reviewed_photos": self.reviewed, "train_photos": self.train_photos,
            "held_out_photos": self.held_out_photos,
            "tuned": [t.__dict__ for t in self.tuned],
            "held_out_before": self.before.as_dict(), "held_out_after": self.after.as_dict(),
            "applied": str(self.applied) if self.applied else None,
            "applied_thresholds": self.applied_thresholds,
        }


def write_user_thresholds(settings: Settings, name: str, thresholds: Mapping[str, float], info: Mapping[str, Any]) -> Path:
    """Write ``thresholds.user.json`` of model ``name`` (``info``: how they were fitted); its path."""
    path = thresholds_path(settings, name)
    atomic.write_json(path, {"model": name, "thresholds": {k: round(float(v), 6) for k, v in sorted(thresholds.items())},
                             **dict(info)}, indent=2, sort_keys=True)
    return path


def _model_tags(scores: np.ndarray, tags: Sequence[str], vocabulary: Sequence[str], thresholds: Mapping[str, float]) -> set[str]:
    index = vocabulary_index(vocabulary)
    prediction = Prediction(
        tags=[TagScore(t, float(np.max(scores[index[t]])) if t in index else 1.0) for t in tags], scores=scores
    )
    return {t.name for t in apply_thresholds(prediction, vocabulary, thresholds)}


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """The threshold with the fewest errors (score ≥ t ⇔ label), the middle of the best range."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order].astype(np.float64), labels[order].astype(bool)
    distinct = np.unique(s)
    candidates = np.concatenate([[max(0.0, distinct[0] / 2)], (distinct[:-1] + distinct[1:]) / 2,
                                 [min(1.0, distinct[-1] + (1.0 - distinct[-1]) / 2) if distinct[-1] < 1 else 1.0]])
    errors = np.array([int(np.sum((s >= t) != y)) for t in candidates])
    best = errors.min()
    winners = np.flatnonzero(errors == best)
    # the middle of the first contiguous run of best candidates
    run_end = winners[0]
    while run_end + 1 < len(candidates) and errors[run_end + 1] == best:
        run_end += 1
    lo, hi = candidates[winners[0]], candidates[run_end]
    return float((lo + hi) / 2), int(best)


def fit_thresholds(
    items: Sequence[Reviewed], scores: Mapping[str, np.ndarray], tags: Mapping[str, list[str]],
    vocabulary: Sequence[str], current: Mapping[str, float], min_corrections: int = 3,
) -> tuple[dict[str, float], list[TunedTag]]:
    """Per-tag thresholds from reviewed photos (see the module docstring)."""
    items = [it for it in items if it.sha256 in scores]
    if not items:
        return dict(current), []
    vocab = set(vocabulary)
    index = vocabulary_index(vocabulary)
    counts: dict[str, int] = {}
    for it in items:
        for name in (it.removed | it.added) & vocab:
            counts[name] = counts.get(name, 0) + 1
    matrix = np.stack([scores[it.sha256] for it in items])
    given_now = [_model_tags(scores[it.sha256], tags[it.sha256], vocabulary, current) for it in items]
    result = dict(current)
    tuned = []
    for name, n in sorted(counts.items()):
        if n < min_corrections:
            continue
        column = matrix[:, index[name]].max(axis=1)
        labels = np.array([name in it.yes for it in items])
        threshold, errors = best_threshold(column, labels)
        errors_now = sum((name in g) != bool(y) for g, y in zip(given_now, labels))
        if errors < errors_now:
            result[name] = threshold
            tuned.append(TunedTag(name, round(threshold, 4), int(labels.sum()), int((~labels).sum()), errors_now, errors))
    return result, tuned


def agreement(items: Sequence[Reviewed], scores, tags, vocabulary, thresholds) -> Agreement:
    result = Agreement()
    universe = set(vocabulary)
    for it in items:
        if it.sha256 in scores:
            result.add(_model_tags(scores[it.sha256], tags[it.sha256], vocabulary, thresholds), it.yes, universe)
    return result


def calibrate(
    library: Library, model: str | None = None, *, apply: bool = False, min_corrections: int = 3,
    held_out: float = 0.3, progress=None, tagger=None,
) -> CalibrationResult:
    """Fit per-tag thresholds for ``model`` (or for ``tagger``, an already built tagger of that name)
    and report held-out agreement before/after; with ``apply`` write them for the next re-tag."""
    settings = library.settings
    name = model or (tagger.name if tagger is not None else settings.default_model)
    tagger = tagger or get_tagger(settings, name, user_thresholds=False)
    vocabulary = list(tagger.vocabulary())
    if not vocabulary:
        raise LearnError(f"model {name} has no vocabulary to calibrate")
    with library.session() as session:
        reviewed = load_reviewed(session)
    if not reviewed:
        raise LearnError("no corrections yet: fix some tags with `phototag tag add/remove` first")
    scores, tags = model_outputs(settings, tagger, reviewed, progress)
    current = read_user_thresholds(settings, name)
    train, held = split_held_out(reviewed, held_out)
    fitted, tuned = fit_thresholds(train, scores, tags, vocabulary, current, min_corrections)
    result = CalibrationResult(
        model=name, reviewed=len(reviewed), train_photos=len(train), held_out_photos=len(held), tuned=tuned,
        before=agreement(held, scores, tags, vocabulary, current),
        after=agreement(held, scores, tags, vocabulary, fitted),
    )
    if apply:
        final, final_tuned = fit_thresholds(reviewed, scores, tags, vocabulary, current, min_corrections)
        result.applied = write_user_thresholds(settings, name, final, {
            "fitted_on_photos": len(reviewed), "min_corrections": min_corrections,
            "held_out": {"before": result.before.as_dict(), "after": result.after.as_dict()},
        })
        result.applied_thresholds = {t.tag: t.threshold for t in final_tuned}
    tagger.close()
    return result
