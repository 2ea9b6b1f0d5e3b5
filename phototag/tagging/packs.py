"""Model packs: converted RAM / RAM++ / Tag2Text weights + their tag files, in the library home.

A pack is a folder ``<models_dir>/<name>/``::

    weights.safetensors   tagging(+captioning) tensors only, fp32, tied tensors stored once
    tags.txt              class names (copied as given)
    tags_zh.txt           Chinese names (RAM/RAM++, optional)
    thresholds.txt        per-class thresholds (optional; RAM/RAM++ default 0.68 each)
    vocab.txt             BERT vocabulary (Tag2Text captions, optional)
    pack.json             kind, classes, sha256 of every file and of the source checkpoint

:func:`add_pack` builds it in a temporary folder next to the destination and renames it into place,
so a failed or interrupted add leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phototag.ingest.fingerprint import sha256_file

from .base import TaggerError

if TYPE_CHECKING:  # torch and timm are imported where a checkpoint is converted, not to list packs
    from .models.ram import RamArch

PACK_FILE = "pack.json"
WEIGHTS_FILE = "weights.safetensors"
PACK_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED_NAMES = {"builtin"}

#: sha256 of the released checkpoints (Hugging Face LFS pointers, SPEC §1)
OFFICIAL_CHECKPOINTS = {
    "497c178836ba66698ca226c7895317e6e800034be986452dbd2593298d50e87d": "ram_plus_swin_large_14m.pth",
    "15c729c793af28b9d107c69f85836a1356d76ea830d4714699fb62e55fcc08ed": "ram_swin_large_14m.pth",
    "4ce96f0ce98f940a6680d567f66a38ccc9ca8c4e638e5f5c5c2e881a0e3502ac": "tag2text_swin_14m.pth",
    "9ac35ee5e3fe63e53f400f0db1c0000b93632d4cf0f3b681edde30734ef1941d": "tag2text_swin_14m.pth (2023-03-11 upload)",
}
_KIND_TITLES = {"ram": "RAM (Swin-L)", "ram_plus": "RAM++ (Swin-L)", "tag2text": "Tag2Text (Swin-B)"}


class PackError(TaggerError):
    """A model pack cannot be added, found, verified or loaded."""


@dataclass
class PackInfo:
    """What ``pack.json`` says about one pack (plus where it lives)."""

    name: str
    kind: str
    num_classes: int
    captioning: bool
    files: dict[str, str]  #: file name → sha256
    source_name: str
    source_sha256: str
    official: str | None  #: released checkpoint recognised by its sha256, if any
    created: str
    path: Path = field(default=Path("."), compare=False)
    version: int = PACK_VERSION

    @property
    def model_id(self) -> str:
        return f"{self.kind}/{self.source_sha256[:12]}"

    @property
    def weights_sha256(self) -> str:
        return self.files[WEIGHTS_FILE]

    @property
    def description(self) -> str:
        extra = " + captions" if self.captioning else ""
        origin = self.official or f"from {self.source_name}"
        return f"{_KIND_TITLES.get(self.kind, self.kind)}, {self.num_classes} tags{extra}; {origin}"

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("path")
        return data

    @classmethod
    def from_json(cls, data: dict, path: Path) -> "PackInfo":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "path"}
        return cls(**known, path=path)


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name in RESERVED_NAMES:
        raise PackError(
            f"invalid pack name {name!r}: use letters, digits, '.', '_' or '-' (max 64), not {sorted(RESERVED_NAMES)}"
        )


def check_new_pack(models_dir: Path | str, name: str, replace: bool = False) -> None:
    """Raise :class:`PackError` unless :func:`add_pack` may install a pack called ``name``
    (a valid name, not taken unless ``replace``). Lets a caller fail before a long download."""
    _check_name(name)
    models_dir = Path(models_dir)
    if (models_dir / name).exists() and not replace:
        raise PackError(f"a model pack called {name!r} already exists in {models_dir} (--replace replaces it)")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def add_pack(
    models_dir: Path | str,
    name: str,
    checkpoint: Path | str,
    tags: Path | str,
    tags_zh: Path | str | None = None,
    thresholds: Path | str | None = None,
    vocab: Path | str | None = None,
    *,
    replace: bool = False,
    arch: RamArch | None = None,
) -> PackInfo:
    """Check an official checkpoint and its tag files, convert, and install them as pack ``name``.

    The architecture comes from the checkpoint's keys; the tag list must have as many names as the
    checkpoint has classes. Tag2Text keeps its caption modules only when a BERT ``vocab`` is given.
    ``arch`` overrides the released architecture, as in :func:`~.weights.prepare_state` (tests
    install tiny models; the released width is not required then).
    """
    check_new_pack(models_dir, name, replace)
    models_dir = Path(models_dir)
    final = models_dir / name
    checkpoint = Path(checkpoint)
    for label, p in (("tag list", tags), ("Chinese tag list", tags_zh), ("threshold file", thresholds),
                     ("BERT vocabulary", vocab)):
        if p is not None and not Path(p).is_file():
            raise PackError(f"{label} {p} does not exist")
    from .vocab import vocabulary_for
    from .weights import (
        identify,
        official_key_transform,
        prepare_state,
        read_checkpoint,
        write_converted,
    )

    state = read_checkpoint(checkpoint)
    kind = identify(official_key_transform(state), check_width=arch is None)
    vocabulary = vocabulary_for(kind.kind, tags, thresholds, tags_zh)  # validates files before any big write
    vocabulary.check_classes(kind.num_classes)
    if vocab is not None and kind.kind != "tag2text":
        raise PackError(f"--vocab is only for Tag2Text captions; this checkpoint is {kind.kind}")
    captioning = kind.kind == "tag2text" and vocab is not None
    prepared, kind, model = prepare_state(state, captioning=captioning, arch=arch)

    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=models_dir))
    try:
        files: dict[str, str] = {}
        result = write_converted(staging / WEIGHTS_FILE, prepared, kind, model)
        files[WEIGHTS_FILE] = result.sha256
        for src, dst in ((tags, "tags.txt"), (tags_zh, "tags_zh.txt"), (thresholds, "thresholds.txt"),
                         (vocab, "vocab.txt")):
            if src is not None:
                shutil.copyfile(src, staging / dst)
                files[dst] = sha256_file(staging / dst)
        source_sha = sha256_file(checkpoint)
        info = PackInfo(
            name=name,
            kind=kind.kind,
            num_classes=kind.num_classes,
            captioning=result.captioning,
            files=files,
            source_name=checkpoint.name,
            source_sha256=source_sha,
            official=OFFICIAL_CHECKPOINTS.get(source_sha),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            path=final,
        )
        _write_json(staging / PACK_FILE, info.to_json())
        if final.exists():
            old = final.with_name(f".{name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
        return info
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def read_pack(models_dir: Path | str, name: str) -> PackInfo:
    path = Path(models_dir) / name
    meta = path / PACK_FILE
    if not _NAME.match(name) or not meta.is_file():  # a name like ../x never leaves models_dir
        raise PackError(f"no model pack called {name!r} in {models_dir}")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        return PackInfo.from_json(data, path)
    except (ValueError, TypeError, KeyError) as exc:
        raise PackError(f"{meta} is damaged: {exc}") from exc


def list_packs(models_dir: Path | str) -> list[PackInfo]:
    """Installed packs, by name (folders without a readable pack.json are skipped)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    packs = []
    for entry in sorted(models_dir.iterdir()):
        if entry.name.startswith(".") or not (entry / PACK_FILE).is_file():
            continue
        try:
            packs.append(read_pack(models_dir, entry.name))
        except PackError:
            continue
    return packs


def verify_pack(models_dir: Path | str, name: str) -> PackInfo:
    """Re-hash every file of the pack and check the weights' metadata; raise :class:`PackError` on any mismatch."""
    info = read_pack(models_dir, name)
    problems = []
    for fname, expected in info.files.items():
        p = info.path / fname
        if not p.is_file():
            problems.append(f"{fname} is missing")
        elif sha256_file(p) != expected:
            problems.append(f"{fname} has changed (sha256 differs from pack.json)")
    if not problems:
        from .weights import CONVERTED_FORMAT, converted_info

        try:
            meta = converted_info(info.path / WEIGHTS_FILE)
        except Exception as exc:  # noqa: BLE001 - any unreadable header is a verification failure
            problems.append(f"{WEIGHTS_FILE} is unreadable: {exc}")
        else:
            if meta.get("format") != CONVERTED_FORMAT:
                problems.append(f"{WEIGHTS_FILE} has format {meta.get('format')!r}, expected {CONVERTED_FORMAT}")
            if meta.get("kind") != info.kind or meta.get("num_classes") != str(info.num_classes):
                problems.append(f"{WEIGHTS_FILE} holds {meta.get('kind')}/{meta.get('num_classes')}, "
                                f"pack.json says {info.kind}/{info.num_classes}")
        try:
            _vocabulary(info).check_classes(info.num_classes)
        except TaggerError as exc:
            problems.append(str(exc))
    if problems:
        raise PackError(f"model pack {name!r} failed verification: " + "; ".join(problems))
    return info


def _vocabulary(info: PackInfo):
    def opt(fname: str) -> Path | None:
        return info.path / fname if fname in info.files else None

    from .vocab import vocabulary_for

    return vocabulary_for(info.kind, info.path / "tags.txt", opt("thresholds.txt"), opt("tags_zh.txt"))


def load_pack_tagger(
    models_dir: Path | str,
    name: str,
    device: str | None = None,
    precision: str | None = None,
    threshold: float | None = None,
    captions: bool = True,
    backend: str | None = None,
):
    """A lazily-loading :class:`~phototag.tagging.ram_tagger.RamTagger` for pack ``name``; ``backend``
    is the runtime setting (None = torch, for callers that work on the torch model itself)."""
    from .ram_tagger import RamTagger

    info = read_pack(models_dir, name)
    if WEIGHTS_FILE not in info.files or not (info.path / WEIGHTS_FILE).is_file():
        raise PackError(f"model pack {name!r} has no {WEIGHTS_FILE}; add it again")
    return RamTagger(
        name=name,
        kind=info.kind,
        weights=info.path / WEIGHTS_FILE,
        vocabulary=_vocabulary(info),
        weights_sha256=info.weights_sha256,
        device=device,
        precision=precision,
        threshold=threshold,
        captions=captions and info.captioning,
        bert_vocab=info.path / "vocab.txt" if "vocab.txt" in info.files else None,
        model_id=info.model_id,
        backend=backend,
    )


__all__ = [
    "PackError", "PackInfo", "add_pack", "check_new_pack", "list_packs", "load_pack_tagger",
    "read_pack", "verify_pack",
]
