"""phototag scan vs a naive one-photo-at-a-time loop, same model, same photos, one run.

    .venv/bin/python bench/bench_scan.py [--photos 120] [--model builtin]

The photos are real (scikit-image / scikit-learn samples), each saved several times with a small
crop and JPEG quality change so every file has its own content hash. Both contenders start from
an empty library and store tags in SQLite; the naive loop decodes, tags and commits one photo at a
time in one thread (what a simple script does). Prints photos/s for both and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import save_sample  # noqa: E402

from phototag.config import load_settings  # noqa: E402
from phototag.ingest.exif import read_exif  # noqa: E402
from phototag.ingest.fingerprint import sha256_file  # noqa: E402
from phototag.library import Library, PhotoFacts  # noqa: E402
from phototag.pipeline import Pipeline  # noqa: E402
from phototag.tagging.registry import get_tagger  # noqa: E402

SAMPLES = ("chelsea", "coffee", "astronaut", "rocket", "china", "flower")


def make_photos(folder: Path, count: int) -> list[Path]:
    base = folder / "_base"
    for name in SAMPLES:
        save_sample(name, base / f"{name}.jpg")
    paths = []
    for i in range(count):
        name = SAMPLES[i % len(SAMPLES)]
        img = Image.open(base / f"{name}.jpg")
        w, h = img.size
        crop = img.crop((i % 7, i % 5, w - (i % 3), h - (i % 4)))
        dest = folder / "photos" / f"{i:05d}_{name}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        crop.save(dest, quality=85 + i % 10)
        paths.append(dest)
    return paths


def naive(lib: Library, tagger, paths: list[Path]) -> float:
    started = time.perf_counter()
    with lib.session() as s:
        run_id = lib.start_model_run(s, tagger).id
    for path in paths:
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        prediction = tagger.predict([tagger.prepare(img)])[0]
        st = path.stat()
        facts = PhotoFacts(path, path.parent, st.st_size, st.st_mtime, sha256_file(path), img.width, img.height,
                           "JPEG", read_exif(path).as_columns())
        with lib.session() as s:
            from phototag.db.models import ModelRun

            photo = lib.upsert_photo(s, facts)
            lib.store_prediction(s, photo, s.get(ModelRun, run_id), tagger, prediction)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--model", default="builtin")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_photos(tmp, args.photos)
        settings_a = load_settings(tmp / "home-naive", environ={})
        settings_b = load_settings(tmp / "home-scan", environ={})
        tagger = get_tagger(settings_a, args.model)
        tagger.predict([tagger.prepare(Image.open(paths[0]).convert("RGB"))])  # load + warm up once for both

        lib_a = Library(settings_a)
        t_naive = naive(lib_a, tagger, paths)
        lib_a.close()

        lib_b = Library(settings_b)
        report = Pipeline(lib_b, tagger).scan([paths[0].parent])
        lib_b.close()
        t_scan = report.seconds
        assert report.tagged == len(paths), report.as_dict()

    n = len(paths)
    print(f"model: {tagger.name} ({tagger.model_id}), photos: {n}, batch size: {tagger.batch_size}")
    print(f"naive one-at-a-time loop : {n / t_naive:7.2f} photos/s  ({t_naive:.1f} s)")
    print(f"phototag scan            : {n / t_scan:7.2f} photos/s  ({t_scan:.1f} s, model {report.model_seconds:.1f} s)")
    print(f"ratio scan / naive       : {t_naive / t_scan:7.2f}x")


if __name__ == "__main__":
    main()
