"""Wall times of the commands issue 11's "Done when" names, through the real CLI, on a 10,000-photo library.

Builds the library with ``bench_search.build_library`` (the real schema, RAM's 4585-tag vocabulary with its
Chinese names, 10-20 Zipf-drawn tags per photo), stamps it at the head schema revision so the CLI opens it
as it is, then runs each command as its own process (what a user waits for) and prints

* ``phototag --help``, ``phototag search cat``, ``phototag show PHOTO`` (goals: 0.5 s, 1.0 s, 1.0 s);
* ``search '~"a cup of coffee"'`` cold (no vocabulary vectors yet: every tag text is embedded) and warm
  (goal 1.5 s), and a second warm query.

Measuring only; the medians of ``--repeats`` runs.

    .venv/bin/python bench/bench_text_search.py --photos 10000 --workdir /tmp/pttext
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from bench_search import build_library, log  # noqa: E402


def stamp_head(db_path: Path) -> None:
    from phototag.db.engine import head_revision

    con = sqlite3.connect(db_path)
    con.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    con.execute("DELETE FROM alembic_version")
    con.execute("INSERT INTO alembic_version VALUES (?)", (head_revision(),))
    con.commit()
    con.close()


def timed_cli(home: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [str(Path(sys.executable).with_name("phototag")), "--home", str(home), *args]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - t0, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=10_000)
    ap.add_argument("--tags", type=int, default=4585)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pttext"))
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args(argv)

    home = args.workdir / "home"
    db_path = home / "phototag.db"
    if args.rebuild or not db_path.exists():
        home.mkdir(parents=True, exist_ok=True)
        log(f"building {args.photos:,} photos, {args.tags} tags")
        build_library(db_path, args.photos, args.tags, 64, 1.1, 0)
        stamp_head(db_path)
    shutil.rmtree(home / "cache" / "text", ignore_errors=True)  # so the first ~ query is cold

    def median(*cli_args: str) -> tuple[float, subprocess.CompletedProcess]:
        runs = [timed_cli(home, *cli_args) for _ in range(args.repeats)]
        return statistics.median(t for t, _ in runs), runs[-1][1]

    photo = sqlite3.connect(db_path).execute("SELECT path FROM photos ORDER BY id LIMIT 1").fetchone()[0]
    cold, result = timed_cli(home, "search", '~"a cup of coffee"')
    if result.returncode not in (0, 1):
        print(result.stderr, file=sys.stderr)
        return 1
    rows = [
        ("phototag --help", 0.5, *median("--help")),
        ("phototag search cat", 1.0, *median("search", "cat")),
        ("phototag show PHOTO", 1.0, *median("show", f"#{1}")),
        ('search ~"a cup of coffee" (cold)', None, cold, result),
        ('search ~"a cup of coffee" (warm)', 1.5, *median("search", '~"a cup of coffee"')),
        ('search ~"dog on the beach" (warm)', 1.5, *median("search", '~"dog on the beach"')),
    ]
    print(f"\n{args.photos:,} photos, {args.tags} tags ({photo} …), median of {args.repeats}")
    print(f"{'command':40s} {'seconds':>8s} {'goal':>6s}  exit  stderr")
    for label, goal, seconds, res in rows:
        stderr = res.stderr.strip().splitlines()[-1][:40] if res.stderr.strip() else ""
        print(f"{label:40s} {seconds:8.2f} {goal if goal else '':>6}  {res.returncode:4d}  {stderr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
