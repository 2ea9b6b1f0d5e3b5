"""The table of every setting (data): :data:`SCHEMA`, and what is derived from it — the settings by
key, the tables (``[scan]``, ``[plugins.xmp]``, …) and the nested defaults. docs/configuration.md
mirrors :data:`SCHEMA` (``tests/config/test_config.py`` checks it)."""

from __future__ import annotations

import copy
import difflib
from typing import Any, Mapping

from phototag.config.errors import ConfigError
from phototag.config.spec import Setting

_EXTENSIONS = [
    ".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp",
    ".heic", ".heif", ".avif",
    ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw",
]

#: Every setting phototag (and its bundled plugins) reads. docs/configuration.md mirrors this list.
SCHEMA: tuple[Setting, ...] = (
    Setting("default_model", "str", "builtin", "the model scan/watch/retag use: builtin or an installed pack's name"),
    Setting("device", "str", "auto", "where models run: auto (a GPU when there is one), cpu, cuda or cuda:N",
            pattern=r"auto|cpu|cuda(:\d+)?|mps", pattern_doc='one of "auto", "cpu", "cuda", "cuda:N", "mps"'),
    Setting("precision", "str", "auto", "number format of the tagging path (bf16 on CPUs that support it)",
            choices=("auto", "fp32", "bf16", "fp16")),
    Setting("backend", "str", "auto",
            "runtime of a RAM-class pack's tagging path: auto (the fastest one `phototag models benchmark` measured "
            "on this machine whose tags agree with torch fp32), torch, onnxruntime or openvino",
            choices=("auto", "torch", "onnxruntime", "openvino")),
    Setting("database_url", "str", None,
            "the library database as a SQLAlchemy URL (e.g. postgresql+psycopg://user@host:5432/phototag); "
            "unset = phototag.db in the home (SQLite)", optional=True),
    Setting("batch_size", "int", 0, "photos per model call; 0 = the model's preference", min=0),
    Setting("decode_workers", "int", 0, "parallel photo decoders; 0 = auto (the cores are shared with the model by device)",
            min=0),
    Setting("threshold", "float", None, "one score threshold for every tag, instead of the model's per-tag ones",
            min=0, max=1, optional=True),
    Setting("scan.follow_symlinks", "bool", False,
            "follow symbolic links (only those that stay inside the folder being scanned)"),
    Setting("scan.extensions", "list[str]", _EXTENSIONS, "file name extensions that are photos",
            pattern=r"\.[^./\\]+", pattern_doc='each starting with "."'),
    Setting("scan.max_pixels", "int", 300_000_000, "photos larger than this are refused (decompression-bomb guard)",
            min=1),
    Setting("watch.roots", "list[str]", [], "folders `phototag watch` uses when none are given",
            example='["~/Pictures"]'),
    Setting("watch.stable_seconds", "float", 3.0, "a new file is tagged once its size and mtime were stable this long",
            min=0),
    Setting("watch.batch_timeout", "float", 1.0, "seconds a partial batch waits before it goes to the model", min=0),
    Setting("watch.reconcile_minutes", "float", 60.0,
            "minutes between full passes over the roots (catches missed events)",
            min=0),
    Setting("watch.polling", "bool", False, "poll instead of inotify (automatic on network filesystems)"),
    Setting("watch.poll_seconds", "float", 10.0, "seconds between two polls of a polled folder", min=0.1),
    Setting("watch.delete_seconds", "float", 1.0, "seconds a delete waits for a matching create (a move)", min=0),
    Setting("retag.every", "str", None, 're-tag photos whose tags are older than this ("30d", "12h", "2w")',
            optional=True),
    Setting("retag.window", "str", None, 'local-time window for background re-tags ("01:00-06:00")',
            optional=True),
    Setting("retag.check_seconds", "float", 60.0,
            "seconds between two checks of `watch` for photos due a re-tag (0 = never)", min=0),
    Setting("retag.batch_limit", "int", 1000, "most photos one background re-tag check queues", min=1),
    Setting("ray.actors", "int", 0,
            "tagging actors `scan --ray`/`retag --ray` start: 0 = one per GPU of the cluster, or one per node without GPUs",
            min=0),
    Setting("ray.path_map", "list[str]", [],
            'where the workers see the photos when their mount points differ: "LOCAL_PREFIX=WORKER_PREFIX" entries',
            example='["/home/me/Pictures=/mnt/nas/Pictures"]'),
    Setting("serve.host", "str", "127.0.0.1", "address `phototag serve` listens on (any other than localhost needs the token)"),
    Setting("serve.port", "int", 8765, "port `phototag serve` listens on", min=0, max=65535),
    Setting("serve.token", "str", None,
            "the token a browser must give when `serve` listens beyond localhost (unset = a new one printed at start)",
            optional=True),
    Setting("serve.thumbnail_size", "int", 360, "longest side of the thumbnails `serve` shows, in pixels",
            min=64, max=2048),
    Setting("export.auto", "bool|list[str]", True,
            "exporters run after tagging: true = every enabled one, false = none, or a list of names"),
    Setting("export.min_score", "float", 0.0,
            "a model's tag scored below this is kept in the library but not written to sidecars/apps; "
            "your own tags always are", min=0, max=1),
    Setting("plugins.enabled", "list[str]", [], "plugins that are active (names as `phototag plugins` shows them)",
            example='["xmp"]'),
    Setting("plugins.xmp.root", "str", "phototag", "the keyword phototag's tags are written under",
            pattern=r"[^/|]*[^/|\s][^/|]*", pattern_doc="one keyword without / or |"),
    Setting("plugins.xmp.sidecar", "bool", True, "write XMP sidecars"),
    Setting("plugins.xmp.sidecar_style", "str", "name.ext.xmp",
            "name of new sidecars: photo.jpg.xmp (name.ext.xmp) or photo.xmp (name.xmp)",
            choices=("name.ext.xmp", "name.xmp")),
    Setting("plugins.xmp.write_image", "bool", False, "also write the keywords into JPEG, PNG, TIFF and WebP files"),
    Setting("plugins.xmp.languages", "list[str]", ["en"], "tag names to write: English and/or Chinese",
            choices=("en", "zh")),
    Setting("plugins.digikam.database", "str", None, "digikam4.db, or the folder that holds it (database mode)",
            optional=True),
    Setting("plugins.digikam.root", "str", "phototag", "the top-level digiKam tag phototag's tags go under"),
    Setting("plugins.digikam.languages", "list[str]", ["en"], "tag names to write: English and/or Chinese",
            choices=("en", "zh")),
    Setting("plugins.digikam.keep_backups", "int", 5,
            "backups of the digiKam database to keep (older ones are deleted)",
            min=1),
)

SETTINGS: dict[str, Setting] = {s.key: s for s in SCHEMA}
#: tables (``[scan]``, ``[plugins.xmp]``, …): every proper prefix of a declared key
TABLES: frozenset[str] = frozenset(
    ".".join(s.key.split(".")[:i]) for s in SCHEMA for i in range(1, len(s.key.split(".")))
)


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return out


#: The defaults as a nested dict (tables included), built from :data:`SCHEMA`.
DEFAULTS: dict[str, Any] = nested({s.key: s.default for s in SCHEMA})


def setting(key: str) -> Setting:
    """The declared setting ``key``; ConfigError (with the nearest known key) when there is none."""
    try:
        return SETTINGS[key]
    except KeyError:
        raise ConfigError(f"unknown setting {key!r}{did_you_mean(key)}") from None


def nearest_key(key: str) -> str | None:
    """The declared setting or table whose name is closest to ``key`` (None when none is close)."""
    near = difflib.get_close_matches(key, [*SETTINGS, *TABLES], n=1, cutoff=0.6)
    if not near:  # a bare name whose table was forgotten: "stable_seconds" → "watch.stable_seconds"
        near = [k for k in SETTINGS if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:1]
    return near[0] if near else None


def did_you_mean(key: str) -> str:
    near = nearest_key(key)
    return f" (did you mean {near!r}?)" if near else ""
