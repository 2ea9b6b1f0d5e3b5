"""Scaling out, measured side by side in one run: where does a scan's time go when it leaves one process?

    .venv/bin/python bench/bench_scale.py [--photos 96] [--size 640] [--model builtin|ram_plus]
                                          [--writer-photos 400] [--tags-per-photo 24] [--no-pg]

1. **Tagging**: photos/s of a local ``scan`` (:class:`phototag.pipeline.Pipeline`) and of ``scan --ray``
   (:class:`phototag.cluster.pipeline.RayPipeline`) with 1 and 2 actors, on a one-node Ray cluster
   started here (``ray start --head``, stopped by PID at the end). Each scan starts from a fresh
   library and loads its model itself, so two rates are printed: wall (start-up included) and steady
   (from the first committed batch to the last). Photos: the distinct real photos of
   ``bench_scan_throughput.py``.
2. **Library writes**: tag rows/s into PostgreSQL with 1, 4 and 8 writer processes, each storing
   synthetic predictions (``--tags-per-photo`` tags each, real tag names of the built-in model) for its
   own photos through the library's batch path (``session(immediate=True)``, ``upsert_photo``,
   ``store_prediction``; 16 photos per transaction). The server is ``tests/pg.py``'s
   (``PT_TEST_POSTGRES_URL`` or a private one started here); SQLite is measured too, for reference.

On this 2-core machine the Ray figures measure overhead, not speed-up: two actors share the cores the
local scan has to itself. docs/scaling.md turns the figures into a capacity model.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

from ray_head import RAY_ENV, RayHead  # noqa: E402  (tests/: the one way a real cluster is started and stopped)



# ---- a Ray cluster for the run ---------------------------------------------------------------------


# ---- tagging ---------------------------------------------------------------------------------------


class Clock:
    """The pipeline's progress callback, remembering when the first and the last batch committed."""

    def __init__(self):
        self.first = self.last = None
        self.first_n = self.n = 0

    def __call__(self, event: str, n: int) -> None:
        if event != "advance":
            return
        now = time.perf_counter()
        if self.first is None:
            self.first, self.first_n = now, n
        self.last = now
        self.n += n


def scan_once(folder: Path, home: Path, model: str, address: str | None, actors: int) -> dict:
    from phototag.config import load_settings
    from phototag.library import Library
    from phototag.pipeline import Pipeline
    from phototag.tagging.registry import get_tagger

    environ = {"PHOTOTAG_RAY__ACTORS": str(actors)} if address else {}
    settings = load_settings(home, environ=environ)
    home.mkdir(parents=True, exist_ok=True)
    if model != "builtin" and not (home / "models").exists():  # the pack was installed once, next door
        os.symlink(home.parent / "models", home / "models")
    lib = Library(settings)
    tagger = get_tagger(settings, model)
    clock = Clock()
    t0 = time.perf_counter()
    if address is None:
        report = Pipeline(lib, tagger, progress=clock).scan([folder])
    else:
        from phototag.cluster import connect
        from phototag.cluster.pipeline import RayPipeline

        with connect(address) as cluster:
            report = RayPipeline(lib, tagger, cluster=cluster, progress=clock).scan([folder])
    wall = time.perf_counter() - t0
    lib.close()
    steady = ((clock.n - clock.first_n) / (clock.last - clock.first)) if clock.last and clock.last > clock.first else 0.0
    return {"tagged": report.tagged, "failed": report.failed, "wall": wall,
            "rate": report.tagged / wall, "steady": steady}


# ---- library writes --------------------------------------------------------------------------------


def _writer(url: str | None, home: str, wid: int, photos: int, per_photo: int, go, done) -> None:
    from phototag.config import load_settings
    from phototag.library import Library, PhotoFacts
    from phototag.tagging.base import Prediction, TagScore
    from phototag.tagging.builtin import BuiltinTagger

    logging.disable(logging.WARNING)
    environ = {"PHOTOTAG_DATABASE_URL": url} if url else {}
    lib = Library(load_settings(Path(home), environ=environ))
    tagger = BuiltinTagger()  # its identity and vocabulary; the model is never loaded
    names = list(tagger.vocabulary())
    with lib.session(immediate=True) as session:
        run_id = lib.start_model_run(session, tagger).id
    go.wait()
    t0 = time.perf_counter()
    rows = 0
    for start in range(0, photos, 16):
        with lib.session(immediate=True) as session:
            from phototag.db.models import ModelRun

            run = session.get(ModelRun, run_id)
            for i in range(start, min(photos, start + 16)):
                n = wid * 1_000_003 + i
                facts = PhotoFacts(path=Path(f"/bench/w{wid}/p{i:06d}.jpg"), root=Path(f"/bench/w{wid}"), size=n,
                                   mtime=float(n), sha256=f"{n:064x}", width=640, height=480, format="JPEG")
                photo = lib.upsert_photo(session, facts)
                tags = [TagScore(names[(n * 7 + k * 13) % len(names)], 0.5 + k / (4 * per_photo))
                        for k in range(per_photo)]
                tags = list({t.name: t for t in tags}.values())
                lib.store_prediction(session, photo, run, tagger, Prediction(tags=tags))
                rows += len(tags)
    done.put((rows, time.perf_counter() - t0, time.perf_counter()))
    lib.close()


def write_rate(url: str | None, home: Path, writers: int, photos: int, per_photo: int) -> tuple[float, int]:
    """(tag rows/s over all writers, rows): from the common start to the last writer's end."""
    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, str(home), w, photos, per_photo, go, done)) for w in range(writers)]
    for p in procs:
        p.start()
    time.sleep(3 + writers)  # every writer opened the library and started its run
    start = time.perf_counter()
    go.set()
    results = [done.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(60)
    rows = sum(r[0] for r in results)
    return rows / (max(r[2] for r in results) - start), rows


# ---- the run ---------------------------------------------------------------------------------------


def main() -> None:
    logging.getLogger("exifread").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=96)
    ap.add_argument("--size", type=int, default=640, help="long side of the generated photos")
    ap.add_argument("--model", choices=("builtin", "ram_plus"), default="builtin")
    ap.add_argument("--writer-photos", type=int, default=400, help="photos each writer process stores")
    ap.add_argument("--tags-per-photo", type=int, default=24)
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = ap.parse_args()
    os.environ.update(RAY_ENV)
    from bench_scan_throughput import make_photos, ram_plus_tagger

    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="phototag-bench-scale-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        make_photos(folder, args.photos, args.size)
        if args.model == "ram_plus":
            ram_plus_tagger(tmp / "shared-home")
        base = tmp / ("shared-home" if args.model == "ram_plus" else "homes")
        base.mkdir(exist_ok=True)

        print(f"tagging {args.photos} photos ({args.size}px, {args.model} model, {os.cpu_count()} CPUs)", flush=True)
        scans = [("local scan", None, 0), ("ray scan, 1 actor", "ray", 1), ("ray scan, 2 actors", "ray", 2)]
        head = RayHead(os.cpu_count() or 2)
        try:
            results = []
            for i, (label, ray, actors) in enumerate(scans):
                r = scan_once(folder, base / f"h{i}", args.model, head.address if ray else None, actors)
                results.append((label, r))
                print(f"  {label:<20} {r['rate']:7.2f} photos/s wall ({r['wall']:.1f} s, start-up incl.), "
                      f"{r['steady']:7.2f} photos/s steady  [{r['tagged']} tagged, {r['failed']} failed]", flush=True)
        finally:
            head.stop()
        local = results[0][1]
        lines.append(f"{'':<22}{'photos/s wall':>14}{'steady':>9}{'× local (steady)':>18}")
        for label, r in results:
            lines.append(f"{label:<22}{r['rate']:>14.2f}{r['steady']:>9.2f}"
                         f"{(r['steady'] / local['steady']) if local['steady'] else 0:>18.2f}")

        print(f"\nlibrary writes: {args.writer_photos} photos × {args.tags_per_photo} tags per writer, "
              "16 photos per transaction", flush=True)
        url_cm = None
        if not args.no_pg:
            try:
                from pg import pg_database

                url_cm = pg_database
            except Exception as exc:  # noqa: BLE001 — report and go on with SQLite
                print(f"  (no PostgreSQL: {exc})")
        lines.append("")
        lines.append(f"{'writers':<22}" + "".join(f"{w:>12}" for w in (1, 4, 8)) + "   (tag rows/s)")
        backends = [("SQLite (one file)", None)] + ([("PostgreSQL", url_cm)] if url_cm else [])
        for label, cm in backends:
            rates = []
            for writers in (1, 4, 8):
                home = tmp / f"w-{label[:2]}-{writers}"
                if cm is None:
                    rate, rows = write_rate(None, home, writers, args.writer_photos, args.tags_per_photo)
                else:
                    try:
                        with cm("bench") as url:
                            rate, rows = write_rate(url, home, writers, args.writer_photos, args.tags_per_photo)
                    except Exception as exc:  # noqa: BLE001
                        print(f"  PostgreSQL unavailable: {type(exc).__name__}: {exc}")
                        rate = float("nan")
                rates.append(rate)
                print(f"  {label:<18} {writers} writer(s): {rate:9.0f} tag rows/s", flush=True)
            lines.append(f"{label:<22}" + "".join(f"{r:>12.0f}" for r in rates))
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
