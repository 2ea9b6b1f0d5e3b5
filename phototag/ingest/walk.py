"""Walking the folders the user asked to scan.

Hidden files and folders, system folders (Synology ``@eaDir``, Windows recycle bins, thumbnail
caches) and other tools' caches are skipped. Symbolic links are followed only when their target
stays inside the root being scanned, and every folder is visited once (no loops); a link that
points nowhere or into a loop of links (``a -> b -> a``) is skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

SKIP_DIRS = {
    "@eadir", "#recycle", "$recycle.bin", "system volume information", "lost+found",
    ".thumbnails", "__macosx", "node_modules", ".dtrash", "digikam4.db-journal",
}
SKIP_SUFFIXES = (".xmp", ".tmp", ".part", ".crdownload", ".download", ".partial", ".swp")


@dataclass(frozen=True)
class FoundFile:
    path: Path  # absolute, inside root
    root: Path
    size: int
    mtime: float


def is_ignored_name(name: str) -> bool:
    """Hidden files, temp/partial downloads and sidecars are never photos to tag."""
    lower = name.lower()
    return name.startswith(".") or name.startswith("~") or lower.endswith(SKIP_SUFFIXES)


def is_skipped_dir(name: str) -> bool:
    return name.startswith(".") or name.lower() in SKIP_DIRS


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def iter_photo_files(
    root: Path | str, extensions: Iterable[str], follow_symlinks: bool = False
) -> Iterator[FoundFile]:
    """Yield the photo files under ``root`` in a stable (sorted) order.

    ``follow_symlinks``: also follow links whose target lies inside ``root`` (links that leave
    ``root`` are never followed)."""
    try:
        root = Path(root).expanduser().resolve()
    except RuntimeError:  # the root itself is a loop of links (Python < 3.13; later: not a folder)
        return
    exts = {e.lower() for e in extensions}
    if root.is_file():
        st = root.stat()
        if root.suffix.lower() in exts:
            yield FoundFile(root, root.parent, st.st_size, st.st_mtime)
        return
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # unreadable folder: skipped (the caller sees no files from it)
        subdirs = []
        for entry in entries:
            try:
                is_link = entry.is_symlink()
                if is_link:
                    if not follow_symlinks:
                        continue
                    try:
                        target = Path(entry.path).resolve(strict=True)
                    except (OSError, RuntimeError):  # RuntimeError: a link loop (Python < 3.13)
                        continue  # a dangling link or a link loop (a -> b -> a): nothing to scan
                    if not _inside(target, root):
                        continue  # never follow a link out of what the user asked to scan
                if entry.is_dir(follow_symlinks=is_link):
                    if not is_skipped_dir(entry.name):
                        subdirs.append(Path(entry.path))
                    continue
                if not entry.is_file(follow_symlinks=is_link) or is_ignored_name(entry.name):
                    continue
                if os.path.splitext(entry.name)[1].lower() not in exts:
                    continue
                est = entry.stat(follow_symlinks=is_link)
            except OSError:
                continue
            yield FoundFile(Path(entry.path), root, est.st_size, est.st_mtime)
        stack.extend(reversed(subdirs))
