"""Where a model runs and in which number format: the one owner of ``device`` / ``precision`` resolution.

The choice itself is pure (:func:`choose_device`, :func:`choose_precision` take the machine's facts as a
:class:`DeviceFacts`), so it is tested without the hardware; :func:`device_facts` asks torch for the facts
of this machine, and :func:`resolve_device` / :func:`resolve_precision` combine the two.

* device ``auto``: ``cuda`` when a CUDA GPU is there, else ``mps`` (Apple Silicon), else ``cpu``;
  ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are taken as asked, but refused when that device is missing.
* precision ``auto``: bf16 on a CUDA GPU that supports it (else fp16), fp16 on ``mps``, fp32 on the CPU
  (bf16 is a choice there only where oneDNN has fast bf16 kernels: AVX512-BF16 or AMX).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import TaggerError

if TYPE_CHECKING:  # torch is imported when a device is resolved, not with this module
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DeviceFacts:
    """What this machine has, as far as the device and precision choice is concerned."""

    cuda: bool = False
    cuda_bf16: bool = False  #: the CUDA GPU computes bf16 natively (Ampere and later)
    mps: bool = False
    cpu_bf16: bool = False  #: oneDNN has fast bf16 kernels on this CPU


def choose_device(requested: str | None, facts: DeviceFacts) -> str:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` for the ``device`` setting ``requested``."""
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return "cuda" if facts.cuda else "mps" if facts.mps else "cpu"
    kind = requested.split(":", 1)[0]
    if kind == "cuda":
        if not facts.cuda:
            raise TaggerError(f"device {requested!r} asked for, but no CUDA GPU is available")
        return requested
    if kind == "mps":
        if not facts.mps:
            raise TaggerError("device 'mps' asked for, but Apple's Metal (MPS) is not available")
        return "mps"
    if requested == "cpu":
        return "cpu"
    raise TaggerError(f"unknown device {requested!r}; expected auto, cpu, cuda, cuda:N or mps")


def choose_precision(requested: str | None, device_type: str, facts: DeviceFacts) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for the ``precision`` setting on a device of ``device_type``."""
    requested = requested or "auto"
    if requested not in PRECISIONS:
        raise TaggerError(f"unknown precision {requested!r}; expected one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        if device_type == "cuda":
            return "bf16" if facts.cuda_bf16 else "fp16"
        if device_type == "mps":
            return "fp16"
        return "fp32"
    if requested == "fp16" and device_type == "cpu":
        raise TaggerError("fp16 needs a CUDA GPU or Apple's MPS; on the CPU use bf16 or fp32")
    if requested == "bf16" and device_type == "mps":
        raise TaggerError("bf16 is not supported on Apple's MPS here; use fp16 or fp32")
    if requested == "bf16" and device_type == "cpu" and not facts.cpu_bf16:
        raise TaggerError("this CPU has no fast bf16 support (AVX512-BF16/AMX); use fp32")
    return requested


def cpu_supports_bf16() -> bool:
    """True when oneDNN has fast bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - depends on the torch build
        return False


def device_facts() -> DeviceFacts:
    """This machine's facts, from torch."""
    import torch

    cuda = torch.cuda.is_available()
    mps_backend = getattr(torch.backends, "mps", None)
    return DeviceFacts(
        cuda=cuda,
        cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        mps=bool(mps_backend is not None and mps_backend.is_available()),
        cpu_bf16=cpu_supports_bf16(),
    )


def resolve_device(device: str | None) -> "torch.device":
    import torch

    return torch.device(choose_device(device, device_facts()))


#: files whose presence means a GPU torch could use: NVIDIA's driver, AMD's ROCm, WSL's GPU bridge
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def device_name(device: str | None) -> str:
    """The ``device`` setting resolved to ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, asking torch only
    where the answer depends on it: ``cpu``, and ``auto`` on a machine with no GPU driver that is not
    a Mac, are the CPU without importing torch (≈ 600 MB of a process with PyPI's CUDA build), so a
    scan on ONNX Runtime never loads it."""
    requested = (device or "auto").strip().lower()
    if requested == "cpu":
        return "cpu"
    if requested == "auto" and sys.platform != "darwin" and not any(map(os.path.exists, GPU_DRIVER_FILES)):
        return "cpu"
    return str(resolve_device(device))


def resolve_precision(precision: str | None, device: "torch.device | str") -> str:
    kind = getattr(device, "type", None) or str(device).split(":", 1)[0]
    if kind == "cpu" and (precision or "auto") in ("auto", "fp32", "fp16"):
        return choose_precision(precision, kind, DeviceFacts())  # the CPU's bf16 support does not matter here
    return choose_precision(precision, kind, device_facts())


__all__ = [
    "PRECISIONS", "DeviceFacts", "choose_device", "choose_precision", "cpu_supports_bf16", "device_facts",
    "device_name", "resolve_device", "resolve_precision",
]
