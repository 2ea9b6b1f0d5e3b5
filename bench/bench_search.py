"""Search at library scale: tag queries on SQLite and similar-photo search on FAISS.

Builds a synthetic library in the real schema (``phototag.db.models``), by default one million
photos with 10-20 tags each drawn from a ~4585-tag vocabulary with a Zipf distribution and one
512-d clustered embedding each, then prints

* the build time and the DB size per photo;
* the median latency of 3-term tag queries (through ``phototag.query`` when it is there, and
  as the plain SQL shapes a compiler can produce, so the shapes can be compared), without and
  with the indexes of revision 0003 (``--only-tags``: only with them);
* the FAISS index build time, its size per photo, the cold-open time and the top-10 latency.

Goals: < 50 ms median for a 3-term tag query, < 20 ms for FAISS top-10.

    .venv/bin/python bench/bench_search.py --photos 1000000 --db /tmp/ptbench/library.db

Re-running with the same ``--db`` and ``--photos`` reuses the database (``--rebuild`` to force).
Everything runs in this one process; FAISS is held to one thread unless ``--threads`` says more.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TAG_LIST = SHARED / "ram-data" / "ram" / "data" / "ram_tag_list.txt"
TAG_LIST_ZH = SHARED / "ram-data" / "ram" / "data" / "ram_tag_list_chinese.txt"
MODEL_ID = "bench/clustered-512"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- building the library ----------------------------------------------------------------------


def vocabulary(size: int) -> tuple[list[str], list[str | None]]:
    names: list[str] = []
    zh: list[str | None] = []
    if TAG_LIST.exists():
        names = [line.strip() for line in TAG_LIST.read_text("utf-8").splitlines() if line.strip()]
        if TAG_LIST_ZH.exists():
            zh_lines = [line.strip() for line in TAG_LIST_ZH.read_text("utf-8").splitlines()]
            zh = (zh_lines + [None] * len(names))[: len(names)]
    seen: set[str] = set()
    unique = []
    unique_zh = []
    for i, n in enumerate(names):
        if n not in seen:
            seen.add(n)
            unique.append(n)
            unique_zh.append(zh[i] if zh else None)
    while len(unique) < size:
        unique.append(f"tag{len(unique):05d}")
        unique_zh.append(None)
    return unique[:size], unique_zh[:size]


def zipf_probabilities(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


def draw_tags(rng, probs: np.ndarray, n_photos: int, lo: int, hi: int):
    """Per photo, lo..hi distinct tag indices drawn by popularity. Returns (photo_idx, tag_idx)."""
    cand_n = hi + 8
    cand = rng.choice(len(probs), size=(n_photos, cand_n), p=probs)
    cand.sort(axis=1)
    dup = np.zeros_like(cand, dtype=bool)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    key = rng.random(cand.shape)
    key[dup] = 2.0  # duplicates sort last
    order = np.argsort(key, axis=1)
    picked = np.take_along_axis(cand, order, axis=1)
    picked_dup = np.take_along_axis(dup, order, axis=1)
    want = rng.integers(lo, hi + 1, size=n_photos)
    keep = (np.arange(cand_n)[None, :] < want[:, None]) & ~picked_dup
    rows = np.nonzero(keep)
    return rows[0], picked[rows]


def build_library(db_path: Path, n_photos: int, n_tags: int, dim: int, zipf_s: float, seed: int) -> None:
    from sqlalchemy import create_engine

    from phototag.db.models import Base

    if db_path.exists():
        db_path.unlink()
    for suffix in ("-wal", "-shm", "-journal"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{db_path}")
    Base.metadata.create_all(engine)
    engine.dispose()

    rng = np.random.default_rng(seed)
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA journal_mode = OFF")
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA cache_size = -1000000")
    # secondary indexes are dropped during the bulk load and created again after (faster)
    indexes = con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('photos', 'photo_tags', 'embeddings')"
    ).fetchall()
    for name, _sql in indexes:
        con.execute(f'DROP INDEX "{name}"')

    now = "2026-11-01 12:00:00.000000"
    names, names_zh = vocabulary(n_tags)
    con.executemany(
        "INSERT INTO tags (id, name, name_zh) VALUES (?, ?, ?)",
        [(i + 1, n, z) for i, (n, z) in enumerate(zip(names, names_zh))],
    )
    con.execute(
        "INSERT INTO model_runs (id, model_name, model_id, weights_sha256, settings, started_at, photo_count) "
        "VALUES (1, 'bench', ?, ?, '{}', ?, ?)",
        (MODEL_ID, "0" * 64, now, n_photos),
    )
    # random tag order, so popularity is not alphabetical
    tag_of_rank = rng.permutation(n_tags) + 1
    probs = zipf_probabilities(n_tags, zipf_s)
    n_clusters = max(16, n_photos // 1000)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    base_day = dt.datetime(2015, 1, 1)

    chunk = 50_000
    pt_id = 0
    t0 = time.perf_counter()
    for start in range(0, n_photos, chunk):
        n = min(chunk, n_photos - start)
        ids = np.arange(start + 1, start + n + 1)
        days = rng.integers(0, 365 * 10, size=n)
        secs = rng.integers(0, 86400, size=n)
        photos = [
            (int(pid), f"/photos/{int(pid) // 1000:04d}/IMG_{int(pid):07d}.jpg", "/photos",
             int(rng.integers(1_000_000, 8_000_000)), 1.7e9, 4032, 3024, "JPEG",
             (base_day + dt.timedelta(days=int(d), seconds=int(s))).strftime("%Y-%m-%d %H:%M:%S.000000"),
             "ok", now, now, now, 1)
            for pid, d, s in zip(ids, days, secs)
        ]
        con.executemany(
            "INSERT INTO photos (id, path, root, size, mtime, width, height, format, taken_at, status, "
            "added_at, updated_at, tagged_at, tagged_run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            photos,
        )
        p_idx, t_rank = draw_tags(rng, probs, n, 10, 20)
        scores = rng.uniform(0.5, 1.0, size=len(p_idx)).round(4)
        pt_ids = np.arange(pt_id + 1, pt_id + len(p_idx) + 1)
        pt_id += len(p_idx)
        con.executemany(
            "INSERT INTO photo_tags (id, photo_id, tag_id, source, score, model_run_id, created_at) "
            "VALUES (?, ?, ?, 'model', ?, 1, ?)",
            zip(pt_ids.tolist(), (ids[p_idx]).tolist(), tag_of_rank[t_rank].tolist(), scores.tolist(),
                [now] * len(p_idx)),
        )
        cluster = rng.integers(0, n_clusters, size=n)
        vec = centres[cluster] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        blobs = vec.astype("<f4")
        con.executemany(
            "INSERT INTO embeddings (id, photo_id, model_id, model_run_id, dim, vector, created_at) "
            "VALUES (?, ?, ?, 1, ?, ?, ?)",
            ((int(pid), int(pid), MODEL_ID, dim, blobs[i].tobytes(), now) for i, pid in enumerate(ids)),
        )
        con.commit()
        done = start + n
        if done % 200_000 == 0 or done == n_photos:
            log(f"  {done:,} photos, {pt_id:,} photo_tags ({time.perf_counter() - t0:.0f} s)")
    log("  creating indexes")
    for name, sql in indexes:
        t1 = time.perf_counter()
        con.execute(sql)
        con.commit()
        log(f"    {name}: {time.perf_counter() - t1:.1f} s")
    con.execute("ANALYZE")
    con.commit()
    con.close()


# ---- tag queries -------------------------------------------------------------------------------

#: SQL shapes for "photos having all of these tags", newest first, first page.
SHAPES = {
    # what a naive compiler emits: one EXISTS per term, tag looked up by name
    "exists": """
        SELECT p.id FROM photos p
        WHERE {terms}
        ORDER BY p.taken_at DESC LIMIT 100""",
    # drive from the rarest tag's rows, check the others per photo (needs the term order)
    "intersect": """
        SELECT p.id FROM photos p
        WHERE p.id IN ({intersect})
        ORDER BY p.taken_at DESC LIMIT 100""",
}
EXISTS_TERM = (
    "EXISTS (SELECT 1 FROM photo_tags pt JOIN tags t ON t.id = pt.tag_id "
    "WHERE pt.photo_id = p.id AND t.name = ?)"
)
INTERSECT_TERM = "SELECT pt.photo_id FROM photo_tags pt JOIN tags t ON t.id = pt.tag_id WHERE t.name = ?"
COUNT_SQL = "SELECT count(*) FROM ({intersect})"


#: tag name → (id, photo count); a compiler would keep such counts cached (they change slowly)
TAG_INFO: dict[str, tuple[int, int]] = {}

# tag ids resolved first, rarest tag drives (its photo ids come in order from (tag_id, photo_id)),
# the others are probed per photo through UNIQUE(photo_id, tag_id, source)
DRIVE_TERM = "EXISTS (SELECT 1 FROM photo_tags x WHERE x.photo_id = pt.photo_id AND x.tag_id = ?)"
DRIVE_SQL = """
    SELECT pt.photo_id FROM photo_tags pt
    WHERE pt.tag_id = ? AND {terms}
    ORDER BY pt.photo_id DESC LIMIT 100"""
DRIVE_COUNT_SQL = "SELECT count(*) FROM photo_tags pt WHERE pt.tag_id = ? AND {terms}"


def shape_params(shape: str, names: list[str]) -> list:
    if shape.startswith("drive"):
        return [TAG_INFO[n][0] for n in sorted(names, key=lambda n: TAG_INFO[n][1])]
    return names


def shape_sql(shape: str, n_terms: int) -> str:
    if shape == "drive":
        return DRIVE_SQL.format(terms=" AND ".join([DRIVE_TERM] * (n_terms - 1)))
    if shape == "drive-count":
        return DRIVE_COUNT_SQL.format(terms=" AND ".join([DRIVE_TERM] * (n_terms - 1)))
    if shape == "exists":
        return SHAPES["exists"].format(terms=" AND ".join([EXISTS_TERM] * n_terms))
    if shape == "count":
        return COUNT_SQL.format(intersect=" INTERSECT ".join([INTERSECT_TERM] * n_terms))
    return SHAPES[shape].format(intersect=" INTERSECT ".join([INTERSECT_TERM] * n_terms))


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best = float("inf")
    result = None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def query_sets(con: sqlite3.Connection, rng, n_queries: int) -> dict[str, list[list[str]]]:
    rows = con.execute(
        "SELECT t.name, count(*), t.id FROM photo_tags pt JOIN tags t ON t.id = pt.tag_id GROUP BY t.id"
    ).fetchall()
    TAG_INFO.clear()
    TAG_INFO.update({r[0]: (r[2], r[1]) for r in rows})
    names = [r[0] for r in rows]
    counts = np.array([r[1] for r in rows], dtype=np.float64)
    by_use = counts / counts.sum()
    sets = {
        # users type the tags they see most: drawn by how often they are used
        "popular": [[str(t) for t in rng.choice(names, 3, replace=False, p=by_use)] for _ in range(n_queries)],
        # any tag of the vocabulary, uniformly (mostly rare ones)
        "uniform": [[str(t) for t in rng.choice(names, 3, replace=False)] for _ in range(n_queries)],
    }
    # three tags that co-occur on one photo: guarantees a non-empty answer
    picks = rng.integers(1, con.execute("SELECT max(id) FROM photos").fetchone()[0] + 1, n_queries)
    sets["co-occurring"] = []
    for pid in picks:
        tags = [r[0] for r in con.execute(
            "SELECT t.name FROM photo_tags pt JOIN tags t ON t.id = pt.tag_id WHERE pt.photo_id = ?",
            (int(pid),))]
        sets["co-occurring"].append([str(t) for t in rng.choice(tags, 3, replace=False)])
    return sets


class Budget:
    """Abort a query that runs past ``seconds`` (its time is then recorded as the budget)."""

    def __init__(self, con: sqlite3.Connection, seconds: float):
        self.con, self.seconds, self.deadline = con, seconds, 0.0
        con.set_progress_handler(self._check, 10_000)

    def _check(self) -> int:
        return 1 if time.perf_counter() > self.deadline else 0

    def run(self, sql: str, params) -> tuple[float, bool]:
        t = time.perf_counter()
        self.deadline = t + self.seconds
        try:
            self.con.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            return self.seconds, False
        return time.perf_counter() - t, True


def report(label: str, times: list[float], finished: int) -> float:
    med = statistics.median(times) * 1000
    p90 = float(np.percentile(times, 90)) * 1000
    cut = f"   ({len(times) - finished} of {len(times)} cut at the budget)" if finished < len(times) else ""
    log(f"  {label} median {med:8.1f} ms   p90 {p90:8.1f} ms{cut}")
    return med


ALL_SHAPES = ("exists", "intersect", "count", "drive", "drive-count", "phototag.query")


def bench_tag_queries(db_path: Path, n_queries: int, seed: int, budget_s: float,
                      shapes: tuple[str, ...] = ALL_SHAPES) -> dict[str, float]:
    rng = np.random.default_rng(seed + 1)
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    con.execute("PRAGMA cache_size = -262144")  # 256 MiB, like a warm desktop process
    t, sets = timed(lambda: query_sets(con, rng, n_queries))
    log(f"  (picked the query tags in {t:.1f} s)")
    budget = Budget(con, budget_s)
    results: dict[str, float] = {}
    for shape in [s for s in shapes if s != "phototag.query"]:
        sql = shape_sql(shape, 3)
        plan = " | ".join(r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + sql, (1, 2, 3)))
        log(f"  plan[{shape}]: {plan}")
        for set_name, queries in sets.items():
            budget.run(sql, shape_params(shape, queries[0]))  # warm the cache
            runs = [budget.run(sql, shape_params(shape, q)) for q in queries]
            results[f"sql {shape} {set_name}"] = report(
                f"sql {shape:9s} {set_name:13s}", [r[0] for r in runs], sum(r[1] for r in runs))
    con.close()

    try:
        import phototag.query as query  # the real query path, when it exists
    except ImportError:
        query = None
    search_ids = getattr(query, "search_ids", None) if query else None
    if "phototag.query" not in shapes:
        return results
    if search_ids is None:
        log("  phototag.query.search_ids not available: only the SQL shapes above were measured")
        return results
    from sqlalchemy import create_engine, event
    from sqlalchemy.orm import Session

    engine = create_engine(f"sqlite:///{db_path}")
    budgets: list[Budget] = []

    @event.listens_for(engine, "connect")
    def _budget(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA cache_size = -262144")
        budgets.append(Budget(dbapi_conn, budget_s))

    with Session(engine) as session:
        session.execute(__import__("sqlalchemy").text("SELECT 1"))
        b = budgets[-1]

        def time_queries(queries):
            """(seconds, finished) per query, first page of 100; the first query (warm-up) is dropped."""
            runs = []
            for q in (queries[0], *queries):
                t0 = time.perf_counter()
                b.deadline = t0 + budget_s
                try:
                    search_ids(session, list(q), limit=100)
                    runs.append((time.perf_counter() - t0, True))
                except Exception as exc:  # noqa: BLE001 - the budget interrupt comes wrapped
                    if "interrupted" not in str(exc):
                        raise
                    session.rollback()
                    runs.append((budget_s, False))
            return runs[1:]

        for set_name, queries in sets.items():
            runs = time_queries(queries)
            results[f"phototag.query {set_name}"] = report(
                f"phototag.query.search_ids {set_name:13s}", [r[0] for r in runs], sum(r[1] for r in runs))
        forms_rng = np.random.default_rng(seed + 3)
        pop, uni = sets["popular"], sets["uniform"]
        forms = {
            "1 popular tag": [[q[0]] for q in pop],
            "1 random tag": [[q[0]] for q in uni],
            "popular , popular": [[q[0], ",", q[1]] for q in pop],
            "popular ^popular": [[q[0], "^" + q[1]] for q in pop],
            "2 popular taken:YEAR": [q[:2] + [f"taken:{forms_rng.integers(2015, 2025)}"] for q in pop],
            "3 popular taken-": [q + ["taken-"] for q in pop],
        }
        log("  other query forms through phototag.query.search_ids (first page of 100):")
        for form, queries in forms.items():
            runs = time_queries(queries)
            results[f"phototag.query {form}"] = report(
                f"  {form:26s}", [r[0] for r in runs], sum(r[1] for r in runs))
        try:
            from phototag.query.tags import forget_tag_catalogs as forget
        except ImportError:
            forget = None
        if forget is not None:
            # what the first query of a fresh process pays: loading the tags, counting the rows
            runs = []
            for q in sets["co-occurring"]:
                forget()
                t0 = time.perf_counter()
                b.deadline = t0 + budget_s
                search_ids(session, list(q), limit=100)
                runs.append(time.perf_counter() - t0)
            results["phototag.query cold co-occurring"] = report(
                "phototag.query co-occurring, nothing cached", runs, len(runs))
        if sets["co-occurring"]:
            q = sets["co-occurring"][0]
            try:
                from phototag.query import parse_query

                # as search_ids runs it: tag names resolved to ids, the rarest tag driving
                compiled = parse_query(list(q)).resolve_tags(session).statement().compile(
                    engine, compile_kwargs={"literal_binds": True})
                log(f"  phototag.query SQL for {q}: {' '.join(str(compiled).split())}")
            except Exception as exc:  # noqa: BLE001 - informative only
                log(f"  (could not show the compiled SQL: {exc})")
    engine.dispose()
    return results


def _run_query(search, session, text: str):
    result = search(session, text, limit=100)
    return list(result) if not isinstance(result, list) else result


RECOMMENDED_INDEXES = {
    # covering index for "photos with tag X": photo ids in order, no table lookups
    "ix_photo_tags_tag_photo": "CREATE INDEX IF NOT EXISTS ix_photo_tags_tag_photo ON photo_tags (tag_id, photo_id)",
    # the FAISS manifest watermark (count, max id, max created_at per model) from the index alone;
    # without it max(created_at) reads every row (2 KiB each, with its vector blob)
    "ix_embeddings_model_created":
        "CREATE INDEX IF NOT EXISTS ix_embeddings_model_created ON embeddings (model_id, created_at)",
}


def ensure_schema_indexes(db_path: Path) -> None:
    """Create the indexes ``phototag.db.models`` declares that the file lacks (a library built by
    an older version of this script, before migration 0003)."""
    from sqlalchemy import create_engine

    from phototag.db.models import Base

    con = sqlite3.connect(db_path)
    have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    missing = [ix for table in Base.metadata.sorted_tables for ix in table.indexes if ix.name not in have]
    if not missing:
        log("  the library has every index of the schema (revision 0003 included)")
        return
    engine = create_engine(f"sqlite:///{db_path}")
    for ix in missing:
        t, _ = timed(lambda: ix.create(engine, checkfirst=True))
        log(f"  created the missing schema index {ix.name}: {t:.1f} s")
    engine.dispose()
    con = sqlite3.connect(db_path)
    con.execute("ANALYZE")
    con.commit()
    con.close()


def drop_recommended_indexes(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    for name in RECOMMENDED_INDEXES:
        con.execute(f"DROP INDEX IF EXISTS {name}")
    con.execute("ANALYZE")
    con.commit()
    con.close()


def add_recommended_indexes(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    for name, sql in RECOMMENDED_INDEXES.items():
        t, _ = timed(lambda: con.execute(sql))
        con.commit()
        log(f"  {name}: {t:.1f} s")
    con.execute("ANALYZE")
    con.commit()
    con.close()


def watermark_ms(db_path: Path) -> float:
    from sqlalchemy import create_engine

    from phototag.search.embeddings import table_state

    engine = create_engine(f"sqlite:///{db_path}")
    with engine.connect() as conn:
        table_state(conn, MODEL_ID)
        t, _ = timed(lambda: table_state(conn, MODEL_ID), repeats=3)
    engine.dispose()
    log(f"  FAISS manifest watermark query: {t * 1000:.1f} ms")
    return t * 1000


# ---- FAISS -------------------------------------------------------------------------------------


def bench_faiss(db_path: Path, home: Path, n_queries: int, seed: int, threshold: int,
                reuse_index: bool = False) -> dict[str, float]:
    import faiss
    from sqlalchemy import create_engine

    from phototag.search.embeddings import read_embeddings, table_state
    from phototag.search.index import EmbeddingIndex

    rng = np.random.default_rng(seed + 2)
    engine = create_engine(f"sqlite:///{db_path}")
    out: dict[str, float] = {}
    with engine.connect() as conn:
        t, state = timed(lambda: table_state(conn, MODEL_ID))
        log(f"  watermark query (count/max id/max created_at): {t * 1000:.1f} ms")
        out["watermark ms"] = t * 1000
        t, (ids, vectors, dim) = timed(lambda: read_embeddings(conn, MODEL_ID))
        log(f"  read {len(ids):,} embeddings from SQLite: {t:.1f} s")
        out["read s"] = t

    index = EmbeddingIndex(home, engine, MODEL_ID, hnsw_threshold=threshold)
    index._load()
    if reuse_index and index.table == state and len(index) == len(ids):
        log("  reusing the index built by an earlier run (in step with the library)")
    else:
        t0 = time.perf_counter()
        index = EmbeddingIndex(home, engine, MODEL_ID, hnsw_threshold=threshold)
        index.add(ids, vectors)
        build = time.perf_counter() - t0
        index.table = state
        t_save, _ = timed(index.save)
        log(f"  index build ({index.kind}, {len(index):,} vectors): {build:.1f} s; save {t_save:.1f} s")
        out["build s"] = build
    size = index.index_path.stat().st_size
    log(f"  index file {size / 2**20:.0f} MiB = {size / len(ids):.0f} B/photo")
    out["index bytes/photo"] = size / len(ids)

    t, reopened = timed(lambda: EmbeddingIndex.open(home, engine, MODEL_ID, hnsw_threshold=threshold))
    log(f"  cold open (read file + watermark check): {t:.2f} s")
    out["open s"] = t

    picks = rng.integers(0, len(ids), size=n_queries)
    noise = rng.standard_normal((n_queries, dim)).astype(np.float32)
    noise *= 0.3 / np.linalg.norm(noise, axis=1, keepdims=True)
    query_sets = {
        # similar_to_photo: the stored vector of a library photo (it finds itself first)
        "library photo": vectors[picks],
        # similar_to_file on an edited copy: the vector moved by 0.3 (cosine ~0.95)
        "edited copy": vectors[picks] + noise,
    }
    for name, queries in query_sets.items():
        exact = []
        for q in queries[:20]:
            scores = vectors @ (q / np.linalg.norm(q))
            exact.append(set(ids[np.argpartition(-scores, 10)[:10]].tolist()))
        for ef in (128, 256, 512):
            reopened.ef_search = ef
            times, recall = [], 0
            for qi, q in enumerate(queries):
                t, hits = timed(lambda: reopened.search(q, 10))
                times.append(t)
                if qi < 20:
                    recall += len(exact[qi] & {h[0] for h in hits})
            med = statistics.median(times) * 1000
            log(f"  FAISS top-10 ({reopened.kind}, efSearch {ef}, {name}): median {med:.2f} ms, "
                f"p90 {np.percentile(times, 90) * 1000:.2f} ms, recall@10 {recall / (10 * len(exact)):.3f}")
            out[f"faiss top10 ms ef{ef} {name}"] = med
    queries = query_sets["edited copy"]

    flat = faiss.IndexFlatIP(dim)
    flat.add(vectors)
    times = [timed(lambda: flat.search(q[None, :], 10))[0] for q in queries[:10]]
    log(f"  brute force (IndexFlatIP) top-10 for comparison: median {statistics.median(times) * 1000:.1f} ms")
    out["flat top10 ms"] = statistics.median(times) * 1000
    engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1_000_000)
    ap.add_argument("--tags", type=int, default=4585, help="vocabulary size")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of tag popularity")
    ap.add_argument("--db", type=Path, default=None, help="library file (default: a temp dir)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the library even if --db exists")
    ap.add_argument("--queries", type=int, default=30, help="queries per set")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds before a query is cut off")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hnsw-threshold", type=int, default=50_000)
    ap.add_argument("--reuse-index", action="store_true", help="search the index left by an earlier run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--only-faiss", action="store_true", help="only the FAISS part")
    ap.add_argument("--only-tags", action="store_true",
                    help="only the tag queries, with the schema's indexes (no FAISS)")
    ap.add_argument("--shapes", default=",".join(ALL_SHAPES), help="query shapes to time")
    args = ap.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(args.threads)
    db_path = args.db or Path(tempfile.mkdtemp(prefix="phototag-bench-")) / "library.db"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    home = db_path.parent / "home"
    log(f"library {db_path}: {args.photos:,} photos, {args.tags} tags, {args.dim}-d embeddings")

    reuse = False
    if db_path.exists() and not args.rebuild:
        con = sqlite3.connect(db_path)
        try:
            reuse = con.execute("SELECT count(*) FROM photos").fetchone()[0] == args.photos
        except sqlite3.Error:
            reuse = False
        con.close()
    if reuse:
        log("reusing the existing library")
    else:
        t, _ = timed(lambda: build_library(db_path, args.photos, args.tags, args.dim, args.zipf, args.seed))
        log(f"library build: {t:.0f} s")
    db_size = db_path.stat().st_size
    con = sqlite3.connect(db_path)
    n_pt = con.execute("SELECT count(*) FROM photo_tags").fetchone()[0]
    con.close()
    log(f"DB size {db_size / 2**30:.2f} GiB = {db_size / args.photos:.0f} B/photo "
        f"({db_size / args.photos - args.dim * 4:.0f} B/photo without the embedding blob); "
        f"{n_pt:,} photo_tags ({n_pt / args.photos:.1f}/photo)")

    ensure_schema_indexes(db_path)
    shapes = tuple(args.shapes.split(","))
    if args.only_faiss:
        log("similar photos (FAISS):")
        bench_faiss(db_path, home, args.queries, args.seed, args.hnsw_threshold, args.reuse_index)
        return 0
    if args.only_tags:
        log(f"tag queries ({args.budget:g} s budget per query), with the schema's indexes:")
        bench_tag_queries(db_path, args.queries, args.seed, args.budget, shapes)
        return 0
    # the schema has had these indexes since revision 0003: drop them for a before/after view
    drop_recommended_indexes(db_path)
    log(f"tag queries (3 terms, first page of 100; {args.budget:g} s budget per query), "
        "without the revision 0003 indexes:")
    bench_tag_queries(db_path, args.queries, args.seed, args.budget, shapes)
    watermark_ms(db_path)
    log("restoring the revision 0003 indexes:")
    add_recommended_indexes(db_path)
    log("tag queries with the schema's indexes (revision 0003):")
    bench_tag_queries(db_path, args.queries, args.seed, args.budget, shapes)
    watermark_ms(db_path)
    if not args.skip_faiss:
        log("similar photos (FAISS):")
        bench_faiss(db_path, home, args.queries, args.seed, args.hnsw_threshold, args.reuse_index)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
