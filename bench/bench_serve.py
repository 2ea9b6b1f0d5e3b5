"""phototag serve: cold thumbnail generation from 12 MP JPEGs, and a warm result page of 100 photos.

What it does, in one run:

1. writes N (default 120) 12 MP JPEGs (4000×3000): scikit-image's and scikit-learn's photos,
   upscaled, each with its own crop, mirror and brightness so that every file is a different photo;
2. stores them in a new library with a real ``phototag scan`` and the built-in model (``--no-scan``
   inserts the rows through the library API instead: size, mtime and content hash, no tags);
3. starts the real app (``phototag serve --port 0``, its own process) and, with 6 connections at a
   time like a browser:
   * **cold**: empties the thumbnail cache and fetches every photo's ``/thumb/ID`` → thumbnails/s
     (goal ≥ 30/s); also one connection at a time;
   * **warm**: the result page ``/?q=path:*.jpg`` (100 photos a page), the HTML alone and the HTML
     plus all its 100 thumbnails (goal ≤ 300 ms), best and median of ``--repeat`` runs.

    .venv/bin/python bench/bench_serve.py [--photos 120] [--workdir DIR] [--no-scan]

``--workdir`` keeps the photos (and the library) between runs; without it a temp dir is used.
Numbers depend on the machine: they are printed side by side with the goals, from one run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SOURCES = ("chelsea", "coffee", "astronaut", "rocket", "china", "flower", "motorcycle_left", "hubble_deep_field",
           "immunohistochemistry", "retina")
WIDTH, HEIGHT = 4000, 3000
CONNECTIONS = 6  # what a browser opens to one host


def source_images():
    import numpy as np
    from PIL import Image

    images = []
    for name in SOURCES:
        if name in ("china", "flower"):
            from sklearn.datasets import load_sample_images

            data = load_sample_images()
            array = data.images[[Path(f).stem for f in data.filenames].index(name)]
        else:
            from skimage import data as skdata

            if name == "motorcycle_left":
                array = skdata.stereo_motorcycle()[0]
            else:
                array = getattr(skdata, name)()
        array = np.asarray(array)
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        images.append(Image.fromarray(array[..., :3].astype("uint8")).convert("RGB"))
    return images


def make_photos(folder: Path, count: int) -> list[Path]:
    """``count`` different 12 MP JPEGs (kept when they are already there)."""
    from PIL import Image, ImageEnhance, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo-{i:04d}.jpg" for i in range(count)]
    todo = [(i, p) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        images = source_images()
        started = time.perf_counter()
        for i, path in todo:
            img = images[i % len(images)]
            variant = i // len(images)
            w, h = img.size
            cut = 0.02 * (variant % 7)  # a different crop per copy
            box = (int(w * cut), int(h * cut * 0.5), w - int(w * cut * 0.5), h - int(h * cut))
            photo = img.crop(box).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
            if variant % 2:
                photo = ImageOps.mirror(photo)
            photo = ImageEnhance.Brightness(photo).enhance(0.9 + 0.03 * (variant % 7))
            photo.save(path, quality=90)
        print(f"wrote {len(todo)} photos of {WIDTH}×{HEIGHT} in {time.perf_counter() - started:.1f} s", flush=True)
    return paths


def phototag(home: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOTAG_")}
    return subprocess.run([sys.executable, "-m", "phototag", "--home", str(home), *args], check=True, env=env,
                          capture_output=capture, text=True)


def build_library(home: Path, folder: Path, scan: bool) -> str:
    if (home / "phototag.db").exists():
        return "reused"
    started = time.perf_counter()
    if scan:
        phototag(home, "scan", str(folder), capture=True)
        how = "real scan, built-in model"
    else:
        from phototag.config import load_settings
        from phototag.ingest.fingerprint import sha256_file
        from phototag.library import Library, PhotoFacts

        lib = Library(load_settings(home, environ={}))
        try:
            with lib.session() as session:
                for path in sorted(folder.glob("*.jpg")):
                    st = path.stat()
                    lib.upsert_photo(session, PhotoFacts(path=path.resolve(), root=folder.resolve(), size=st.st_size,
                                                         mtime=st.st_mtime, sha256=sha256_file(path),
                                                         width=WIDTH, height=HEIGHT, format="JPEG"))
        finally:
            lib.close()
        how = "rows inserted through the library API (no model)"
    print(f"library: {how} in {time.perf_counter() - started:.1f} s", flush=True)
    return how


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOTAG_")}
    process = subprocess.Popen([sys.executable, "-m", "phototag", "--home", str(home), "serve", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    if not line.startswith("phototag serve: "):
        process.kill()
        raise SystemExit(f"serve did not start: {line}{process.stderr.read()}")
    url = line.split(": ", 1)[1].strip().rstrip("/")
    deadline = time.monotonic() + 30
    while True:
        try:
            fetch(url + "/static/style.css")
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        if response.status != 200:
            raise OSError(f"{url}: HTTP {response.status}")
        return response.read()


def fetch_all(urls: list[str], connections: int) -> float:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        sizes = list(pool.map(fetch, urls))
    assert all(sizes), "an empty response"
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--no-scan", action="store_true", help="insert the rows through the library API (no model)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if args.photos < 100:
        parser.error("--photos must be at least 100 (a result page has 100)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    folder, home = work / "photos", work / "home"
    make_photos(folder, args.photos)
    how = build_library(home, folder, scan=not args.no_scan)
    process, url = start_server(home)
    try:
        query = "/?q=path%3A*.jpg"
        html = fetch(url + query).decode()
        ids = [int(m) for m in re.findall(r'src="/thumb/(\d+)"', html)]
        assert len(ids) == 100, f"the first result page shows {len(ids)} photos, not 100"
        thumbs = [f"{url}/thumb/{i}" for i in ids]

        # cold: nothing cached (the app keeps no cache of its own: the files are the cache)
        shutil.rmtree(home / "thumbnails", ignore_errors=True)
        cold_parallel = fetch_all(thumbs, CONNECTIONS)
        shutil.rmtree(home / "thumbnails", ignore_errors=True)
        cold_serial = fetch_all(thumbs[:50], 1)

        fetch_all(thumbs, CONNECTIONS)  # warm every thumbnail of the page
        page_only, page_and_thumbs = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            fetch(url + query)
            page_only.append(time.perf_counter() - started)
            started = time.perf_counter()
            fetch(url + query)
            fetch_all(thumbs, CONNECTIONS)
            page_and_thumbs.append(time.perf_counter() - started)
    finally:
        process.terminate()
        process.wait(10)

    def ms(values):
        return f"best {min(values) * 1000:6.0f} ms, median {statistics.median(values) * 1000:6.0f} ms"

    print()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"phototag serve, {args.photos} photos of {WIDTH}×{HEIGHT} JPEG ({how}); {os.cpu_count()} CPUs, "
          f"load average {load}")
    print(f"{'measure':<44} {'measured':<36} goal")
    print(f"{'cold thumbnails, 6 connections':<44} {100 / cold_parallel:6.1f} thumbnails/s{'':<17} ≥ 30/s")
    print(f"{'cold thumbnails, 1 connection':<44} {50 / cold_serial:6.1f} thumbnails/s")
    print(f"{'warm result page of 100: HTML only':<44} {ms(page_only)}")
    print(f"{'warm result page of 100: HTML + 100 thumbs':<44} {ms(page_and_thumbs)}   ≤ 300 ms")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
