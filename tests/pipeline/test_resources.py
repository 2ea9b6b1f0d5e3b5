"""How a scan uses the machine: the split of cores and the batch size (pure rules), the model loaded once
and timed apart, the built-in model in ONNX Runtime, and a real `phototag scan` process's peak memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phototag.ingest.pool import ResourcePlan, cuda_batch_size, plan_resources
from phototag.pipeline import Pipeline
from phototag.tagging.base import ForwardingTagger
from phototag.tagging.builtin import BuiltinTagger

from conftest import REPO

BUILTIN_SHARE = 0.7  # the built-in model with faces: detection and resizing outweigh its small network
RAM_SHARE = 0.02  # Swin-L: the network is nearly all of a photo's work


# ---- the rules (pure) ------------------------------------------------------------------------------
def test_two_cores_are_not_oversubscribed_by_the_builtin_model():
    plan = plan_resources(2, "cpu", prepare_share=BUILTIN_SHARE, cpu_batch=4)
    assert plan == ResourcePlan(decode_workers=1, model_threads=1, batch_size=4)


def test_a_heavy_model_keeps_every_core_and_one_decoder():
    assert plan_resources(2, "cpu", prepare_share=RAM_SHARE, cpu_batch=4) == ResourcePlan(1, 2, 4)
    assert plan_resources(16, "cpu", prepare_share=RAM_SHARE, cpu_batch=4) == ResourcePlan(1, 16, 4)


def test_sixteen_cores_are_shared_by_where_the_work_is():
    plan = plan_resources(16, "cpu", prepare_share=BUILTIN_SHARE, cpu_batch=4)
    assert plan.decode_workers + plan.model_threads == 16
    assert plan.decode_workers > plan.model_threads >= 1


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16, 64])
@pytest.mark.parametrize("share", [0.0, 0.02, 0.1, 0.3, 0.5, 0.7, 0.95, 1.0])
def test_decoders_and_model_threads_never_oversubscribe(cores, share):
    plan = plan_resources(cores, "cpu", prepare_share=share)
    assert plan.decode_workers >= 1 and plan.model_threads >= 1
    # at most one decoder beyond the cores, and only when decoding keeps no core busy
    assert plan.decode_workers + plan.model_threads <= cores + (1 if round(cores * share) == 0 or cores == 1 else 0)


def test_on_cuda_every_core_decodes_and_the_batch_follows_free_memory():
    gib = 2**30
    plan = plan_resources(16, "cuda", prepare_share=RAM_SHARE, cpu_batch=4, free_memory=8 * gib, input_size=384)
    assert plan.decode_workers == 16 and plan.model_threads == 2
    assert plan.batch_size == cuda_batch_size(8 * gib, 384)
    assert 8 <= plan.batch_size <= 32
    assert cuda_batch_size(139 * gib, 384) == 64  # capped
    assert cuda_batch_size(1 * gib, 384) < cuda_batch_size(2 * gib, 384) <= cuda_batch_size(2 * gib, 224)
    assert cuda_batch_size(10 * 2**20, 384) == 1  # never 0
    # without a memory figure (mps, or the query failed): the tagger's own preference
    assert plan_resources(8, "mps", cpu_batch=4).batch_size == 4


def test_settings_and_options_override_the_plan():
    plan = plan_resources(2, "cpu", prepare_share=BUILTIN_SHARE, cpu_batch=4, workers=3, batch_size=5)
    assert (plan.decode_workers, plan.batch_size) == (3, 5)
    assert plan.model_threads == 1  # the asked decoders get their cores first
    cuda = plan_resources(16, "cuda", free_memory=80 * 2**30, input_size=384, workers=4, batch_size=7)
    assert (cuda.decode_workers, cuda.batch_size) == (4, 7)


def test_pipeline_uses_the_settings_over_the_plan(library):
    library.settings.set_value("decode_workers", 3)
    library.settings.set_value("batch_size", 5)
    pipeline = Pipeline(library, BuiltinTagger(faces=False))
    assert (pipeline.decode_workers, pipeline.batch_size) == (3, 5)
    assert Pipeline(library, BuiltinTagger(faces=False), decode_workers=2, batch_size=1).batch_size == 1


def test_a_swapped_model_gets_its_own_plan(library):
    """watch swaps the model when the default changes: the split of cores and the batch follow the new one."""
    from watch.helpers import ColourTagger

    from phototag.pipeline.stages import plan_for

    light = ColourTagger()  # batch 16, the base prepare share
    pipeline = Pipeline(library, BuiltinTagger(faces=True))
    before = pipeline.plan
    pipeline.use_tagger(light)
    assert pipeline.tagger is light
    assert pipeline.plan == plan_for(light, "cpu") != before
    assert (pipeline.decode_workers, pipeline.batch_size) == (pipeline.plan.decode_workers, pipeline.plan.batch_size)


# ---- the model: loaded once, timed apart ------------------------------------------------------------
class CountingTagger(ForwardingTagger):
    """The real built-in tagger, counting how often it is asked to load and to predict."""

    def __init__(self, inner):
        super().__init__(inner)
        self.readies = 0
        self.loads = 0
        self.batches = 0
        original = inner.session if inner.backend == "onnxruntime" else inner.network

        def counted():
            if inner._session is None and inner._model is None:
                self.loads += 1
            return original()

        if inner.backend == "onnxruntime":
            inner.session = counted
        else:
            inner.network = counted

    def ready(self):
        self.readies += 1
        super().ready()

    def predict(self, batch):
        self.batches += 1
        return super().predict(batch)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    """A folder holding the built-in model's ONNX export (made once for the module: ~20 s)."""
    folder = tmp_path_factory.mktemp("onnx")
    BuiltinTagger(faces=False, backend="onnxruntime", onnx_dir=folder).ready()
    return folder


@pytest.mark.parametrize("sequential", [False, True])
def test_model_is_loaded_once_per_run_and_its_time_reported_apart(library, sample_photos, onnx_dir, sequential):
    tagger = CountingTagger(BuiltinTagger(faces=False, backend="onnxruntime", onnx_dir=onnx_dir))
    report = Pipeline(library, tagger, batch_size=2, decode_workers=2, sequential=sequential).scan([sample_photos])
    assert report.new == 6 and tagger.batches >= 3
    assert tagger.loads == 1 and tagger.readies == 1
    assert report.load_seconds > 0 and report.model_seconds > 0
    assert report.tagging_seconds == pytest.approx(report.seconds - report.load_seconds)
    summary = report.as_dict()
    assert summary["photos_per_second"] == pytest.approx(6 / report.tagging_seconds, rel=0.01)
    assert {"load_seconds", "tagging_seconds"} <= set(summary)


def test_nothing_to_tag_loads_no_model(library, sample_photos, onnx_dir):
    Pipeline(library, BuiltinTagger(faces=False, backend="onnxruntime", onnx_dir=onnx_dir)).scan([sample_photos])
    tagger = CountingTagger(BuiltinTagger(faces=False, backend="onnxruntime", onnx_dir=onnx_dir))
    report = Pipeline(library, tagger).scan([sample_photos])
    assert report.unchanged == 6 and tagger.readies == 0 and report.load_seconds == 0


def test_builtin_model_in_onnx_runtime_gives_torch_s_tags(sample_photos, onnx_dir):
    from phototag.ingest.decode import decode_photo

    ort = BuiltinTagger(backend="auto", onnx_dir=onnx_dir)
    torch_tagger = BuiltinTagger()
    assert (ort.backend, torch_tagger.backend) == ("onnxruntime", "torch")
    photos = sorted(sample_photos.glob("*.jpg"))
    by_ort = ort.predict([ort.prepare(decode_photo(p).image) for p in photos])
    by_torch = torch_tagger.predict([torch_tagger.prepare(decode_photo(p).image) for p in photos])
    for photo, a, b in zip(photos, by_ort, by_torch):
        assert [t.name for t in a.tags] == [t.name for t in b.tags], photo.name
        assert [t.score for t in a.tags] == pytest.approx([t.score for t in b.tags], abs=1e-4)
        assert a.embedding == pytest.approx(b.embedding, abs=1e-4)
    assert any(t.name == "cat" for t in by_ort[[p.stem for p in photos].index("chelsea")].tags)


def test_onnx_runtime_is_not_used_where_it_would_change_the_model(onnx_dir):
    assert BuiltinTagger(backend="auto", onnx_dir=None).backend == "torch"  # nowhere to put the export
    assert BuiltinTagger(backend="auto", onnx_dir=onnx_dir, precision="bf16").backend == "torch"
    with pytest.raises(Exception, match="ONNX Runtime"):
        BuiltinTagger(backend="onnxruntime", onnx_dir=onnx_dir, precision="bf16")


# ---- memory: a real scan process ---------------------------------------------------------------------
#: runs argv[1:] as its child and prints the child's peak RSS. A fresh, small process: Linux carries
#: ru_maxrss across exec from the forking process, so a child forked by pytest would report pytest's size.
LAUNCHER = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": done.returncode, "out": done.stdout[-3000:], "err": done.stderr[-3000:],
                  "peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def test_a_builtin_scan_peaks_under_600_mb(tmp_path, sample_photos, onnx_dir):
    import shutil

    home = tmp_path / "home"
    cache = tmp_path / ".cache" / "phototag" / "onnx"  # Settings.machine_cache_dir with HOME=tmp_path
    cache.mkdir(parents=True)
    for f in onnx_dir.iterdir():  # the one-time export (its own process, ~20 s) is done already
        shutil.copy(f, cache / f.name)
    run = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, "-m", "phototag", "--home", str(home), "scan", "--quiet",
         "--format", "json", str(sample_photos)],
        capture_output=True, text=True, cwd=REPO, check=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    result = json.loads(run.stdout)
    assert result["rc"] == 0, result["err"]
    report = json.loads(result["out"][result["out"].index("{"):])
    assert report["new"] == 6 and report["failed"] == 0
    assert result["peak_rss"] <= 600 * 2**20, f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB"


@pytest.mark.parametrize("sequential", [False, True])
def test_a_model_that_cannot_load_stops_the_run_and_blames_no_photo(library, sample_photos, tmp_path, sequential):
    from sqlalchemy import select

    from phototag.db.models import Photo
    from phototag.tagging.base import TaggerError

    broken = BuiltinTagger(faces=False, weights=tmp_path / "gone.pth")  # its weights are missing
    with pytest.raises(TaggerError, match="weights are missing"):
        Pipeline(library, broken, decode_workers=2, sequential=sequential).scan([sample_photos])
    with library.session() as session:
        assert session.scalars(select(Photo).where(Photo.error.is_not(None))).all() == []


def test_an_export_that_cannot_be_made_falls_back_to_torch_with_the_same_tags(tmp_path, sample_photos, onnx_dir, caplog):
    """The ONNX export's folder cannot be made (here: a file is in the way): the photos are still
    tagged, in torch, with a warning, and the tags are those ONNX Runtime gives."""
    import logging

    from PIL import Image

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    fallback = BuiltinTagger(backend="auto", onnx_dir=blocked / "onnx")
    assert fallback.backend == "onnxruntime"  # chosen; the export is made on first use
    with Image.open(sample_photos / "chelsea.jpg") as img, caplog.at_level(logging.WARNING):
        photo = fallback.prepare(img.convert("RGB"))
        fallback.ready()
        got = fallback.predict([photo])[0]
    assert fallback.backend == "torch" and "runs in torch" in caplog.text
    ort = BuiltinTagger(backend="onnxruntime", onnx_dir=onnx_dir)
    with Image.open(sample_photos / "chelsea.jpg") as img:
        want = ort.predict([ort.prepare(img.convert("RGB"))])[0]
    assert [t.name for t in got.tags] == [t.name for t in want.tags]


def test_a_full_size_ram_plus_scan_stays_within_its_pack_plus_1_gb(tmp_path, sample_photos):
    """Issue 13's bound for RAM-class models: a real `phototag scan --model ram_plus` (full-size Swin-L
    RAM++, synthetic weights, 1.26 GB pack) at its defaults peaks within the pack's size + 1 GiB."""
    import torch

    from phototag.tagging.packs import add_pack, load_pack_tagger
    from phototag.tagging.synthetic import official_checkpoint, read_manifest, read_tied, synthetic_state_dict
    from conftest import RAM_DATA

    home = tmp_path / "home"
    manifest = RAM_DATA / "manifests" / "ram_plus_swin_l_384"
    state = synthetic_state_dict(read_manifest(f"{manifest}.tsv"), read_tied(f"{manifest}.tied.tsv"), seed=1234)
    checkpoint = tmp_path / "ram_plus_swin_large_14m.pth"
    torch.save(official_checkpoint(state), checkpoint)
    del state
    data = RAM_DATA / "ram" / "data"
    add_pack(home / "models", "ram_plus", checkpoint, data / "ram_tag_list.txt", data / "ram_tag_list_chinese.txt",
             data / "ram_tag_list_threshold.txt")
    checkpoint.unlink()
    pack = home / "models" / "ram_plus" / "weights.safetensors"
    # the one-time export (what `backend = auto` runs without a benchmark record: ONNX Runtime fp32)
    load_pack_tagger(home / "models", "ram_plus", backend="onnxruntime").export()
    run = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, "-m", "phototag", "--home", str(home), "scan", "--quiet",
         "--format", "json", "--model", "ram_plus", str(sample_photos)],
        capture_output=True, text=True, cwd=REPO, check=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    result = json.loads(run.stdout)
    assert result["rc"] == 0, result["err"]
    report = json.loads(result["out"][result["out"].index("{"):])
    assert report["new"] == 6 and report["failed"] == 0
    bound = pack.stat().st_size + 2**30
    assert result["peak_rss"] <= bound, f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB > {bound / 2**20:.0f} MiB"
