"""The tagger contract: what every model (built-in, RAM, RAM++, Tag2Text, plugin) provides.

A tagger is used in two steps so that the expensive parts can run in different places:

* :meth:`Tagger.prepare` turns one decoded photo (a Pillow RGB image, EXIF orientation already
  applied) into whatever the model needs (usually a CHW float tensor). It runs in the decode
  worker pool, many photos at once, and must be thread-safe and free of model state.
* :meth:`Tagger.predict` takes a list of prepared inputs and returns one :class:`Prediction`
  per input. It runs in the single inference thread that owns the model.

Models are loaded lazily on the first :meth:`predict` call, so constructing a tagger is cheap.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from phototag.errors import PhototagError

if TYPE_CHECKING:  # annotations only: the error classes here are imported by commands that need neither
    import numpy as np
    from PIL import Image


@dataclass(frozen=True)
class TagScore:
    """One tag given to a photo by a model."""

    name: str  #: canonical English name (stripped), unique within the tagger's vocabulary
    score: float  #: model confidence in [0, 1]
    name_zh: str | None = None  #: Chinese name (stripped), when the model has one



def unit_rows(rows: "np.ndarray") -> "np.ndarray":
    """``rows`` divided by their L2 norm along the last axis (at least 1e-12, as torch's ``normalize``),
    in their own dtype: the form of every embedding phototag stores and compares."""
    import numpy as np

    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


@dataclass
class Prediction:
    """What a tagger says about one photo."""

    tags: list[TagScore]  #: tags that passed the tagger's thresholds (ancestors included if any)
    embedding: np.ndarray | None = None  #: float32, 1-D, L2-normalised; None if the model has none
    caption: str | None = None  #: one-sentence caption, for captioning models
    scores: np.ndarray | None = None  #: optional float32 score of every class (for calibration)


class TaggerError(PhototagError):
    """A tagger could not be built or loaded (missing files, wrong checkpoint, an unknown model name …)."""


class Tagger(abc.ABC):
    """Base class of every tagger."""

    #: registry name the user types (``builtin``, ``ram_plus``, a model pack name, …)
    name: str = ""
    #: identifies the architecture + vocabulary, e.g. ``builtin/efficientnet-lite0``
    model_id: str = ""
    #: dimension of :attr:`Prediction.embedding`, or None
    embedding_dim: int | None = None
    #: preferred batch size on the current device
    batch_size: int = 8
    #: share of a photo's CPU work spent in :meth:`prepare` (decode pool) rather than :meth:`predict`;
    #: the pipeline splits the CPU cores between decoding and the model by it
    prepare_share: float = 0.1
    #: side of the model's (square) input in pixels; the pipeline sizes GPU batches by it
    input_size: int = 224

    @property
    @abc.abstractmethod
    def weights_sha256(self) -> str:
        """sha256 of the weights file(s) in use; recorded with each model run."""

    def settings(self) -> dict[str, Any]:
        """Settings that influence the output (thresholds, precision, …); recorded per model run."""
        return {}

    def tag_parents(self) -> Mapping[str, str]:
        """child tag name → parent tag name, for tag hierarchies (empty when flat)."""
        return {}

    def tag_names_zh(self) -> Mapping[str, str]:
        """English tag name → Chinese name, when the model has Chinese names."""
        return {}

    def vocabulary(self) -> Sequence[str]:
        """All tag names this tagger can give (class order when the model has classes)."""
        return []

    @abc.abstractmethod
    def prepare(self, image: Image.Image) -> Any:
        """Turn one decoded RGB photo into model input. Thread-safe, no model state."""

    @abc.abstractmethod
    def predict(self, batch: list[Any]) -> list[Prediction]:
        """Run the model on prepared inputs; one Prediction per input, in order."""

    def close(self) -> None:
        """Free the model (it is loaded again on the next predict)."""

    def ready(self) -> None:
        """Load the model now, if it is not loaded (the pipeline calls this before the first batch, so
        a scan reports the load time apart from the tagging time). Default: nothing (loaded lazily)."""

    def set_threads(self, threads: int) -> int | None:
        """Compute :meth:`predict` with at most ``threads`` CPU threads (the pipeline's split of the
        cores between decoding and the model); returns the previous value, to restore, or None.
        Default: torch's intra-op threads, when torch is in use in this process."""
        import sys

        torch = sys.modules.get("torch")
        if torch is None or threads < 1:
            return None
        previous = torch.get_num_threads()
        if previous != threads:
            torch.set_num_threads(threads)
        return previous


class ForwardingTagger(Tagger):
    """A tagger built on another one (``inner``): everything it does not override is the inner tagger's.

    Subclasses change one thing (the thresholds, the head, …) and override only that; the identity
    attributes are copied once, at construction, and ``name`` may be given a new value.
    """

    def __init__(self, inner: Tagger, name: str | None = None):
        self.inner = inner
        self.name = name or inner.name
        self.model_id = inner.model_id
        self.embedding_dim = inner.embedding_dim
        self.batch_size = inner.batch_size
        self.prepare_share = inner.prepare_share
        self.input_size = inner.input_size

    @property
    def weights_sha256(self) -> str:  # type: ignore[override]
        return self.inner.weights_sha256

    def settings(self) -> dict[str, Any]:
        return self.inner.settings()

    def tag_parents(self) -> Mapping[str, str]:
        return self.inner.tag_parents()

    def tag_names_zh(self) -> Mapping[str, str]:
        return self.inner.tag_names_zh()

    def vocabulary(self) -> Sequence[str]:
        return self.inner.vocabulary()

    def prepare(self, image: Image.Image) -> Any:
        return self.inner.prepare(image)

    def predict(self, batch: list[Any]) -> list[Prediction]:
        return self.inner.predict(batch)

    def close(self) -> None:
        self.inner.close()

    def ready(self) -> None:
        self.inner.ready()

    def set_threads(self, threads: int) -> int | None:
        return self.inner.set_threads(threads)

    def __getattr__(self, name: str) -> Any:
        if name in ("device", "device_type"):  # where the inner model runs (the pipeline's resource plan asks)
            return getattr(self.inner, name)
        raise AttributeError(name)


@dataclass
class TaggerInfo:
    """A row of ``phototag models list``."""

    name: str
    model_id: str
    kind: str  # "builtin" | "pack" | "plugin"
    description: str = ""
    is_default: bool = False
    details: dict[str, Any] = field(default_factory=dict)
