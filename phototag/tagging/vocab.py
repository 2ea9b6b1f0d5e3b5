"""Tag vocabularies of RAM / RAM++ / Tag2Text: names (EN, ZH), per-class thresholds, deleted classes.

Official behaviour reproduced (SPEC §5, §7, §8):

* tag files are read with ``str.splitlines()``; index = class id. We strip names (the Chinese list
  has trailing spaces the official output keeps);
* RAM / RAM++ thresholds come from ``ram_tag_list_threshold.txt`` (one float per class);
* Tag2Text: 0.68 everywhere, 0.7 for 2701 person / 2828 man / 1167 woman, and classes
  127 quarter, 2961 back, 3351 two, 3265 three, 3338 four, 3355 five, 3359 one are never output;
* a class is given when ``sigmoid(logit) > threshold`` (strict, as ``generate_tag``).

A user threshold replaces every class's threshold (still strict ``>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import TaggerError

TAG2TEXT_THRESHOLD = 0.68
TAG2TEXT_CLASS_THRESHOLDS = {2701: 0.7, 2828: 0.7, 1167: 0.7}  # person, man, woman
TAG2TEXT_DELETED = (127, 2961, 3351, 3265, 3338, 3355, 3359)  # quarter, back, two, three, four, five, one
#: names expected at those indices in the official 3429-tag list (guards against another list)
_TAG2TEXT_ANCHORS = {2701: "person", 2828: "man", 1167: "woman", 127: "quarter", 3359: "one"}


class VocabularyError(TaggerError):
    """A tag, Chinese-name or threshold file is missing, malformed or does not match the model."""


def read_lines(path: Path | str, what: str) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VocabularyError(f"{what} file {path} does not exist") from None
    except UnicodeDecodeError:
        raise VocabularyError(f"{what} file {path} is not UTF-8 text") from None
    return text.splitlines()


def read_tag_list(path: Path | str, what: str = "tag list") -> list[str]:
    names = [line.strip() for line in read_lines(path, what)]
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise VocabularyError(f"{what} {path}: empty name on line(s) {', '.join(str(i + 1) for i in empty[:10])}")
    return names


def read_thresholds(path: Path | str) -> np.ndarray:
    values = []
    for i, line in enumerate(read_lines(path, "threshold")):
        try:
            v = float(line.strip())
        except ValueError:
            raise VocabularyError(f"threshold file {path}, line {i + 1}: {line!r} is not a number") from None
        if not 0.0 <= v <= 1.0:
            raise VocabularyError(f"threshold file {path}, line {i + 1}: {v} is outside [0, 1]")
        values.append(v)
    return np.asarray(values, dtype=np.float32)


@dataclass(frozen=True)
class Vocabulary:
    """Class names and the rule that turns scores into tags."""

    names: tuple[str, ...]
    thresholds: np.ndarray = field(compare=False)  #: float32 [C]
    names_zh: tuple[str, ...] | None = None
    deleted: frozenset[int] = frozenset()
    threshold_override: float | None = None

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.thresholds.shape != (n,):
            raise VocabularyError(f"{self.thresholds.shape[0]} thresholds for {n} tags")
        if self.names_zh is not None and len(self.names_zh) != n:
            raise VocabularyError(f"{len(self.names_zh)} Chinese names for {n} tags")
        bad = [i for i in self.deleted if not 0 <= i < n]
        if bad:
            raise VocabularyError(f"deleted class ids out of range: {bad}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def effective_thresholds(self) -> np.ndarray:
        if self.threshold_override is None:
            return self.thresholds
        return np.full(len(self.names), self.threshold_override, dtype=np.float32)

    def with_threshold(self, value: float | None) -> "Vocabulary":
        """The same vocabulary with every class's threshold replaced by ``value`` (None = own)."""
        if value is not None and not 0.0 <= value <= 1.0:
            raise VocabularyError(f"threshold {value} is outside [0, 1]")
        return replace(self, threshold_override=value)

    def selected(self, scores: np.ndarray) -> np.ndarray:
        """Class ids with ``score > threshold`` (strict), deleted classes removed, in class order."""
        scores = np.asarray(scores)
        # compare in float32 like the official torch code (sigmoid output vs float32 thresholds)
        hit = scores.astype(np.float32) > self.effective_thresholds
        if self.deleted:
            hit[list(self.deleted)] = False
        return np.flatnonzero(hit)

    def check_classes(self, num_classes: int) -> None:
        if len(self.names) != num_classes:
            raise VocabularyError(
                f"the tag list has {len(self.names)} names but the checkpoint has {num_classes} classes"
            )

    def settings(self) -> dict:
        return {
            "threshold": self.threshold_override,
            "thresholds": "override" if self.threshold_override is not None else "per-class",
            "deleted": sorted(self.deleted),
        }


def ram_vocabulary(
    tags: Path | str, thresholds: Path | str | None = None, tags_zh: Path | str | None = None
) -> Vocabulary:
    """RAM / RAM++ vocabulary; without a threshold file every class uses the official default 0.68."""
    names = read_tag_list(tags)
    th = read_thresholds(thresholds) if thresholds else np.full(len(names), 0.68, dtype=np.float32)
    if len(th) != len(names):
        raise VocabularyError(f"threshold file {thresholds} has {len(th)} values for {len(names)} tags")
    zh = tuple(read_tag_list(tags_zh, "Chinese tag list")) if tags_zh else None
    if zh is not None and len(zh) != len(names):
        raise VocabularyError(f"Chinese tag list {tags_zh} has {len(zh)} names for {len(names)} tags")
    return Vocabulary(tuple(names), th, zh)


def tag2text_vocabulary(tags: Path | str, thresholds: Path | str | None = None) -> Vocabulary:
    """Tag2Text vocabulary: the official fixed thresholds and deleted classes for the official list."""
    names = read_tag_list(tags)
    official = len(names) == 3429 and all(names[i] == n for i, n in _TAG2TEXT_ANCHORS.items())
    if thresholds:
        th = read_thresholds(thresholds)
        if len(th) != len(names):
            raise VocabularyError(f"threshold file {thresholds} has {len(th)} values for {len(names)} tags")
    else:
        th = np.full(len(names), TAG2TEXT_THRESHOLD, dtype=np.float32)
        if official:
            for i, v in TAG2TEXT_CLASS_THRESHOLDS.items():
                th[i] = v
    deleted = frozenset(TAG2TEXT_DELETED) if official else frozenset()
    return Vocabulary(tuple(names), th, None, deleted)


def vocabulary_for(
    kind: str,
    tags: Path | str,
    thresholds: Path | str | None = None,
    tags_zh: Path | str | None = None,
) -> Vocabulary:
    if kind == "tag2text":
        if tags_zh:
            raise VocabularyError("Tag2Text has no Chinese tag list")
        return tag2text_vocabulary(tags, thresholds)
    return ram_vocabulary(tags, thresholds, tags_zh)


def unique_names(names: Sequence[str]) -> list[str]:
    """Names in first-seen order without repeats (the Tag2Text list has 116 duplicates)."""
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n, None)
    return list(seen)
