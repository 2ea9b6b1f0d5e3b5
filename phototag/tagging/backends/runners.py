"""Runtimes for a RAM-class tagging path: a prepared batch in, ``(logits, image_embeds)`` out.

* :class:`TorchRunner` — eager torch on the tagger's device, fp32 / bf16 / fp16 (autocast with the
  matmul weights stored in the lower precision once), inputs pinned and copied asynchronously to a GPU.
* :class:`OnnxRuntimeRunner` — ONNX Runtime's CPU provider on the exported graph (fp32, or int8 weights).
* :class:`OpenVinoRunner` — OpenVINO's CPU plugin on the same graph, fp32 or bf16 as its inference precision.

Every runner returns float32 CPU-or-device torch tensors, so the tagger's thresholds, embedding and
captions do not care which one ran.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .choice import require_runtime


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class TorchRunner:
    backend = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str) -> None:
        self.model = model
        self.device = device
        self.precision = precision

    @torch.inference_mode()
    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cuda":
            # page-locked host memory lets the copy overlap with the GPU's work on the previous batch
            x = x.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            x = x.to(self.device)
        with autocast_context(self.device, self.precision):
            embeds = self.model.image_embeds(x)
            logits = self.model.logits_from_embeds(embeds)
        return logits.float(), embeds


def _threads() -> int:
    return max(1, torch.get_num_threads())


class OnnxRuntimeRunner:
    backend = "onnxruntime"

    def __init__(self, path, precision: str) -> None:
        require_runtime("onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.precision = precision
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embeds = self.session.run(None, {"pixels": np.ascontiguousarray(x.numpy(), dtype=np.float32)})
        return torch.from_numpy(logits), torch.from_numpy(embeds)


class OpenVinoRunner:
    backend = "openvino"

    def __init__(self, path, precision: str) -> None:
        require_runtime("openvino")
        import openvino as ov

        config = {
            # explicit: on CPUs with AVX512-BF16/AMX OpenVINO would otherwise run bf16 when asked for fp32
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": _threads(),
        }
        self.precision = precision
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.request.infer({0: np.ascontiguousarray(x.numpy(), dtype=np.float32)})
        logits, embeds = (out[port] for port in self.compiled.outputs)
        return torch.from_numpy(np.array(logits, copy=True)), torch.from_numpy(np.array(embeds, copy=True))


__all__ = ["OnnxRuntimeRunner", "OpenVinoRunner", "TorchRunner", "autocast_context"]
