"""What fine-tuning needs from a model: the contract of a trainable tagging head, and the labels.

:func:`phototag.learn.finetune.finetune` is one flow for every model (cached backbone features →
train the head → held-out agreement → save a version); a :class:`TrainableHead` is the part that
depends on the model: :class:`phototag.learn.builtin_head.BuiltinHead` (the built-in model's
classifier) and :class:`phototag.learn.ram_head.RamHead` (the tagging head of RAM / RAM++).

Both train on the same labels with the same loss shape: a logistic loss on the distance of each
tag's score to the bar the tagger gives it at, signed by the user's answer, each answer weighted
(removals and manual adds :data:`EXPLICIT_WEIGHT`, "nobody gave it and the user did not add it"
:data:`IMPLICIT_NO_WEIGHT`), plus :data:`DISTILL_WEIGHT` × a distillation term toward the original
head that keeps it where the user said nothing.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from phototag.learn.corrections import Reviewed
from phototag.tagging.base import Tagger

EXPLICIT_WEIGHT = 5.0  #: weight of a removal / manual add relative to an implicit answer
#: weight of "nobody gave this tag and the user did not add it" (hundreds per photo, mostly obvious)
IMPLICIT_NO_WEIGHT = 0.2
#: weight of the distillation term, for every head. Measured with ``bench/bench_learning.py --sweep``
#: (docs/retag.md): from 1.0 to 0.1 held-out F1 rises 0.458 → 0.578 while the tags changed on photos the
#: user did not correct stay about the same (0.21 → 0.27 per photo); below 0.1 F1 gains little more and
#: those changes more than double (0.64 per photo without distillation).
DISTILL_WEIGHT = 0.1

#: a photo's answers as column numbers: (the user says yes, the user said so explicitly)
Answers = tuple[set[int], set[int]]


def answers(items: Sequence[Reviewed], column: Mapping[str, int]) -> list[Answers]:
    """Per photo, the columns (``column``: tag name → column) the user says yes to, and those the
    user corrected explicitly (removed or added); tags without a column are left out."""
    out = []
    for it in items:
        yes = {column[n] for n in it.yes if n in column}
        explicit = {column[n] for n in (it.removed | it.added) if n in column}
        out.append((yes, explicit))
    return out


def targets(rows: Sequence[Answers], columns: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``y`` (1 = yes) and loss weights ``w``, ``[len(rows), len(columns)]``, of ``columns``."""
    position = {c: j for j, c in enumerate(columns)}
    y = np.zeros((len(rows), len(columns)), dtype=np.float32)
    w = np.full_like(y, IMPLICIT_NO_WEIGHT)
    for i, (yes, explicit) in enumerate(rows):
        for c in yes:
            if c in position:
                y[i, position[c]], w[i, position[c]] = 1.0, 1.0
        for c in explicit:
            if c in position:
                w[i, position[c]] = EXPLICIT_WEIGHT
    return y, w


class TrainableHead(abc.ABC):
    """The model-specific part of fine-tuning. ``params`` is whatever the head trains (arrays, a module)."""

    tagger: Tagger
    #: the tags agreement is measured on (those the head can change)
    universe: set[str]
    #: names the feature cache file, ``<home>/cache/learn/features-<cache_name>.npz``
    cache_name: str
    #: how cached features are stored
    feature_dtype: Any = np.float32
    #: photos per feature batch
    feature_batch: int = 8

    @abc.abstractmethod
    def embedder(self, device: str) -> tuple[Callable[[Any], Any], Callable[[list], np.ndarray]]:
        """(prepare one photo, frozen features of a batch of prepared photos → ``[B, ...]`` float32)."""

    @abc.abstractmethod
    def initial(self, device: str) -> Any:
        """The head's params as the model has them now."""

    @abc.abstractmethod
    def train(self, items: Sequence[Reviewed], feats: Mapping[str, np.ndarray], epochs: int, device: str,
              lr: float, distill: float, seed: int = 0) -> tuple[Any, list[float]]:
        """Trained params (starting from :meth:`initial`) and the loss of each epoch."""

    @abc.abstractmethod
    def given(self, params: Any, features: np.ndarray, device: str) -> list[set[str]]:
        """The tags (of :attr:`universe`) the tagger gives each photo with ``params``."""

    @abc.abstractmethod
    def head_state(self, params: Any) -> dict:
        """``params`` as the tensors of ``head.safetensors``."""

    @property
    @abc.abstractmethod
    def base_weights_sha256(self) -> str:
        """sha256 of the weights the head is trained on top of."""

    @abc.abstractmethod
    def version_record(self) -> dict[str, Any]:
        """What ``finetune.json`` says about the base (``base`` …) for the loader."""
