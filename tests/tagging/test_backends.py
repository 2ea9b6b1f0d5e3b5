"""Runtimes of a RAM-class pack: ONNX Runtime / OpenVINO agree with torch fp32, the export is made once,
``backend = auto`` follows this machine's benchmark record (never another machine's, never a candidate
whose tags disagree), and ``phototag models benchmark`` measures and records a real pack end to end."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from phototag.tagging.device import cpu_supports_bf16
import skimage.data
import torch
from PIL import Image

from phototag.tagging.backends.choice import (Candidate, best_candidate, choose_backend, machine_fingerprint,
                                              read_record, write_record)
from phototag.tagging.base import TaggerError
from phototag.tagging.ram_tagger import RamTagger
from phototag.tagging.synthetic import official_checkpoint
from phototag.tagging.vocab import ram_vocabulary
from phototag.tagging.weights import convert_checkpoint

from conftest import cli
from .ram_cases import GOLDEN_SEED, RAM_DATA, tiny_arch, tiny_official_state

DATA = RAM_DATA / "ram" / "data"
ARCH = tiny_arch("ram_plus")


def first_lines(src, dst, n=50):
    dst.write_text("\n".join(src.read_text(encoding="utf-8").splitlines()[:n]), encoding="utf-8")
    return dst


def tag_files(folder):
    return (first_lines(DATA / "ram_tag_list.txt", folder / "tags.txt"),
            first_lines(DATA / "ram_tag_list_chinese.txt", folder / "zh.txt"),
            first_lines(DATA / "ram_tag_list_threshold.txt", folder / "th.txt"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    torch.save(official_checkpoint(tiny_official_state("ram_plus", seed=GOLDEN_SEED)), tmp / "ckpt.pth")
    return tmp / "ckpt.pth"


@pytest.fixture(scope="module")
def pack(tmp_path_factory, checkpoint):
    """A tiny RAM++ (50 classes) in a folder of its own, as a pack is: (make_tagger, folder)."""
    folder = tmp_path_factory.mktemp("pack")
    result = convert_checkpoint(checkpoint, folder / "weights.safetensors", arch=ARCH)
    tags, zh, th = tag_files(tmp_path_factory.mktemp("tags"))
    vocab = ram_vocabulary(tags, th, zh).with_threshold(0.5)  # random weights: scores sit near 0.5

    def make(**kw):
        return RamTagger("tiny", "ram_plus", result.path, vocab, result.sha256, arch=ARCH, **kw)

    return make, folder


def photos():
    return [Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee())]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_runtimes_agree_with_torch_fp32(pack, backend):
    make, _ = pack
    torch_fp32, other = make(backend="torch", precision="fp32"), make(backend=backend, precision="fp32")
    batch = [torch_fp32.prepare(p) for p in photos()]
    ref, out = torch_fp32.forward(torch.stack(batch)), other.forward(torch.stack(batch))
    np.testing.assert_allclose(out["logits"], ref["logits"], atol=2e-4, rtol=0)
    np.testing.assert_allclose(out["embedding"], ref["embedding"], atol=2e-4, rtol=1e-4)
    a, b = torch_fp32.predict(batch), other.predict(batch)
    assert [[t.name for t in p.tags] for p in a] == [[t.name for t in p.tags] for p in b]
    assert any(p.tags for p in a)  # the comparison compares something
    assert other.settings()["backend"] == backend and "backend" not in torch_fp32.settings()


def test_the_export_is_made_once_and_reused(pack):
    make, folder = pack
    first = make(backend="onnxruntime", precision="fp32")
    first.predict([first.prepare(photos()[0])])
    onnx = first.exports.fp32_path()
    assert onnx.is_file() and onnx.parent == folder / "runtime"
    stamp = onnx.stat().st_mtime_ns
    again = make(backend="openvino", precision="fp32")  # another runtime, another process-like tagger
    again.predict([again.prepare(photos()[0])])
    assert again.exports.exports == 0 and onnx.stat().st_mtime_ns == stamp
    assert again.exports.cost("fp32") is not None  # what the export cost is kept with it
    int8 = make(backend="onnxruntime", precision="int8")
    int8.predict([int8.prepare(photos()[0])])
    assert int8.exports.exports == 1 and onnx.stat().st_mtime_ns == stamp  # quantised from the same export
    assert 0 < int8.exports.size("int8") < int8.exports.size("fp32")
    assert int8.exports.data_path().is_file()  # the fp32 weights live beside the graph (mapped, not read)


def test_auto_follows_this_machines_record_and_ignores_another_machines(pack, caplog):
    make, folder = pack
    sha = make().weights_sha256
    # nothing measured yet: fp32 in ONNX Runtime (its export is checked against torch when made)
    assert read_record(folder) == {} and (make(backend="auto").backend, make(backend="auto").precision) == (
        "onnxruntime", "fp32")
    if cpu_supports_bf16():  # a precision only torch runs here (refused on a CPU without fast bf16)
        assert make(backend="auto", precision="bf16").backend == "torch"
    other = {**machine_fingerprint(), "cpu": "Some Other CPU", "isa": ["avx2"]}
    write_record(folder, sha, [Candidate("torch", "fp32", 1.0), Candidate("openvino", "fp32", 5.0)], "cpu", other)
    with caplog.at_level(logging.WARNING):
        tagger = make(backend="auto")
    assert (tagger.backend, tagger.precision) == ("onnxruntime", "fp32")  # not this machine's record
    assert "benchmark" in caplog.text
    write_record(folder, sha, [Candidate("torch", "fp32", 1.0), Candidate("onnxruntime", "fp32", 3.0),
                               Candidate("torch", "bf16", 2.0)], "cpu")
    tagger = make(backend="auto")
    assert (tagger.backend, tagger.precision) == ("onnxruntime", "fp32")
    assert tagger.settings()["backend"] == "onnxruntime"
    assert make(backend="torch").backend == "torch"  # an explicit backend is kept, at its best measured precision
    assert (make(backend="torch").precision, make(backend="torch", precision="fp32").precision) == ("bf16", "fp32")
    # a caller that passes no backend (a fine-tuned head patches torch's model) gets torch as before, unmeasured
    assert (make().backend, make().precision) == ("torch", "fp32")
    assert len(read_record(folder)["machines"]) == 2  # the other machine's entry is kept
    write_record(folder, "0" * 64, [Candidate("onnxruntime", "fp32", 3.0)], "cpu")  # other weights
    assert make(backend="auto").backend == "onnxruntime"  # the record is of other weights: unmeasured


def test_candidates_whose_tags_disagree_are_never_chosen(tmp_path):
    measured = [Candidate("torch", "fp32", 1.0), Candidate("onnxruntime", "int8", 9.0, jaccard=0.90),
                Candidate("openvino", "fp32", 3.0, jaccard=0.995), Candidate("openvino", "bf16", 8.0, jaccard=0.97)]
    assert best_candidate(measured).label == "openvino fp32"
    assert best_candidate(measured, precision="bf16") is None
    write_record(tmp_path, "a" * 64, measured, "cpu")
    choice = choose_backend("auto", "auto", "cpu", tmp_path, "a" * 64, "fp32")
    assert (choice.backend, choice.precision) == ("openvino", "fp32")
    only_bad = [Candidate("torch", "fp32", 1.0), Candidate("onnxruntime", "int8", 9.0, jaccard=0.5)]
    write_record(tmp_path, "a" * 64, only_bad, "cpu")
    assert choose_backend("auto", "auto", "cpu", tmp_path, "a" * 64, "fp32").backend == "torch"


def test_candidates_over_the_memory_bound_are_never_chosen(tmp_path):
    """Issue 13: a RAM-class scan stays within the pack's size + 1 GiB, so ``auto`` passes over a faster
    runtime that would not (OpenVINO keeps the mapped weights and its repacked copy)."""
    measured = [Candidate("torch", "fp32", 1.0, memory_mib=2100, fits_memory=False),
                Candidate("onnxruntime", "fp32", 1.6, memory_mib=1500),
                Candidate("openvino", "fp32", 2.2, memory_mib=2900, fits_memory=False)]
    assert best_candidate(measured).label == "onnxruntime fp32"
    write_record(tmp_path, "a" * 64, measured, "cpu")
    assert choose_backend("auto", "auto", "cpu", tmp_path, "a" * 64, "fp32").backend == "onnxruntime"
    # asked for by name, it runs all the same
    assert choose_backend("openvino", "auto", "cpu", tmp_path, "a" * 64, "fp32").backend == "openvino"


def test_backend_choices_that_cannot_run_are_one_line_errors(tmp_path):
    with pytest.raises(TaggerError, match="runs on the CPU only"):
        choose_backend("openvino", "auto", "cuda", tmp_path, "a" * 64, "bf16")
    with pytest.raises(TaggerError, match="onnxruntime backend runs fp32 or int8"):
        choose_backend("onnxruntime", "bf16", "cpu", tmp_path, "a" * 64, "fp32")
    with pytest.raises(TaggerError, match="unknown backend"):
        choose_backend("tensorrt", "auto", "cpu", tmp_path, "a" * 64, "fp32")
    # on a GPU, auto stays on torch at the GPU's precision
    assert choose_backend("auto", "auto", "cuda", tmp_path, "a" * 64, "bf16").precision == "bf16"


def test_models_benchmark_measures_records_and_auto_uses_it(home, checkpoint, tmp_path, monkeypatch):
    from phototag.tagging.packs import add_pack
    from phototag.tagging.packs import load_pack_tagger

    tags, zh, th = tag_files(tmp_path)
    add_pack(home.models_dir, "tiny", checkpoint, tags, zh, th, arch=ARCH)
    # a tiny pack's weights do not say its architecture (only the released ones are recognised)
    monkeypatch.setattr(RamTagger, "default_arch", ARCH)
    cli(home.home, "models", "benchmark", code=2)  # the default model is the built-in one, not a pack
    shots = tmp_path / "shots"
    shots.mkdir()
    for i, photo in enumerate(photos()):
        photo.save(shots / f"{i}.jpg")
    table = cli(home.home, "models", "benchmark", "tiny", "--photos", shots).stdout
    entry, = read_record(home.models_dir / "tiny")["machines"].values()
    assert entry["fingerprint"] == machine_fingerprint()
    rows = {(c["backend"], c["precision"]): Candidate(**c) for c in entry["candidates"]}
    assert rows[("torch", "fp32")].jaccard == 1.0
    assert {("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8")} <= set(rows)
    assert all(c.photos_per_s > 0 for c in rows.values()), rows
    # memory: measured for each; torch's counts its own import (which a scan on ONNX Runtime never pays)
    assert all(c.memory_mib is not None and c.memory_mib >= 0 for c in rows.values()), rows
    assert rows[("torch", "fp32")].memory_mib > 200 > rows[("onnxruntime", "fp32")].memory_mib
    assert "memory MiB" in table
    assert rows[("onnxruntime", "fp32")].export_s > 0
    best = best_candidate(rows.values())
    assert entry["choice"] == {"backend": best.backend, "precision": best.precision}
    assert f"backend = auto will use: {best.backend} {best.precision}" in table
    tagger = load_pack_tagger(home.models_dir, "tiny")
    tagger = tagger.variant("auto", "auto")  # what backend = auto gives: the measured choice
    assert (tagger.backend, tagger.precision) == (best.backend, best.precision)


def test_a_missing_runtime_package_is_a_one_line_install_hint(monkeypatch):
    from phototag.tagging.backends import choice

    choice.require_runtime("onnxruntime")  # installed here
    monkeypatch.setitem(choice.PIP_NAMES, "openvino", "openvino-not-installed-pt-test")  # as if it were missing
    with pytest.raises(TaggerError, match=r"^backend 'openvino' needs .*: pip install openvino-not-installed-pt-test$"):
        choice.require_runtime("openvino")


def test_tag2text_on_openvino_agrees_with_torch(tmp_path):
    """Tag2Text's per-class logit layer is exported as one contraction: OpenVINO 2026.4 computed its
    broadcast-multiply-and-sum form wrongly (max |Δlogit| 0.23 on this tiny model)."""
    from phototag.tagging.vocab import tag2text_vocabulary

    torch.save(official_checkpoint(tiny_official_state("tag2text", seed=GOLDEN_SEED)), tmp_path / "t2t.pth")
    result = convert_checkpoint(tmp_path / "t2t.pth", tmp_path / "t2t.safetensors", arch=tiny_arch("tag2text"))
    vocab = tag2text_vocabulary(DATA / "tag2text_ori_tag_list.txt")
    make = lambda backend: RamTagger("t2t", "tag2text", result.path, vocab, result.sha256,  # noqa: E731
                                     arch=tiny_arch("tag2text"), backend=backend, precision="fp32")
    x = torch.stack([make("torch").prepare(p) for p in photos()])
    ref, out = make("torch").forward(x), make("openvino").forward(x)
    np.testing.assert_allclose(out["logits"], ref["logits"], atol=2e-4, rtol=0)


def test_ram_plus_export_holds_its_description_table_once_and_beside_the_graph(pack):
    """RAM++'s 51 descriptions per class (457 MiB at full size) are one tensor of the export, in the
    weights file ONNX Runtime maps into memory instead of copying (issue 13's memory bound)."""
    import onnx

    make, _ = pack
    tagger = make(backend="onnxruntime", precision="fp32")
    tagger.ready()
    graph = onnx.load(str(tagger.exports.fp32_path()), load_external_data=False).graph
    table = ARCH.num_classes * ARCH.descriptions * ARCH.clip_dim
    assert [t.name for t in graph.initializer if int(np.prod(t.dims)) == table] != []
    assert len([t for t in graph.initializer if int(np.prod(t.dims)) == table]) == 1
    external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert sum(int(np.prod(t.dims)) * 4 for t in external) > 0.9 * tagger.weights_path.stat().st_size


SCAN_WITHOUT_TORCH = """
import json, sys
from pathlib import Path
from phototag.library import Library
from phototag.pipeline import Pipeline
from phototag.tagging.ram_tagger import RamTagger
from phototag.tagging.vocab import ram_vocabulary

weights, sha, tags, zh, th, home, photos = sys.argv[1:]
vocab = ram_vocabulary(Path(tags), Path(th), Path(zh)).with_threshold(0.5)
tagger = RamTagger("tiny", "ram_plus", weights, vocab, sha, backend="onnxruntime", precision="fp32")
from phototag.config import load_settings
library = Library(load_settings(Path(home), environ={}))
report = Pipeline(library, tagger, decode_workers=1).scan([Path(photos)])
from PIL import Image
shots = sorted(Path(photos).iterdir())
tags = [sorted(t.name for t in p.tags) for p in tagger.predict([tagger.prepare(Image.open(f)) for f in shots])]
print(json.dumps({"tagged": report.tagged, "torch": "torch" in sys.modules, "device": tagger.device_type,
                  "tags": tags}))
"""


def test_a_scan_on_onnx_runtime_never_imports_torch(pack, tmp_path):
    """With the export made, a pack on ONNX Runtime reads, prepares, tags and stores photos in a
    process that never imports torch (≈ 600 MB of RSS with PyPI's CUDA build)."""
    import json
    import subprocess
    import sys

    make, _ = pack
    tagger = make(backend="onnxruntime", precision="fp32")
    tagger.ready()  # the export (which needs torch) is made here, once
    shots = tmp_path / "shots"
    shots.mkdir()
    for i, photo in enumerate(photos()):
        photo.save(shots / f"{i}.jpg")
    tags, zh, th = tag_files(tmp_path)
    run = subprocess.run([sys.executable, "-c", SCAN_WITHOUT_TORCH, str(tagger.weights_path), tagger.weights_sha256,
                          str(tags), str(zh), str(th), str(tmp_path / "home"), str(shots)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    want = [sorted(t.name for t in p.tags) for p in make(backend="torch", precision="fp32").predict(
        [tagger.prepare(Image.open(f)) for f in sorted(shots.iterdir())])]
    assert result == {"tagged": 2, "torch": False, "device": "cpu", "tags": want}
    assert any(want)


def test_a_cpu_tags_fp32_one_photo_at_a_time(pack):
    """Batching Swin-L buys no speed on a CPU and costs ~220 MiB of activations a photo (issue 13's
    memory bound); bf16 keeps the batch its AMX speed-up was measured with; a setting overrides both."""
    make, _ = pack
    assert make(backend="onnxruntime", precision="fp32").batch_size == 1
    assert make(backend="torch", precision="fp32").batch_size == 1
    assert make(backend="torch", precision="fp32", batch_size=3).batch_size == 3
    if cpu_supports_bf16():
        assert make(backend="torch", precision="bf16").batch_size == 4


def test_exports_started_together_make_one_and_a_killed_one_leaves_nothing_used(checkpoint, tmp_path):
    """Two scans starting at once on a new pack: one exports, the other waits for it and reuses it. What
    an export killed midway left (its temp folder, a partial weights file) is never read and is cleared."""
    import threading

    folder = tmp_path / "pack"
    folder.mkdir()
    result = convert_checkpoint(checkpoint, folder / "weights.safetensors", arch=ARCH)
    tags, zh, th = tag_files(tmp_path)
    vocab = ram_vocabulary(tags, th, zh)
    taggers = [RamTagger("tiny", "ram_plus", result.path, vocab, result.sha256, arch=ARCH, backend="onnxruntime",
                         precision="fp32") for _ in range(3)]
    exports = taggers[0].exports
    exports.folder.mkdir(parents=True)
    stale = exports.folder / f".{exports.stem}.killed"
    stale.mkdir()
    (stale / "whole.onnx").write_bytes(b"half an export")
    exports.data_path().write_bytes(b"a partial weights file")  # killed between the two renames
    threads = [threading.Thread(target=t.export) for t in taggers[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(t.exports.exports for t in taggers[:2]) == 1
    assert not stale.exists() and not list(exports.folder.glob(f".{exports.stem}.*"))
    ref = taggers[2].variant("torch", "fp32")
    batch = [ref.prepare(p) for p in photos()]
    np.testing.assert_allclose(taggers[2].forward(np.stack(batch))["logits"], ref.forward(np.stack(batch))["logits"],
                               atol=2e-4, rtol=0)
