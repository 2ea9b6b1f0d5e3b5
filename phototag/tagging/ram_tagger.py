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

Device and precision come from :mod:`phototag.tagging.device` (``auto``: CUDA, else Apple's MPS, else
the CPU; fp32 on the CPU, bf16/fp16 on a GPU). The runtime of the tagging path is the ``backend``
(:mod:`phototag.tagging.backends`): eager torch, or ONNX Runtime / OpenVINO on an ONNX export of it
(fp32; int8 weights on ONNX Runtime; bf16 on OpenVINO where the CPU has it); ``auto`` takes what
``phototag models benchmark`` measured fastest here among the choices whose tags agree with fp32.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from PIL import Image

from .backends.choice import Choice, choose_backend
from .base import Prediction, Tagger, TaggerError, TagScore, unit_rows
from .device import (PRECISIONS, cpu_supports_bf16, device_name, resolve_device,  # noqa: F401 (re-exported)
                     resolve_precision)
from .vocab import Vocabulary

if TYPE_CHECKING:  # torch is imported where the torch backend (or a caption) needs it, not with this module
    import torch

IMAGE_SIZE = 384
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

_MEAN = np.array(MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.array(STD, dtype=np.float32).reshape(3, 1, 1)


def preprocess(image: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """``[3, size, size]`` float32, identical to torchvision Resize((s, s)) + ToTensor + Normalize
    (the same float32 operations in the same order: ``/255``, ``- mean``, ``/ std``)."""
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    resized = rgb.resize((size, size), Image.BILINEAR)
    x = np.asarray(resized).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    x -= _MEAN
    x /= _STD
    return x


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def lower_precision_weights(model: torch.nn.Module, precision: str) -> None:
    """Store the tagging path's matmul weights in bf16/fp16 once, instead of autocast re-casting them per call.

    Only ``nn.Linear`` / ``nn.Conv2d`` weights of the image encoder, projections and tagging head and
    the RAM/RAM++ ``label_embed`` are converted: exactly the tensors autocast would cast to that dtype
    for every forward anyway, so results are unchanged (LayerNorms, biases of the caption modules and
    the word embeddings stay float32). Halves their memory and saves the per-call casts.
    """
    if precision == "fp32":
        return
    import torch

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


class RamTagger(Tagger):
    """A RAM / RAM++ / Tag2Text model pack as a :class:`~phototag.tagging.base.Tagger`.

    ``weights`` is a converted ``.safetensors`` (see :mod:`phototag.tagging.weights`); the model is
    loaded on the first :meth:`predict` and freed by :meth:`close`. ``backend`` picks the runtime of
    the tagging path (:mod:`phototag.tagging.backends`; None = torch); ``pack_dir`` (default: the weights' folder)
    holds the exported ONNX files and the benchmark record that ``backend = "auto"`` reads. ``head``: a
    fine-tuned head laid over the pack's (a version of it, :meth:`with_head`); its exports and record
    are keyed by ``export_key`` (the version's weights hash) instead of the pack's.
    """

    #: the architecture of packs loaded without an ``arch`` (None: the released one, from the weights);
    #: the tests set it to drive real commands with tiny packs, which the weights alone do not describe
    default_arch: Any = None

    #: a photo's work is nearly all in the network (Swin-L); squashing to 384 px is cheap: the pipeline
    #: gives the model the cores and decodes with one thread (phototag.ingest.pool.plan_resources)
    prepare_share = 0.02
    input_size = IMAGE_SIZE

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
        backend: str | None = None,
        pack_dir: Path | str | None = None,
        head: Path | str | None = None,
        export_key: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.model_id = model_id or f"{kind}/{name}"
        self.weights_path = Path(weights)
        self.pack_dir = Path(pack_dir) if pack_dir is not None else self.weights_path.parent
        self.vocab = vocabulary.with_threshold(threshold) if threshold is not None else vocabulary
        self._sha256 = weights_sha256
        self.device_name = device_name(device)  # without torch where that is the answer (a CPU-only machine)
        self.device_type = self.device_name.split(":", 1)[0]
        self._device: Any = None
        self._threads: int | None = None
        self.head = Path(head) if head is not None else None
        self.export_key = export_key or weights_sha256
        self._asked = (backend, precision)
        self.choice = self._choose(backend, precision)
        self.backend, self.precision = self.choice.backend, self.choice.precision
        self.embedding_dim = 512 if kind in ("ram", "ram_plus") else None
        self.captions = captions and kind == "tag2text" and bert_vocab is not None
        self.bert_vocab = Path(bert_vocab) if bert_vocab else None
        # a CPU gains nothing from batching Swin-L in fp32 (RAM++, AMD EPYC: ONNX Runtime 1.00 photos/s at
        # batch 1, 0.95 at 4) and its activations grow with the batch (1633 vs 2353 MiB peak): one at a
        # time. bf16 keeps the batch of 4 its AMX figures (~3x) were measured with.
        cpu_batch = 4 if self.precision == "bf16" else 1
        self.batch_size = batch_size or (16 if self.device_type == "cuda" else cpu_batch)
        self.arch = arch if arch is not None else self.default_arch  # a RamArch other than the released one
        self._model: torch.nn.Module | None = None
        self._runner: Any = None
        self._exports: Any = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def device(self) -> "torch.device":
        """The torch device (imports torch: the exported runtimes use :attr:`device_type`)."""
        if self._device is None:
            import torch

            self._device = torch.device(self.device_name)
        return self._device

    def set_threads(self, threads: int) -> int | None:
        """The model's CPU threads: torch's (when loaded) and those of an exported runtime opened later."""
        self._threads = threads if threads >= 1 else None
        return super().set_threads(threads)

    def _choose(self, backend: str | None, precision: str | None) -> Choice:
        # no backend given = torch, as before backends existed: a caller that patches the torch model
        # (a fine-tuned head) must not get an exported graph; the registry passes the setting
        # (and no measurement consulted: precision auto stays what the device gives)
        asked = precision or "auto"
        if asked not in ("auto", "int8"):
            asked = resolve_precision(asked, self.device_name)  # refuses what this device cannot do
        return choose_backend(backend or "torch", asked, self.device_type, self.pack_dir if backend else None,
                              self.export_key, default_precision=resolve_precision("auto", self.device_name))

    def _like(self, backend: str | None, precision: str | None, **changes: Any) -> "RamTagger":
        """A new, unloaded tagger of this pack with these settings and ``changes``."""
        settings = dict(device=self.device_name, captions=self.captions, bert_vocab=self.bert_vocab,
                        batch_size=self.batch_size, model_id=self.model_id, arch=self.arch, pack_dir=self.pack_dir,
                        head=self.head, export_key=self.export_key)
        return RamTagger(self.name, self.kind, self.weights_path, self.vocab, self._sha256, backend=backend,
                         precision=precision, **{**settings, **changes})

    def variant(self, backend: str, precision: str) -> "RamTagger":
        """The same pack with another runtime / precision (a new, unloaded tagger)."""
        return self._like(backend, precision)

    def with_head(self, head: Path | str, key: str, folder: Path | str) -> "RamTagger":
        """This pack with a fine-tuned head (``head``, a version's ``head.safetensors``): the same
        settings, resolved again for the version (``backend = auto`` reads the version's own record in
        ``folder``, where its export is kept too, keyed by ``key``, the version's weights hash)."""
        return self._like(*self._asked, pack_dir=folder, head=head, export_key=key)

    # ------------------------------------------------------------------------------- contract
    @property
    def weights_sha256(self) -> str:
        return self._sha256

    def settings(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "precision": self.precision,
            "device": self.device_type,
            "captions": self.captions,
            **self.vocab.settings(),
        }
        if self.backend != "torch":  # torch runs leave the settings as they were before backends existed
            out["backend"] = self.backend
        return out

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

    def prepare(self, image: Image.Image) -> Any:
        """The photo as the model's input: a numpy array, a torch tensor for the torch backend (pinned
        for a GPU by the pipeline)."""
        x = preprocess(image)
        if self.backend == "torch":
            import torch

            return torch.from_numpy(x)
        return x

    # ---------------------------------------------------------------------------------- model
    def _load_torch_model(self) -> torch.nn.Module:
        from .weights import load_pack_model

        model, kind = load_pack_model(self.weights_path, captioning=self.captions or None, arch=self.arch)
        if kind.kind != self.kind:
            raise TaggerError(f"{self.weights_path} holds a {kind.kind} model, expected {self.kind}")
        self.vocab.check_classes(kind.num_classes)
        if self.head is not None:
            from safetensors.torch import load_file

            from .versions import overlay_ram_head

            overlay_ram_head(model, load_file(str(self.head)), str(self.head))
        return model

    @property
    def exports(self):
        """The pack's exported ONNX files (:class:`~phototag.tagging.backends.export.Exports`)."""
        if self._exports is None:
            from .backends.export import Exports

            self._exports = Exports(self.pack_dir, self.kind, self.export_key)
        return self._exports

    def load(self) -> torch.nn.Module | None:
        """Load the runtime (exporting the ONNX file the first time a pack runs on ONNX Runtime or
        OpenVINO). Returns the torch model where one is loaded: always for torch, and for captions."""
        with self._lock:
            if self._runner is None:
                if self.captions:
                    from .tokenizer import BertTokenizer

                    self._tokenizer = BertTokenizer.from_vocab_file(self.bert_vocab)
                if self.backend == "torch":
                    from .backends.runners import TorchRunner

                    model = self._load_torch_model()
                    if self.device.type != "cpu":
                        model = model.to(self.device)
                    lower_precision_weights(model, self.precision)
                    self._model = model
                    self._runner = TorchRunner(model, self.device, self.precision)
                else:
                    self._runner = self._open_exported()
                    if self.captions:  # the caption decoder stays in torch
                        self._model = self._load_torch_model()
            return self._model

    def ready(self) -> None:
        """Load the runtime now (the pipeline reports this time apart from the tagging time)."""
        self.load()

    def export(self) -> Path | None:
        """The exported file this tagger's runtime reads, made now if it is not there yet (None for torch)."""
        from .backends.choice import require_runtime

        if self.backend == "torch":
            return None
        require_runtime(self.backend)  # before an export that would be of no use
        if self.precision == "int8":
            if self.backend != "onnxruntime":
                raise TaggerError(f"int8 runs on the onnxruntime backend, not {self.backend}")
            return self.exports.int8(self._load_torch_model)
        return self.exports.onnx(self._load_torch_model)

    def _open_exported(self):
        from .backends.runners import OnnxRuntimeRunner, OpenVinoRunner

        path = self.export()
        runner = OnnxRuntimeRunner if self.backend == "onnxruntime" else OpenVinoRunner
        from phototag.ingest.pool import usable_cpus

        return runner(path, self.precision, self._threads or usable_cpus())

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._runner = None
            self._tokenizer = None

    def forward(self, x: Any) -> dict[str, np.ndarray]:
        """Raw model outputs for a prepared batch as float32 numpy arrays: ``logits`` [B, C],
        ``image_embeds``, and ``embedding`` (RAM/RAM++: ``image_embeds[:, 0]``, not normalised)."""
        self.load()
        logits, embeds = self._runner.run(x)
        out = {"logits": logits, "image_embeds": embeds}
        if self.embedding_dim:
            out["embedding"] = embeds[:, 0]
        return out

    def predict(self, batch: list[Any]) -> list[Prediction]:
        if not batch:
            return []
        self.load()
        image_embeds = None
        if self.backend == "torch":  # as before the exported runtimes: torch's own sigmoid and normalize
            import torch

            logits, image_embeds = self._runner.run_tensors(torch.stack([torch.as_tensor(b) for b in batch]))
            scores = torch.sigmoid(logits).cpu().numpy().astype(np.float32)
            emb = (torch.nn.functional.normalize(image_embeds[:, 0].float(), dim=-1).cpu().numpy()
                   if self.embedding_dim else None)
        else:
            logits, embeds = self._runner.run(np.stack([np.asarray(b, dtype=np.float32) for b in batch]))
            scores = _sigmoid(logits)
            emb = unit_rows(embeds[:, 0].astype(np.float32)) if self.embedding_dim else None
            if self.captions:
                import torch

                image_embeds = torch.from_numpy(embeds)
        predictions = []
        tag_strings = []
        for row in scores:
            ids = self.vocab.selected(row)
            predictions.append(Prediction(tags=self._tags(ids, row), scores=row))
            tag_strings.append(" | ".join(self.vocab.names[i] for i in ids))
        if emb is not None:
            for p, e in zip(predictions, emb.astype(np.float32)):
                p.embedding = e
        if self.captions:
            for p, caption in zip(predictions, self._captions(image_embeds, tag_strings)):
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
        import torch

        from .backends.runners import autocast_context

        precision = self.precision if self.backend == "torch" else "fp32"
        embeds = image_embeds.to(self.device)
        with torch.inference_mode(), autocast_context(self.device, precision):
            return generate_caption(self._model, embeds, tag_strings, self._tokenizer)
