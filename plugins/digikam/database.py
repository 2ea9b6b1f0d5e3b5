"""Writing tags straight into a closed digiKam SQLite database (``digikam4.db``).

The tables involved (digiKam's schema, DBVersion 10 to 16):

* ``AlbumRoots`` (id, label, status, type, identifier, specificPath): the collections. The
  identifier names a volume (``volumeid:?uuid=…``, ``volumeid:?path=…``,
  ``networkshareid:?mountpath=…``); ``specificPath`` is the folder inside it.
* ``Albums`` (id, albumRoot, relativePath, …): folders, ``relativePath`` from the collection
  root (``/`` for the root itself, ``/2024/trip`` below it).
* ``Images`` (id, album, name, status, …): files; status 1 is a visible image.
* ``Tags`` (id, pid, name, …; ``UNIQUE(name, pid)``): the tag tree, ``pid`` 0 for top-level tags.
  digiKam's triggers keep ``TagsTree`` (id, every ancestor pid) in step with ``Tags``.
* ``ImageTags`` (imageid, tagid; ``UNIQUE``): which image has which tag.

Safety: digiKam caches the database in memory and would overwrite or be confused by changes made
while it runs, so :func:`check_closed` refuses when a ``digikam`` process is running or the database
is locked. Before the first change the whole database is copied with SQLite's backup API. All
changes of one export run are a single transaction.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from phototag.db.engine import copy_database
from phototag.errors import PhototagError

DB_NAME = "digikam4.db"
IMAGE_VISIBLE = 1
PROCESS_NAMES = ("digikam", "showfoto")


class DigikamError(PhototagError):
    """The digiKam database cannot be used right now; the message says why and what to do."""


def database_path(setting: str | os.PathLike[str]) -> Path:
    """``digikam4.db`` itself, or the folder that holds it (digiKam's "database folder")."""
    path = Path(setting).expanduser()
    if path.is_dir():
        path = path / DB_NAME
    if not path.is_file():
        raise DigikamError(
            f"no digiKam database at {path}: set [plugins.digikam] database to the digikam4.db file "
            "or the folder digiKam shows under Settings > Configure digiKam > Database")
    return path


def running_digikam_processes() -> list[tuple[int, str]]:
    """(pid, name) of running digiKam (or showFoto) processes, read from /proc."""
    found = []
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if comm.lower() in PROCESS_NAMES:
            found.append((int(entry.name), comm))
    return sorted(found)


def check_closed(db_path: Path) -> None:
    """Raise :class:`DigikamError` if digiKam is running or the database is locked."""
    running = running_digikam_processes()
    if running:
        pids = ", ".join(f"{name} (pid {pid})" for pid, name in running)
        raise DigikamError(f"digiKam is running ({pids}): close it before phototag writes {db_path}, "
                           "or use the XMP sidecar mode (see docs/digikam.md)")
    conn = sqlite3.connect(db_path, timeout=0.5)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
    except sqlite3.OperationalError as exc:
        raise DigikamError(f"{db_path} is in use by another program ({exc}): close digiKam first") from exc
    finally:
        conn.close()


BACKUP_PATTERN = re.compile(r"\.phototag-\d{8}-\d{6}-\d{6}\.bak")


def backups(db_path: Path) -> list[Path]:
    """phototag's backups of ``db_path`` (``digikam4.db.phototag-YYYYMMDD-HHMMSS-ffffff.bak``),
    oldest first. Other files beside the database are never listed."""
    prefix = db_path.name
    found = [p for p in db_path.parent.iterdir()
             if p.name.startswith(prefix) and BACKUP_PATTERN.fullmatch(p.name[len(prefix):]) and p.is_file()]
    return sorted(found, key=lambda p: p.name)  # the stamp sorts as the time does


def backup(db_path: Path, keep: int | None = None) -> Path:
    """Copy the database beside itself (consistent, via SQLite's backup API); then delete all but
    the newest ``keep`` of phototag's backups (None: keep every one)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = db_path.with_name(f"{db_path.name}.phototag-{stamp}.bak")
    copy_database(db_path, target)
    if keep is not None:
        old = [p for p in backups(db_path) if p != target]
        for path in old[:max(0, len(old) - (keep - 1))]:
            path.unlink(missing_ok=True)
    return target


# ---- collections -------------------------------------------------------------------------------


def _mount_points_by_uuid(uuid: str) -> list[Path]:
    device = Path("/dev/disk/by-uuid") / uuid
    try:
        real = os.path.realpath(device)
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    points = []
    for line in mounts:
        parts = line.split()
        if len(parts) >= 2 and os.path.realpath(parts[0]) == real:
            points.append(Path(parts[1].replace("\\040", " ")))
    return points


def collection_paths(identifier: str | None, specific_path: str | None) -> list[Path]:
    """Where an album root is mounted now (several candidates for shares; empty if unknown)."""
    if not identifier:
        return []
    parts = urlsplit(identifier)
    query = parse_qs(parts.query)
    specific = (specific_path or "/").lstrip("/")
    bases: list[Path] = []
    if parts.scheme == "volumeid":
        if "path" in query:
            bases = [Path(unquote(query["path"][0]))]
            specific = ""  # a path-identified root carries its whole path in the identifier
        elif "uuid" in query:
            bases = _mount_points_by_uuid(query["uuid"][0])
    elif parts.scheme == "networkshareid":
        bases = [Path(unquote(p)) for p in query.get("mountpath", [])]
    return [base / specific if specific else base for base in bases]


class DigikamDatabase:
    """One write session on a closed digiKam database."""

    def __init__(self, path: Path, root: str = "phototag", keep_backups: int | None = None) -> None:
        self.path = path
        self.root = root
        self.keep_backups = keep_backups
        self.conn: sqlite3.Connection | None = None
        self.backup_path: Path | None = None
        self._write = False
        self._roots: list[tuple[int, Path]] = []
        self._tag_ids: dict[tuple[str, ...], int] = {}
        self._ours: set[int] | None = None  # ids of the root tag and everything below it

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self, write: bool = True) -> None:
        check_closed(self.path)
        conn = sqlite3.connect(self.path, timeout=0.5, isolation_level=None)
        try:
            version = conn.execute("SELECT value FROM Settings WHERE keyword='DBVersion'").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise DigikamError(f"{self.path} is not a digiKam database: {exc}") from exc
        if version is None:
            conn.close()
            raise DigikamError(f"{self.path} has no DBVersion: not a digiKam database")
        self.version = int(version[0])
        self._write = write
        self.backup_path = None
        if write:  # the backup waits for the first change: a run that changes nothing makes none
            conn.execute("BEGIN IMMEDIATE")
        self.conn = conn
        self._roots = []
        for root_id, identifier, specific in conn.execute(
                "SELECT id, identifier, specificPath FROM AlbumRoots"):
            for candidate in collection_paths(identifier, specific):
                self._roots.append((root_id, Path(os.path.normpath(candidate))))
        self._roots.sort(key=lambda r: len(str(r[1])), reverse=True)  # deepest root first

    def _before_write(self) -> None:
        """Back the database up before this session's first change (the copy is taken by another
        connection while ours holds only its reserved lock, so it is the database as it was)."""
        if not self._write:
            raise DigikamError("the digiKam database was opened read-only")
        if self.backup_path is None:
            self.backup_path = backup(self.path, self.keep_backups)

    def close(self, commit: bool) -> None:
        if self.conn is None:
            return
        try:
            if commit and self._write:
                self.remove_unused_tags()
            if self.conn.in_transaction:
                self.conn.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            self.conn.close()
            self.conn = None

    # -- lookups ------------------------------------------------------------------------------
    def image_id(self, photo: Path) -> int | None:
        """digiKam's id of the image at ``photo`` (None when digiKam does not know it)."""
        assert self.conn is not None
        photo = Path(os.path.normpath(photo))
        for root_id, root_path in self._roots:
            try:
                relative = photo.parent.relative_to(root_path)
            except ValueError:
                continue
            album = "/" if str(relative) == "." else "/" + relative.as_posix()
            row = self.conn.execute(
                "SELECT Images.id FROM Images JOIN Albums ON Images.album = Albums.id "
                "WHERE Albums.albumRoot = ? AND Albums.relativePath = ? AND Images.name = ? "
                "ORDER BY Images.status = ? DESC LIMIT 1",
                (root_id, album, photo.name, IMAGE_VISIBLE)).fetchone()
            if row is not None:
                return int(row[0])
        return None

    def find_tag(self, path: Sequence[str]) -> int | None:
        assert self.conn is not None
        pid = 0
        for name in path:
            row = self.conn.execute("SELECT id FROM Tags WHERE pid = ? AND name = ?", (pid, name)).fetchone()
            if row is None:
                return None
            pid = int(row[0])
        return pid

    def ensure_tag(self, path: Sequence[str]) -> int:
        """The id of the tag at ``path`` (names from the top level), created with its parents."""
        assert self.conn is not None
        key = tuple(path)
        if key in self._tag_ids:
            return self._tag_ids[key]
        pid = 0
        for depth, name in enumerate(key, start=1):
            cached = self._tag_ids.get(key[:depth])
            if cached is not None:
                pid = cached
                continue
            row = self.conn.execute("SELECT id FROM Tags WHERE pid = ? AND name = ?", (pid, name)).fetchone()
            if row is None:
                self._before_write()
                cursor = self.conn.execute("INSERT INTO Tags (pid, name) VALUES (?, ?)", (pid, name))
                pid = int(cursor.lastrowid)
                if self._ours is not None and key[0] == self.root:
                    self._ours.add(pid)
            else:
                pid = int(row[0])
            self._tag_ids[key[:depth]] = pid
        return pid

    def subtree_ids(self, tag_id: int) -> set[int]:
        assert self.conn is not None
        return {int(r[0]) for r in self.conn.execute("SELECT id FROM TagsTree WHERE pid = ?", (tag_id,))}

    def image_tag_paths(self, image_id: int) -> list[tuple[str, ...]]:
        """Every tag of an image as a path of names (for tests and ``--dry-run`` reports)."""
        assert self.conn is not None
        return self._paths({int(t) for (t,) in self.conn.execute("SELECT tagid FROM ImageTags WHERE imageid = ?",
                                                                 (image_id,))})

    # -- the write ----------------------------------------------------------------------------
    def set_image_tags(self, image_id: int, paths: Iterable[Sequence[str]]) -> tuple[int, int]:
        """Make the image's tags under phototag's root exactly ``paths`` (below the root);
        the image's other tags are not touched. Returns (added, removed)."""
        assert self.conn is not None
        if self._ours is None:  # once per run; ensure_tag keeps it up to date
            root_id = self.find_tag((self.root,))
            self._ours = self.subtree_ids(root_id) | {root_id} if root_id is not None else set()
        wanted = {self.ensure_tag((self.root, *p)) for p in paths if p}
        ours = self._ours
        current = {int(r[0]) for r in self.conn.execute(
            "SELECT tagid FROM ImageTags WHERE imageid = ?", (image_id,))} & ours
        stale = current - wanted
        new = wanted - current
        if stale or new:
            self._before_write()
        self.conn.executemany("DELETE FROM ImageTags WHERE imageid = ? AND tagid = ?",
                              [(image_id, t) for t in sorted(stale)])
        self.conn.executemany("INSERT OR IGNORE INTO ImageTags (imageid, tagid) VALUES (?, ?)",
                              [(image_id, t) for t in sorted(new)])
        return len(new), len(stale)

    def remove_unused_tags(self) -> list[tuple[str, ...]]:
        """Delete the tags below phototag's root that no image uses any more (a re-tag dropped
        them), so digiKam's tag tree does not fill with empty nodes. Kept: the root itself, every
        tag an image uses and its ancestors, and every tag the user customised in digiKam (an
        icon, tag properties, face regions) with its ancestors. Tags outside the root are never
        looked at. Returns the paths removed (below the root)."""
        assert self.conn is not None
        root_id = self.find_tag((self.root,))
        if root_id is None:
            return []
        below = "(SELECT id FROM TagsTree WHERE pid = ?)"
        ancestors: dict[int, set[int]] = {}
        for tag_id, pid in self.conn.execute(f"SELECT id, pid FROM TagsTree WHERE id IN {below}", (root_id,)):
            ancestors.setdefault(int(tag_id), set()).add(int(pid))
        ours = set(ancestors)
        if not ours:
            return []
        keep: set[int] = set()
        for sql in (f"SELECT DISTINCT tagid FROM ImageTags WHERE tagid IN {below}",
                    f"SELECT DISTINCT tagid FROM TagProperties WHERE tagid IN {below}",
                    f"SELECT DISTINCT tagid FROM ImageTagProperties WHERE tagid IN {below}",
                    f"SELECT id FROM Tags WHERE id IN {below} AND ((icon IS NOT NULL AND icon != 0) "
                    "OR (iconkde IS NOT NULL AND iconkde != ''))"):
            keep |= {int(r[0]) for r in self.conn.execute(sql, (root_id,))}
        for tag_id in list(keep):
            keep |= ancestors.get(tag_id, set())
        unused = ours - keep - {root_id}
        if not unused:
            return []
        self._before_write()
        removed = [p[1:] for p in self._paths(unused)]
        # digiKam's delete_tagstree trigger deletes a tag's subtree with it; the rest are no-ops
        self.conn.executemany("DELETE FROM Tags WHERE id = ?", [(t,) for t in sorted(unused)])
        self._tag_ids = {k: v for k, v in self._tag_ids.items() if v not in unused}
        if self._ours is not None:
            self._ours -= unused
        return removed

    def _paths(self, tag_ids: set[int]) -> list[tuple[str, ...]]:
        assert self.conn is not None
        rows = {int(i): (int(p), n) for i, p, n in self.conn.execute("SELECT id, pid, name FROM Tags")}
        paths = []
        for tag_id in tag_ids:
            names: list[str] = []
            current, seen = tag_id, set()
            while current in rows and current not in seen:
                seen.add(current)
                pid, name = rows[current]
                names.append(name)
                current = pid
            paths.append(tuple(reversed(names)))
        return sorted(paths)
