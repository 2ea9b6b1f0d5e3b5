"""The tagging path of a RAM-class model as an ONNX file: exported once per pack and phototag version.

The graph is image → ``(logits [B, C], image_embeds [B, 1 + tokens, D])``: everything
:meth:`~phototag.tagging.ram_tagger.RamTagger.predict` needs for tags and the RAM/RAM++ embedding
(``image_embeds[:, 0]``). Tag2Text's captions stay in torch (the beam search reads ``image_embeds``).

Files live in the pack's folder, ``runtime/``, named by kind, weights hash, phototag version and export
format; each
has a ``.json`` beside it saying what exporting (or quantising) cost. The fp32 graph keeps its weights
in a file of their own (``<name>.onnx.data``, ONNX external data): ONNX Runtime maps that file into
memory instead of reading it into a copy, so a session costs the weights once (issue 13's bound: a
RAM-class scan within the pack's size + 1 GB). One process exports at a time (a lock file); the files
are written in a temp folder and renamed, graph last, so a killed export leaves a whole export or none;
a new export removes the files of older phototag versions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

from phototag.atomic import fsync_dir, replacing, write_json

log = logging.getLogger(__name__)

RUNTIME_DIR = "runtime"
OPSET = 18


#: bump when what an export holds changes (2: RAM++'s one description table, weights in external data)
EXPORT_FORMAT = 2


def _stem(kind: str, weights_sha256: str) -> str:
    from phototag import __version__

    return f"{kind}-{weights_sha256[:16]}-phototag{__version__}-x{EXPORT_FORMAT}"


def _cost(path: Path) -> float | None:
    try:
        return float(json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ram_plus_queries(model, image_embeds):
    """RAM++'s :meth:`~phototag.tagging.models.ram.RAMPlus.label_queries` with its description table
    (4585 × 51 × 512, 457 MiB) read in one layout by both products: as written there, the export holds
    it twice (transposed for ``cls @ tableᵀ``, reshaped for the mix) and the runtime a third time."""
    import torch
    import torch.nn.functional as F

    cls = image_embeds[:, 0]
    cls = cls / cls.norm(dim=-1, keepdim=True)
    table = model.label_embed.view(model.arch.num_classes, -1, model.label_embed.shape[1])  # C, D, 512
    sims = torch.matmul(table, (model.reweight_scale.exp() * cls).t())  # C, D, B
    weights = F.softmax(sims, dim=1).transpose(1, 2)  # C, B, D
    mixed = torch.matmul(weights, table).transpose(0, 1)  # B, C, 512
    return F.relu(model.wordvec_proj(mixed))


def tagging_path_module(model):
    """``model`` (RAM / RAM++ / Tag2Text) as a module ``x -> (logits, image_embeds)``."""
    import torch

    from ..models.ram import GroupWiseLinear, RAMPlus

    class TaggingPath(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            embeds = self.inner.image_embeds(x)
            fc = getattr(self.inner, "fc", None)
            if isinstance(fc, GroupWiseLinear):
                # Tag2Text's (W · h).sum(-1) as one contraction: the broadcast-multiply-reduce form
                # came out wrong in OpenVINO 2026.4's CPU plugin (max |Δlogit| 0.23 on a tiny model).
                q = self.inner.label_embed.weight.unsqueeze(0).expand(embeds.shape[0], -1, -1)
                h = self.inner.tagging_head.tag_queries(q, embeds)
                logits = torch.einsum("bch,ch->bc", h, fc.W[0]) + fc.b
            elif isinstance(self.inner, RAMPlus):
                h = self.inner.tagging_head.tag_queries(_ram_plus_queries(self.inner, embeds), embeds)
                logits = self.inner.fc(h).squeeze(-1)
            else:
                logits = self.inner.logits_from_embeds(embeds)
            return logits, embeds

    return TaggingPath(model).eval()


def _check_export(module, onnx_file: Path, image_size: int) -> None:
    """The export computes what torch computes (ONNX Runtime, fp32, a seeded input of 2 photos): an
    exporter that got an operator wrong fails here, before any photo is tagged with it."""
    import numpy as np
    import torch

    from phototag.tagging.base import TaggerError

    try:
        import onnxruntime as ort
    except ImportError:  # OpenVINO only: it reads the same file; the benchmark's agreement check remains
        return
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    want = module(x)[0].float().numpy()
    got = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"pixels": x.numpy()})[0]
    diff = float(np.abs(want - got).max())
    if not diff <= 1e-3 * max(1.0, float(np.abs(want).max())):
        raise TaggerError(f"the ONNX export of this model differs from torch (max |Δlogit| {diff:.3g}); "
                          "set backend = \"torch\"")


@contextlib.contextmanager
def _quiet():
    """The exporter and the quantiser warn at length about things that do not matter here."""
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _batched_matmuls(path: Path) -> list[str]:
    """MatMul nodes with a constant of more than 2 dimensions (RAM++'s description table): per-channel
    int8 cannot quantise a batched operand, so those stay fp32."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    batched = {t.name for t in graph.initializer if len(t.dims) > 2}
    return [n.name for n in graph.node if n.op_type == "MatMul" and batched.intersection(n.input)]


class Exports:
    """The exported files of one pack (``runtime/`` in its folder). ``exports`` counts real exports."""

    def __init__(self, pack_dir: Path, kind: str, weights_sha256: str) -> None:
        self.folder = Path(pack_dir) / RUNTIME_DIR
        self.stem = _stem(kind, weights_sha256)
        self.kind = kind
        self.exports = 0

    def fp32_path(self) -> Path:
        return self.folder / f"{self.stem}.onnx"

    def int8_path(self) -> Path:
        return self.folder / f"{self.stem}.int8.onnx"

    def cost(self, precision: str) -> float | None:
        """Seconds the export (plus the quantisation for int8) took when it was made; None if not made yet."""
        fp32 = _cost(self.fp32_path())
        if precision != "int8" or fp32 is None:
            return fp32
        int8 = _cost(self.int8_path())
        return None if int8 is None else fp32 + int8

    def data_path(self) -> Path:
        """The fp32 graph's weights (ONNX external data, beside the graph)."""
        return self.folder / f"{self.stem}.onnx.data"

    def size(self, precision: str) -> int:
        """Bytes on disk of the export a precision runs (graph + weights); 0 if not made."""
        files = [self.int8_path()] if precision == "int8" else [self.fp32_path(), self.data_path()]
        return sum(f.stat().st_size for f in files if f.is_file())

    def onnx(self, load_model: Callable[[], object], image_size: int = 384) -> Path:
        """The fp32 ONNX file, exported from ``load_model()`` (a float32 CPU model) if not there yet."""
        path = self.fp32_path()
        if path.is_file():
            return path
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        # several scans starting together on one pack: the first exports, the others wait and reuse it
        with FileLock(str(self.folder / f"{self.stem}.lock"), timeout=3600):
            if not path.is_file():
                self._export(load_model, image_size)
        return path

    def _export(self, load_model: Callable[[], object], image_size: int) -> None:
        import shutil
        import tempfile

        import onnx
        import torch

        path = self.fp32_path()
        t0 = time.perf_counter()
        module = tagging_path_module(load_model())
        for stale in self.folder.glob(f".{self.stem}.*"):  # what a killed export left (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{self.stem}.", dir=self.folder))
        try:
            whole = work / "whole.onnx"
            with _quiet(), torch.inference_mode():
                torch.onnx.export(
                    module, (torch.zeros(1, 3, image_size, image_size),), str(whole),
                    input_names=["pixels"], output_names=["logits", "image_embeds"],
                    dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}, "image_embeds": {0: "batch"}},
                    opset_version=OPSET, dynamo=False,
                )
                graph = onnx.load(str(whole))
                whole.unlink()
                split = work / path.name
                onnx.save_model(graph, str(split), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=self.data_path().name, size_threshold=1024)
                del graph
                _check_export(module, split, image_size)
            for done in (work / self.data_path().name, split):  # the graph last: it marks a whole export
                with open(done, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(done, self.folder / done.name)
            fsync_dir(self.folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        seconds = time.perf_counter() - t0
        write_json(path.with_suffix(".json"), {"seconds": round(seconds, 2), "what": "torch.onnx.export"})
        self.exports += 1
        log.info("exported %s in %.1f s", path, seconds)
        self._prune()

    def int8(self, load_model: Callable[[], object], image_size: int = 384) -> Path:
        """The fp32 export with its MatMul/Gemm weights quantised to int8 (ONNX Runtime dynamic quantisation)."""
        path = self.int8_path()
        if path.is_file():
            return path
        src = self.onnx(load_model, image_size)
        from onnxruntime.quantization import QuantType, quantize_dynamic

        t0 = time.perf_counter()
        with replacing(path) as tmp, _quiet():
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=_batched_matmuls(src))
        seconds = time.perf_counter() - t0
        write_json(path.with_suffix(".json"), {"seconds": round(seconds, 2), "what": "quantize_dynamic int8"})
        self.exports += 1
        return path

    def _prune(self) -> None:
        """Remove the exports of other weights or phototag versions (they are never read again)."""
        for old in self.folder.glob(f"{self.kind}-*"):
            if not old.name.startswith(self.stem + "."):
                with contextlib.suppress(OSError):
                    old.unlink()


__all__ = ["Exports", "RUNTIME_DIR", "tagging_path_module"]
