"""The RAM / RAM++ / Tag2Text tagger: photo → official preprocessing → model → tags, embedding, caption.

``prepare`` reproduces ``ram/transform.py::get_transform(384)`` bit for bit (SPEC §3): RGB, Pillow
BILINEAR resize to 384×384 (aspect ratio not kept), ``/255``, ImageNet mean/std. The photo it gets
is already EXIF-oriented by phototag's decoder (the official scripts ignore EXIF orientation; we
deliberately do not).

``predict`` runs one batched forward and returns per photo:

* tags with ``sigmoid(logit) > threshold`` (strict), scores kept, Chinese names for RAM/RAM++;
  Tag2Text's duplicate names are merged (highest score);
* RAM/RAM++: the 512-d ``image_proj(swin(x))[:, 0]`` embedding, L2-normalised (CLIP ViT-B/16-like space);
* Tag2Text with caption modules: the caption from the predicted tags (official beam search), when
  the caption module is available.

Precision: ``fp32`` (default on CPU; matches the official logits to ~1e-5), ``bf16`` (CPU autocast
where the CPU supports it, e.g. AMX/AVX512-BF16; or CUDA), ``fp16`` (CUDA only). ``auto`` = fp32 on
CPU, bf16 (else fp16) on CUDA.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .base import Prediction, Tagger, TaggerError, TagScore
from .vocab import Vocabulary

IMAGE_SIZE = 384
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_MEAN = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)


def preprocess(image: Image.Image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """``[3, size, size]`` float32, identical to torchvision Resize((s, s)) + ToTensor + Normalize."""
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    resized = rgb.resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float().div(255)
    return x.sub_(_MEAN).div_(_STD)


def cpu_supports_bf16() -> bool:
    """True when oneDNN has fast bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - depends on the torch build
        return False


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TaggerError("device 'cuda' asked for, but no CUDA GPU is available")
    return dev


def resolve_precision(precision: str | None, device: torch.device) -> str:
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise TaggerError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise TaggerError("fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise TaggerError("this CPU has no fast bf16 support (AVX512-BF16/AMX); use fp32")
    return precision


def lower_precision_weights(model: torch.nn.Module, precision: str) -> None:
    """Store the tagging path's matmul weights in bf16/fp16 once, instead of autocast re-casting them per call.

    Only ``nn.Linear`` / ``nn.Conv2d`` weights of the image encoder, projections and tagging head and
    the RAM/RAM++ ``label_embed`` are converted: exactly the tensors autocast would cast to that dtype
    for every forward anyway, so results are unchanged (LayerNorms, biases of the caption modules and
    the word embeddings stay float32). Halves their memory and saves the per-call casts.
    """
    if precision == "fp32":
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    for name in ("visual_encoder", "image_proj", "tagging_head", "wordvec_proj", "fc"):
        part = getattr(model, name, None)
        if part is None:
            continue
        for module in part.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.to(dtype)
    label = getattr(model, "label_embed", None)
    if isinstance(label, torch.nn.Parameter):
        label.data = label.data.to(dtype)


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class RamTagger(Tagger):
    """A RAM / RAM++ / Tag2Text model pack as a :class:`~phototag.tagging.base.Tagger`.

    ``weights`` is a converted ``.safetensors`` (see :mod:`phototag.tagging.weights`); the model is
    loaded on the first :meth:`predict` and freed by :meth:`close`.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        weights: Path | str,
        vocabulary: Vocabulary,
        weights_sha256: str,
        *,
        device: str | None = None,
        precision: str | None = None,
        threshold: float | None = None,
        captions: bool = True,
        bert_vocab: Path | str | None = None,
        batch_size: int | None = None,
        model_id: str | None = None,
        arch: Any = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.model_id = model_id or f"{kind}/{name}"
        self.weights_path = Path(weights)
        self.vocab = vocabulary.with_threshold(threshold) if threshold is not None else vocabulary
        self._sha256 = weights_sha256
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.embedding_dim = 512 if kind in ("ram", "ram_plus") else None
        self.captions = captions and kind == "tag2text" and bert_vocab is not None
        self.bert_vocab = Path(bert_vocab) if bert_vocab else None
        self.batch_size = batch_size or (16 if self.device.type == "cuda" else 4)
        self.arch = arch  # a RamArch other than the released one (tests)
        self._model: torch.nn.Module | None = None
        self._tokenizer = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------- contract
    @property
    def weights_sha256(self) -> str:
        return self._sha256

    def settings(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "precision": self.precision,
            "device": self.device.type,
            "captions": self.captions,
            **self.vocab.settings(),
        }

    def vocabulary(self) -> Sequence[str]:
        """Class names in class order (Tag2Text's list repeats some names)."""
        return list(self.vocab.names)

    def tag_names_zh(self) -> Mapping[str, str]:
        if self.vocab.names_zh is None:
            return {}
        out: dict[str, str] = {}
        for en, zh in zip(self.vocab.names, self.vocab.names_zh):
            out.setdefault(en, zh)
        return out

    def prepare(self, image: Image.Image) -> torch.Tensor:
        return preprocess(image)

    # ---------------------------------------------------------------------------------- model
    def load(self) -> torch.nn.Module:
        with self._lock:
            if self._model is None:
                from .weights import load_pack_model

                model, kind = load_pack_model(self.weights_path, captioning=self.captions or None, arch=self.arch)
                if kind.kind != self.kind:
                    raise TaggerError(f"{self.weights_path} holds a {kind.kind} model, expected {self.kind}")
                self.vocab.check_classes(kind.num_classes)
                if self.captions:
                    from .tokenizer import BertTokenizer

                    self._tokenizer = BertTokenizer.from_vocab_file(self.bert_vocab)
                if self.device.type == "cuda":
                    model = model.to(self.device)
                lower_precision_weights(model, self.precision)
                self._model = model
            return self._model

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._tokenizer = None

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw model outputs for a prepared batch: ``logits`` [B, C] float32, ``image_embeds``, ``embedding``."""
        model = self.load()
        x = x.to(self.device)
        with autocast_context(self.device, self.precision):
            embeds = model.image_embeds(x)
            logits = model.logits_from_embeds(embeds)
        out = {"logits": logits.float(), "image_embeds": embeds}
        if self.embedding_dim:
            out["embedding"] = embeds[:, 0].float()
        return out

    def predict(self, batch: list[Any]) -> list[Prediction]:
        if not batch:
            return []
        x = torch.stack([torch.as_tensor(b) for b in batch])
        out = self.forward(x)
        scores = torch.sigmoid(out["logits"]).cpu().numpy().astype(np.float32)
        predictions = []
        tag_strings = []
        for row in scores:
            ids = self.vocab.selected(row)
            predictions.append(Prediction(tags=self._tags(ids, row), scores=row))
            tag_strings.append(" | ".join(self.vocab.names[i] for i in ids))
        if "embedding" in out:
            emb = torch.nn.functional.normalize(out["embedding"], dim=-1).cpu().numpy().astype(np.float32)
            for p, e in zip(predictions, emb):
                p.embedding = e
        if self.captions:
            for p, caption in zip(predictions, self._captions(out["image_embeds"], tag_strings)):
                p.caption = caption
        return predictions

    def _tags(self, ids: np.ndarray, row: np.ndarray) -> list[TagScore]:
        best: dict[str, TagScore] = {}
        for i in ids:
            name = self.vocab.names[i]
            zh = self.vocab.names_zh[i] if self.vocab.names_zh is not None else None
            score = float(row[i])
            if name not in best or score > best[name].score:
                best[name] = TagScore(name=name, score=score, name_zh=zh)
        return list(best.values())

    def _captions(self, image_embeds: torch.Tensor, tag_strings: list[str]) -> list[str | None]:
        try:
            from .models.caption import generate_caption
        except ImportError:  # pragma: no cover - the caption module ships with phototag
            return [None] * len(tag_strings)
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            return generate_caption(self._model, image_embeds, tag_strings, self._tokenizer)
