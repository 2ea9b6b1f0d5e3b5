"""Runtimes for a RAM-class tagging path: a prepared batch in, ``(logits, image_embeds)`` out.

* :class:`TorchRunner` — eager torch on the tagger's device, fp32 / bf16 / fp16 (autocast with the
  matmul weights stored in the lower precision once), inputs pinned and copied asynchronously to a GPU.
* :class:`OnnxRuntimeRunner` — ONNX Runtime's CPU provider on the exported graph (fp32, or int8 weights).
* :class:`OpenVinoRunner` — OpenVINO's CPU plugin on the same graph, fp32 or bf16 as its inference precision.

Every runner takes a float32 numpy batch and returns float32 numpy arrays, so the tagger's
thresholds, embedding and captions do not care which one ran, and the exported runtimes never import
torch (this module imports it only for :class:`TorchRunner`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from .choice import require_runtime


def autocast_context(device: Any, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class TorchRunner:
    backend = "torch"

    def __init__(self, model: Any, device: Any, precision: str) -> None:
        self.model = model
        self.device = device
        self.precision = precision

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, image_embeds)`` as float32 numpy arrays; :meth:`run_tensors` keeps them torch tensors."""
        logits, embeds = self.run_tensors(x)
        return logits.cpu().numpy(), embeds.float().cpu().numpy()

    def run_tensors(self, x: Any) -> tuple[Any, Any]:
        """``(logits float32, image_embeds)`` as torch tensors on the device (the caption decoder reads them)."""
        import torch

        with torch.inference_mode():
            x = torch.as_tensor(x)
            if self.device.type == "cuda":
                # page-locked host memory lets the copy overlap with the GPU's work on the previous batch
                x = x.pin_memory().to(self.device, non_blocking=True)
            elif self.device.type != "cpu":
                x = x.to(self.device)
            with autocast_context(self.device, self.precision):
                embeds = self.model.image_embeds(x)
                logits = self.model.logits_from_embeds(embeds)
            return logits.float(), embeds


class OnnxRuntimeRunner:
    backend = "onnxruntime"

    def __init__(self, path, precision: str, threads: int) -> None:
        require_runtime("onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if precision != "int8":
            # Memory, at no measured cost in speed (RAM++ fp32, AMD EPYC, issue 13): pre-packing copies
            # every MatMul weight while the mapped weights file stays resident, and the memory pattern
            # keeps one block per planned tensor beside the arena (batch 1: 1785 → 1633 MiB peak).
            options.add_session_config_entry("session.disable_prepacking", "1")
            options.enable_mem_pattern = False
        self.precision = precision
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embeds = self.session.run(None, {"pixels": np.ascontiguousarray(x, dtype=np.float32)})
        return logits, embeds


class OpenVinoRunner:
    backend = "openvino"

    def __init__(self, path, precision: str, threads: int) -> None:
        require_runtime("openvino")
        import openvino as ov

        config = {
            # explicit: on CPUs with AVX512-BF16/AMX OpenVINO would otherwise run bf16 when asked for fp32
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": max(1, threads),
        }
        self.precision = precision
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        logits, embeds = (out[port] for port in self.compiled.outputs)
        return np.array(logits, copy=True), np.array(embeds, copy=True)


__all__ = ["OnnxRuntimeRunner", "OpenVinoRunner", "TorchRunner", "autocast_context"]
