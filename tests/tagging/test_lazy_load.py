"""Models load only when a photo needs them: a re-scan with nothing new to tag (unchanged photos, or a
byte-identical copy whose tags are reused) never imports torch, timm or dlib, and the first scan still
tags (the built-in model in ONNX Runtime: torch and timm are not imported by a scan at all). Each scan
is its own ``phototag`` process, as a user runs it; the modules it imported are read at its exit."""

from __future__ import annotations

import shutil

from test_startup import run_phototag

MODEL_LIBRARIES = ("torch", "timm", "onnxruntime", "dlib")


def loaded(modules: set[str]) -> list[str]:
    return [name for name in MODEL_LIBRARIES if name in modules]


def test_a_rescan_with_nothing_to_tag_loads_no_model(tmp_path, sample_photos):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy2(sample_photos / name, photos / name)

    first, modules = run_phototag(tmp_path, "scan", "-q", str(photos))
    assert first.returncode == 0, first.stderr
    assert "2 new" in first.stderr
    assert loaded(modules) == ["onnxruntime", "dlib"]  # the model did run, and without torch
    found, _ = run_phototag(tmp_path, "search", "cat", "--format", "paths")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [str(photos / "chelsea.jpg")]

    again, modules = run_phototag(tmp_path, "scan", "-q", str(photos))
    assert again.returncode == 0, again.stderr
    assert "2 unchanged" in again.stderr
    assert loaded(modules) == []

    # a byte-identical copy reuses the tags: the model's identity (name, weights hash, settings) is
    # compared, but the model itself is not needed
    shutil.copy2(photos / "chelsea.jpg", photos / "chelsea copy.jpg")
    copied, modules = run_phototag(tmp_path, "scan", "-q", str(photos))
    assert copied.returncode == 0, copied.stderr
    assert "1 copied" in copied.stderr
    assert loaded(modules) == []
    found, _ = run_phototag(tmp_path, "search", "cat", "--format", "paths")
    assert sorted(found.stdout.splitlines()) == [str(photos / "chelsea copy.jpg"), str(photos / "chelsea.jpg")]
