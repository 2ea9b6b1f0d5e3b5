"""Peak memory (RSS) of a real `phototag scan` process, built-in model or a full-size RAM++ pack.

    .venv/bin/python bench/bench_memory.py [--photos 40] [--size 2048]
    .venv/bin/python bench/bench_memory.py --model ram_plus --photos 8

Generates N distinct JPEG photos from scikit-image's/scikit-learn's real photos (as
bench_scan_throughput.py does), then runs ``python -m phototag --home TMP scan FOLDER`` as a child of a
small launcher process and prints the child's peak RSS (``ru_maxrss``). The launcher is a bare Python
(~10 MB) started for the purpose: Linux carries ``ru_maxrss`` across ``exec`` from the process that
forked, so measuring a child forked straight from a big process (this script after building photos, or
pytest) would report that process's size instead.

``--model ram_plus`` installs a full-size RAM++ pack (Swin-L, 4585 tags, synthetic weights from the
manifest in ../shared/ram-data), scans one photo first (the runtime's one-time ONNX export, not
measured) and checks the issue's bound on the measured scan: peak RSS ≤ pack size + 1 GB.
``--env KEY=VALUE`` (repeatable) sets variables for the scan, e.g. to compare allocator settings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

#: the launcher: runs argv[1:] as its child, prints the child's peak RSS and wall time as JSON
LAUNCHER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": done.returncode, "seconds": time.perf_counter() - t,
                  "peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                  "stdout": done.stdout[-4000:], "stderr": done.stderr[-4000:]}))
"""


def measure(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``argv`` under a fresh small launcher; its peak RSS in bytes, wall seconds, output."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout)


def scan_peak(home: Path, folder: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    result = measure([sys.executable, "-m", "phototag", "--home", str(home), "scan", "--quiet", "--format", "json",
                      *extra, str(folder)], env)
    if result["rc"] != 0:
        raise SystemExit(f"scan failed ({result['rc']}):\n{result['stdout']}\n{result['stderr']}")
    report = result["stdout"]
    result["report"] = json.loads(report[report.index("{"):])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--size", type=int, default=2048, help="long side of the generated photos")
    ap.add_argument("--model", choices=("builtin", "ram_plus"), default="builtin")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the scan process")
    args = ap.parse_args()
    from bench_scan_throughput import make_photos

    env = dict(kv.split("=", 1) for kv in args.env)
    env.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="phototag-mem-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        make_photos(folder, args.photos, args.size)
        home = tmp / "home"
        extra: list[str] = []
        pack_bytes = 0
        if args.model == "ram_plus":
            # the pack is built in a child of its own, so this process stays small
            subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]);"
                            "from bench_scan_throughput import ram_plus_tagger; from pathlib import Path;"
                            "ram_plus_tagger(Path(sys.argv[1]))", str(home), str(REPO / "bench")], check=True)
            pack_bytes = sum(f.stat().st_size for f in (home / "models" / "ram_plus").rglob("*") if f.is_file())
            extra = ["--model", "ram_plus"]
            # the runtime's one-time export (backend = auto: ONNX Runtime fp32 until a benchmark says
            # otherwise) is made by a first scan of one photo, not measured: it is paid once per pack
            warm = tmp / "warm-up"
            warm.mkdir()
            make_photos(warm, 1, args.size)
            t0 = time.perf_counter()
            scan_peak(home, warm, *extra, env=env)
            print(f"warm-up scan (one-time runtime export): {time.perf_counter() - t0:.0f} s")
        base = measure([sys.executable, "-c", "import torch"], env)
        t0 = time.perf_counter()
        result = scan_peak(home, folder, *extra, env=env)
        report = result["report"]
        print(f"{args.model}: {report['tagged']} photos tagged ({args.size}px), {report['failed']} failed, "
              f"{time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs; env {env}")
        print(f"peak RSS of `phototag scan`: {result['peak_rss'] / 2**20:.0f} MiB "
              f"(a bare `import torch`: {base['peak_rss'] / 2**20:.0f} MiB)")
        for key in ("load_seconds", "tagging_seconds", "photos_per_second"):
            if key in report:
                print(f"  {key}: {report[key]}")
        if pack_bytes:
            bound = pack_bytes + 2**30
            verdict = "within" if result["peak_rss"] <= bound else "OVER"
            print(f"pack {pack_bytes / 2**20:.0f} MiB; bound pack + 1 GiB = {bound / 2**20:.0f} MiB: {verdict}")
        elif result["peak_rss"] > 600 * 2**20:
            print("OVER the 600 MiB goal")


if __name__ == "__main__":
    main()
