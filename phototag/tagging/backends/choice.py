"""Which runtime and precision a RAM-class pack uses here: the ``backend`` setting and its ``auto``.

``phototag models benchmark NAME`` measures every candidate on this machine and records, in the pack's
folder (``benchmark.json``, written atomically), photos/s and the tag-set agreement (Jaccard) of each
with torch fp32, keyed by a fingerprint of the machine: CPU model, the instruction-set flags that decide
which kernels run, core count and the versions of torch / ONNX Runtime / OpenVINO. ``auto`` reads the
record for this fingerprint and takes the fastest candidate whose tags agree (mean Jaccard ≥
:data:`ELIGIBLE_JACCARD`). Without a record for this machine ``auto`` is torch at the precision ``auto``
gives — a scan never starts a benchmark by itself; when the pack was measured on another machine (or
with other library versions) a notice says to measure again.

Nothing here imports torch or the runtimes: the fingerprint reads versions from package metadata.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from phototag.atomic import write_json

from ..base import TaggerError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
#: precisions each runtime offers on the CPU (int8 = dynamic quantisation of the weights)
CPU_PRECISIONS = {"torch": ("fp32", "bf16"), "onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16")}
#: packages to install for a runtime
PIP_NAMES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
RECORD_FILE = "benchmark.json"
RECORD_VERSION = 2  #: 2: candidates carry their memory (records without it are measured again)
#: a candidate is eligible for ``auto`` when its tags agree this well with torch fp32 (mean Jaccard)
ELIGIBLE_JACCARD = 0.98
#: what a scan's process holds besides the model: Python, the libraries, decoding, the database (a whole
#: scan with the built-in model peaks at ~272 MiB); a candidate fits when its memory + this ≤ pack + 1 GiB
SCAN_RESERVE_MIB = 256

#: CPU flags that decide which kernels torch / oneDNN / ORT / OpenVINO pick
_ISA_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16", "i8mm")


@dataclass(frozen=True)
class Candidate:
    """One measured runtime + precision."""

    backend: str
    precision: str
    photos_per_s: float
    jaccard: float = 1.0  #: mean tag-set Jaccard with torch fp32 over the photos
    load_s: float = 0.0  #: loading the runtime and tagging the first photo (an export is made before, apart)
    export_s: float | None = None  #: what exporting / quantising cost (once per pack and phototag version)
    note: str = ""
    #: what tagging with it adds to a process (peak RSS growth while loading and running it, plus torch's
    #: own import for torch); None where the OS does not say
    memory_mib: float | None = None
    fits_memory: bool = True  #: memory_mib + SCAN_RESERVE_MIB within the pack's size + 1 GiB

    @property
    def eligible(self) -> bool:
        return self.jaccard >= ELIGIBLE_JACCARD and self.photos_per_s > 0 and self.fits_memory

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


@dataclass(frozen=True)
class Choice:
    """What a tagger runs with, and why."""

    backend: str
    precision: str
    reason: str


def _cpu_info() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and value.strip():
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
                if not line.strip() and flags:
                    break  # the first processor says it all
    except OSError:  # not Linux
        if platform.system() == "Darwin":
            model = platform.processor() or "apple"
    return model, sorted(f for f in _ISA_FLAGS if f in flags)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_fingerprint() -> dict[str, Any]:
    """What makes a measurement on this machine valid (or stale) for another run."""
    model, flags = _cpu_info()
    try:
        from phototag import __version__ as phototag_version
    except ImportError:  # pragma: no cover
        phototag_version = None
    return {
        "cpu": model,
        "machine": platform.machine(),
        "isa": flags,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
        "phototag": phototag_version,
    }


def fingerprint_key(fingerprint: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def read_record(pack_dir: Path) -> dict[str, Any]:
    path = Path(pack_dir) / RECORD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable benchmark record %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) and data.get("version") == RECORD_VERSION else {}


def best_candidate(candidates: Iterable[Candidate], backend: str = "auto", precision: str = "auto") -> Candidate | None:
    """The fastest eligible candidate that fits the ``backend`` / ``precision`` settings."""
    fitting = [c for c in candidates if c.eligible and backend in ("auto", c.backend)
               and precision in ("auto", c.precision)]
    return max(fitting, key=lambda c: c.photos_per_s, default=None)


def write_record(pack_dir: Path, weights_sha256: str, candidates: list[Candidate], device: str,
                 fingerprint: Mapping[str, Any] | None = None) -> Path:
    """Store this machine's measurement of a pack (other machines' entries are kept)."""
    fingerprint = dict(fingerprint or machine_fingerprint())
    data = read_record(pack_dir) or {"version": RECORD_VERSION, "machines": {}}
    best = best_candidate(candidates)
    data.setdefault("machines", {})[fingerprint_key(fingerprint)] = {
        "fingerprint": fingerprint,
        "weights_sha256": weights_sha256,
        "device": device,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "candidates": [asdict(c) for c in candidates],
        "choice": {"backend": best.backend, "precision": best.precision} if best else None,
    }
    path = Path(pack_dir) / RECORD_FILE
    write_json(path, data)
    return path


def recorded_candidates(pack_dir: Path, weights_sha256: str, device: str,
                        fingerprint: Mapping[str, Any] | None = None) -> tuple[list[Candidate] | None, bool]:
    """(this machine's measured candidates or None, whether the pack was measured on another machine)."""
    machines = read_record(pack_dir).get("machines") or {}
    key = fingerprint_key(fingerprint or machine_fingerprint())
    entry = machines.get(key)
    if entry and entry.get("weights_sha256") == weights_sha256 and entry.get("device") == device:
        fields = set(Candidate.__dataclass_fields__)
        return [Candidate(**{k: v for k, v in c.items() if k in fields}) for c in entry.get("candidates", [])], False
    return None, bool(machines)


def choose_backend(backend: str | None, precision: str | None, device: str, pack_dir: Path | None,
                   weights_sha256: str, default_precision: str,
                   fingerprint: Mapping[str, Any] | None = None) -> Choice:
    """Resolve the ``backend`` and ``precision`` settings for a pack on ``device``.

    ``default_precision`` is what the precision ``auto`` gives for torch on this device (see
    :mod:`phototag.tagging.device`); an explicit ``precision`` has been checked there already.
    """
    backend = backend or "auto"
    precision = precision or "auto"
    if backend not in BACKENDS:
        raise TaggerError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if device != "cpu":
        if backend not in ("auto", "torch"):
            raise TaggerError(f"the {backend} backend runs on the CPU only; set device = \"cpu\" or backend = \"torch\"")
        return Choice("torch", default_precision if precision == "auto" else precision, f"torch on {device}")
    if backend != "auto":
        allowed = CPU_PRECISIONS[backend]
        if precision != "auto" and precision not in allowed:
            raise TaggerError(f"the {backend} backend runs {' or '.join(allowed)}, not {precision}")
    measured, elsewhere = (recorded_candidates(pack_dir, weights_sha256, device, fingerprint)
                           if pack_dir is not None else (None, False))
    if measured is not None:
        best = best_candidate(measured, backend, precision)
        if best is not None:
            return Choice(best.backend, best.precision,
                          f"measured here: {best.photos_per_s:.3g} photos/s, tags agree {best.jaccard:.3f} with fp32")
    chosen = backend
    if backend == "auto":
        # not measured here: fp32 in ONNX Runtime when it is installed (the export is checked against
        # torch, so the tags are fp32's; 1.8x torch eager on the project's CPUs), unless a precision
        # only torch runs (bf16) was asked for
        fp32 = precision in ("auto", "fp32") and default_precision == "fp32"
        chosen = "onnxruntime" if fp32 and _version(PIP_NAMES["onnxruntime"]) is not None else "torch"
        if elsewhere:
            log.warning("this model was benchmarked on another machine (or with other library versions); "
                        "run `phototag models benchmark` to let backend = auto choose here (using %s fp32 "
                        "meanwhile)", chosen)
    if precision == "auto":
        precision = default_precision if default_precision in CPU_PRECISIONS[chosen] else "fp32"
    return Choice(chosen, precision, "not measured on this machine" if backend == "auto" else "asked for")


def require_runtime(backend: str) -> None:
    """Fail with a one-line install hint when the runtime package is missing."""
    if backend in PIP_NAMES and _version(PIP_NAMES[backend]) is None:
        raise TaggerError(f"backend {backend!r} needs the {PIP_NAMES[backend]} package: "
                          f"pip install {PIP_NAMES[backend]}")


__all__ = [
    "BACKENDS", "CPU_PRECISIONS", "Candidate", "Choice", "ELIGIBLE_JACCARD", "RECORD_FILE", "SCAN_RESERVE_MIB",
    "best_candidate",
    "choose_backend", "fingerprint_key", "machine_fingerprint", "read_record", "recorded_candidates",
    "require_runtime", "write_record",
]
