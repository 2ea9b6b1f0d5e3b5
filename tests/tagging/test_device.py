"""Device and precision choice: pure functions of the machine's facts (no GPU or Mac needed to test them)."""

from __future__ import annotations

import pytest

from phototag.tagging.base import TaggerError
from phototag.tagging.device import DeviceFacts, choose_device, choose_precision, device_facts, resolve_device

CPU_ONLY = DeviceFacts()
MAC = DeviceFacts(mps=True)
AMPERE = DeviceFacts(cuda=True, cuda_bf16=True)
TURING = DeviceFacts(cuda=True, cuda_bf16=False)
AMX_CPU = DeviceFacts(cpu_bf16=True)


@pytest.mark.parametrize("facts, device", [(CPU_ONLY, "cpu"), (MAC, "mps"), (AMPERE, "cuda"),
                                           (DeviceFacts(cuda=True, mps=True), "cuda")])
def test_auto_prefers_cuda_then_mps_then_cpu(facts, device):
    assert choose_device("auto", facts) == device
    assert choose_device(None, facts) == device


def test_asked_devices_are_kept_or_refused_when_missing():
    assert choose_device("cpu", AMPERE) == "cpu"
    assert choose_device("cuda:1", AMPERE) == "cuda:1"
    assert choose_device("mps", MAC) == "mps"
    with pytest.raises(TaggerError, match="no CUDA GPU"):
        choose_device("cuda", MAC)
    with pytest.raises(TaggerError, match="MPS"):
        choose_device("mps", CPU_ONLY)
    with pytest.raises(TaggerError, match="unknown device"):
        choose_device("tpu", CPU_ONLY)


def test_auto_precision_per_device():
    assert choose_precision("auto", "cpu", AMX_CPU) == "fp32"  # bf16 on the CPU only when asked
    assert choose_precision("auto", "cuda", AMPERE) == "bf16"
    assert choose_precision("auto", "cuda", TURING) == "fp16"
    assert choose_precision("auto", "mps", MAC) == "fp16"


def test_precisions_a_device_cannot_run_are_refused():
    assert choose_precision("fp32", "mps", MAC) == "fp32"
    assert choose_precision("bf16", "cpu", AMX_CPU) == "bf16"
    with pytest.raises(TaggerError, match="no fast bf16"):
        choose_precision("bf16", "cpu", CPU_ONLY)
    with pytest.raises(TaggerError, match="fp16 needs a CUDA GPU or Apple's MPS"):
        choose_precision("fp16", "cpu", AMX_CPU)
    with pytest.raises(TaggerError, match="bf16 is not supported on Apple's MPS"):
        choose_precision("bf16", "mps", MAC)
    with pytest.raises(TaggerError, match="unknown precision"):
        choose_precision("int8", "cpu", CPU_ONLY)


def test_this_machine_resolves_to_a_device_it_has():
    facts = device_facts()
    device = resolve_device("auto")
    assert device.type == choose_device("auto", facts).split(":")[0]
    if not facts.cuda:
        with pytest.raises(TaggerError):
            resolve_device("cuda")


def test_the_cpu_is_known_without_torch_where_no_gpu_driver_is_there(tmp_path, monkeypatch):
    """``device_name`` answers ``cpu`` without asking torch when ``cpu`` is asked for, or ``auto`` on a
    machine without NVIDIA/ROCm/WSL GPU files that is not a Mac; anything else asks torch."""
    from phototag.tagging import device

    asked = []
    monkeypatch.setattr(device, "resolve_device", lambda d: asked.append(d) or "cuda")
    monkeypatch.setattr(device.sys, "platform", "linux")
    monkeypatch.setattr(device, "GPU_DRIVER_FILES", (str(tmp_path / "no-driver"),))
    assert device.device_name("cpu") == device.device_name("auto") == device.device_name(None) == "cpu"
    assert asked == []
    (tmp_path / "driver").write_text("NVRM version: 550")
    monkeypatch.setattr(device, "GPU_DRIVER_FILES", (str(tmp_path / "driver"),))
    assert device.device_name("auto") == "cuda" and asked == ["auto"]  # a driver: torch decides
    monkeypatch.setattr(device, "GPU_DRIVER_FILES", ())
    monkeypatch.setattr(device.sys, "platform", "darwin")
    assert device.device_name("auto") == "cuda" and asked == ["auto", "auto"]  # a Mac may have MPS
    assert device.device_name("cuda:1") == "cuda"  # asked by name: torch checks it


def test_resolve_precision_on_the_cpu_needs_torch_only_for_bf16(monkeypatch):
    from phototag.tagging import device

    monkeypatch.setattr(device, "device_facts", lambda: pytest.fail("asked torch"))
    assert device.resolve_precision("auto", "cpu") == device.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(TaggerError, match="fp16 needs"):
        device.resolve_precision("fp16", "cpu")
