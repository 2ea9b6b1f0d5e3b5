"""Writing a file so that a crash leaves the old file or the new one, never half of one.

Every file phototag writes (config.toml, state files, packs, the FAISS index, sidecars, backups)
goes through :func:`replacing`: the content is written to a uniquely named temp file beside the
target (``.NAME.PID.RANDOM.tmp``), flushed to disk, renamed over the target, and the folder entry
is flushed too. On any error the temp file is removed and the target is untouched. The pid in the
name lets :func:`remove_stale_temp_files` clean up after a process that was killed mid-write.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

TEMP_SUFFIX = ".tmp"


def fsync_dir(folder: Path | str) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path_for(path: Path) -> Path:
    """A fresh temp file name beside ``path`` (not created)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def replacing(path: Path | str, *, mode: int | None = None, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for the caller to write (with ``open`` or any library's
    save-to-file); when the block ends without an error, the temp file is fsynced and renamed over
    ``path``. The new file gets ``mode``, else the mode of the file it replaces, else the usual
    ``0o666 & ~umask``.

    ``durable=False`` skips the two fsyncs, for caches that are rebuilt when lost (thumbnails): the
    rename still means a reader sees the old file or the whole new one, never a half-written one,
    but after a power cut the file may be empty (a cache checks what it reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_umask()
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_bytes(path: Path | str, data: bytes, *, mode: int | None = None) -> None:
    with replacing(path, mode=mode) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def write_text(path: Path | str, text: str, *, encoding: str = "utf-8", mode: int | None = None) -> None:
    """``text`` encoded strictly as ``encoding`` (a ``str`` that cannot be encoded raises before
    anything is written)."""
    write_bytes(path, text.encode(encoding), mode=mode)


def write_json(path: Path | str, data: Any, *, indent: int | None = 2, sort_keys: bool = False,
               mode: int | None = None) -> None:
    """``data`` as JSON text (non-ASCII kept, lone surrogates of odd file names as ``\\udcXX``
    escapes so the file is always valid UTF-8), with a final newline."""
    text = json.dumps(data, ensure_ascii=False, indent=indent, sort_keys=sort_keys, default=str)
    write_bytes(path, (text + "\n").encode("utf-8", "backslashreplace"), mode=mode)


def remove_stale_temp_files(folder: Path | str) -> list[Path]:
    """Delete temp files of :func:`replacing` that a killed process left in ``folder`` (files of a
    live process are kept). Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
            continue
        parts = name[: -len(TEMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
