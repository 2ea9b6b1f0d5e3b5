"""The keywords a photo's files hold: XMP sidecars, embedded XMP and IPTC, read through exiv2.

phototag reads a photo's keywords on every scan (the user's own become ``imported`` tags) and
compares the part under its own root keyword with the record of what it wrote there (two-way sync,
docs/sync.md). This module is that reading side and the keyword model it shares with the writers
(the ``xmp`` plugin writes sidecars with the same field names, records and path spelling):

=============================  =========  ===========================================================
``Xmp.digiKam.TagsList``       rdf:Seq    full paths joined with ``/`` (``phototag/animal/cat``)
``Xmp.lr.hierarchicalSubject``  rdf:Bag   paths joined with ``|``, every ancestor path too
``Xmp.dc.subject``             rdf:Bag    leaf names (``cat``)
``Xmp.phototag.subjects``      rdf:Bag    the ``dc:subject`` leaves phototag added
``Xmp.phototag.written``       rdf:Bag    the TagsList paths under the root phototag wrote last
``Xmp.phototag.manual``        rdf:Bag    those of them that are manual tags
=============================  =========  ===========================================================

A tag name that contains a field's separator (``AC/DC``) stays one level: in that field the separator
is replaced by a look-alike (:func:`level_name`).

Any file name works. exiv2 takes a name as UTF-8 text, so a name that is not valid UTF-8
(``latin1_\\xe9t\\xe9.jpg`` from an old archive or a NAS share; Python spells its bytes as lone
surrogates) is never handed to it: such a file is read into memory and exiv2 reads the bytes (other
names are opened by exiv2 itself, which reads only the metadata of a large RAW file).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from phototag.errors import PhototagError

if TYPE_CHECKING:  # pragma: no cover
    from phototag.config import Settings

log = logging.getLogger(__name__)
# Exiv2 warns about every camera's quirky maker notes while phototag only reads keywords: keep
# its errors, not its warnings, on the user's terminal.
logging.getLogger("exiv2").setLevel(logging.ERROR)

PHOTOTAG_NS = "http://ns.phototag.invalid/xmp/1.0/"
PHOTOTAG_PREFIX = "phototag"

TAGS_LIST = "Xmp.digiKam.TagsList"
HIERARCHICAL = "Xmp.lr.hierarchicalSubject"
SUBJECT = "Xmp.dc.subject"
RECORD = f"Xmp.{PHOTOTAG_PREFIX}.subjects"
#: the TagsList entries under phototag's root that phototag wrote last time, and those of them that
#: are manual tags: what the user changed under the root since is told apart from what phototag wrote
#: (two-way sync, docs/sync.md)
WRITTEN_RECORD = f"Xmp.{PHOTOTAG_PREFIX}.written"
MANUAL_RECORD = f"Xmp.{PHOTOTAG_PREFIX}.manual"
#: hierarchical keyword fields other tools write, with their separators (read only)
OTHER_HIERARCHICAL = {"Xmp.MicrosoftPhoto.LastKeywordXMP": "/", "Xmp.mediapro.CatalogSets": "|"}
IPTC_KEYWORDS = "Iptc.Application2.Keywords"

#: top-level keywords that are another tool's bookkeeping, not the user's (darktable|format|nef …)
IGNORED_ROOTS = ("darktable",)

#: the setting that names the top-level keyword phototag's tags are written under. The ``xmp``
#: plugin writes under it and every scan reads it (keywords under it are phototag's, not the user's),
#: whether that plugin is enabled or not: one key, declared in :data:`phototag.config.SCHEMA`.
ROOT_SETTING = "plugins.xmp.root"
DEFAULT_ROOT = "phototag"

#: what a tag name's own hierarchy separator becomes inside one level of a hierarchical keyword:
#: digiKam's ``/`` (``Xmp.digiKam.TagsList``, its tag tree) and Lightroom's ``|``
#: (``Xmp.lr.hierarchicalSubject``). A flat tag ``AC/DC`` must stay one level, and neither format
#: has an escape, so the separator is replaced by a look-alike that is not one.
SEPARATOR_LOOKALIKES = {"/": "\u2215", "|": "\u2223"}  # DIVISION SLASH, DIVIDES


class SidecarError(PhototagError):
    """A sidecar or image could not be read (or written); the message names the file."""


def keyword_root(settings: "Settings") -> str:
    """The top-level keyword phototag's own tags live under (``[plugins.xmp] root``)."""
    return str(settings.get(ROOT_SETTING) or DEFAULT_ROOT)


def level_name(name: str, separator: str) -> str:
    """``name`` as one level of a keyword path whose levels are joined with ``separator``."""
    return name.replace(separator, SEPARATOR_LOOKALIKES[separator])


def tag_name_of_level(level: str) -> str:
    """One level of a keyword path as the tag name it was written for (look-alikes back)."""
    for separator, lookalike in SEPARATOR_LOOKALIKES.items():
        level = level.replace(lookalike, separator)
    return level


_init_lock = threading.Lock()
_initialised = False


def load_exiv2():
    """The exiv2 module, phototag's namespace registered (once; never at import time of this module)."""
    global _initialised
    import exiv2

    if not _initialised:
        with _init_lock:
            if not _initialised:
                exiv2.XmpParser.initialize()
                try:
                    exiv2.XmpProperties.registerNs(PHOTOTAG_NS, PHOTOTAG_PREFIX)
                except exiv2.Exiv2Error:  # already registered by a packet that used it
                    pass
                _initialised = True
    return exiv2


# ---- sidecar names -----------------------------------------------------------------------------


def sidecar_candidates(photo: Path) -> tuple[Path, Path]:
    """The two sidecar names in use: ``photo.xmp`` (digiKam's "compatible" names, Lightroom) and
    ``photo.jpg.xmp`` (digiKam's and darktable's default)."""
    photo = Path(photo)
    return photo.with_suffix(".xmp"), photo.with_name(photo.name + ".xmp")


def _existing(path: Path) -> Path | None:
    for candidate in (path, path.with_suffix(".XMP")):
        if candidate.is_file():
            return candidate
    return None


def find_sidecars(photo: Path) -> list[Path]:
    """Existing sidecars of ``photo``, the preferred one (``photo.xmp``) first."""
    found = []
    for candidate in sidecar_candidates(photo):
        existing = _existing(candidate)
        if existing is not None and existing not in found:
            found.append(existing)
    return found


def photos_of_sidecar(path: str, extensions: Iterable[str]) -> list[str]:
    """The photos an XMP sidecar belongs to: ``a.jpg.xmp`` is a.jpg's, ``a.xmp`` that of every photo
    named ``a.<ext>`` in its folder (``extensions``: lower-case photo suffixes with their dot). Only
    files that exist; empty for a file that is not a sidecar."""
    folder, name = os.path.split(path)
    if not name.lower().endswith(".xmp") or name.startswith("."):
        return []
    suffixes = set(extensions)
    stem = name[:-4]
    photos = [os.path.join(folder, stem)] if os.path.splitext(stem)[1].lower() in suffixes else []
    try:
        entries = os.listdir(folder)
    except OSError:
        entries = []
    photos += [os.path.join(folder, e) for e in entries
               if os.path.splitext(e)[0] == stem and os.path.splitext(e)[1].lower() in suffixes]
    return [p for p in dict.fromkeys(photos) if os.path.isfile(p)]


def sidecar_stat(photo: Path | str) -> str:
    """What the photo's sidecars look like on disk: ``"<name after the stem>:<size>:<mtime ns>"`` of
    each (``.xmp:2311:1733…;.jpg.xmp:…``), ``""`` when it has none. Stored per photo after phototag
    read or wrote them: a different value later means another app changed, added or removed one."""
    photo = Path(photo)
    parts = []
    for sidecar in find_sidecars(photo):
        try:
            st = os.stat(sidecar)
        except OSError:
            continue
        parts.append(f"{sidecar.name[len(photo.stem):]}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


# ---- the keyword fields of one packet ----------------------------------------------------------


@dataclass
class KeywordFields:
    """The keyword-carrying values of one XMP packet."""

    tags_list: list[str] = field(default_factory=list)
    hierarchical: list[str] = field(default_factory=list)
    subject: list[str] = field(default_factory=list)
    record: list[str] = field(default_factory=list)  # dc:subject entries phototag added
    written: list[str] = field(default_factory=list)  # TagsList entries under the root phototag wrote
    manual: list[str] = field(default_factory=list)  # those of them that are manual tags


def is_under(value: str, root: str, sep: str) -> bool:
    """Whether the keyword path ``value`` (levels joined with ``sep``) is ``root`` or below it."""
    return value == root or value.startswith(root + sep)


def read_array(xmp_data, key: str) -> list[str]:
    """The non-empty values of the XMP property ``key`` (an array's items, or the one value)."""
    exiv2 = load_exiv2()
    it = xmp_data.findKey(exiv2.XmpKey(key))
    if it == xmp_data.end():
        return []
    count = it.count()
    if count <= 0:
        return []
    if it.typeName() in ("XmpBag", "XmpSeq", "XmpAlt"):
        values = [it.toString(i) for i in range(count)]
    else:
        values = [it.toString()]
    return [v.strip() for v in values if v and v.strip()]


def read_fields(xmp_data) -> KeywordFields:
    return KeywordFields(
        tags_list=read_array(xmp_data, TAGS_LIST),
        hierarchical=read_array(xmp_data, HIERARCHICAL),
        subject=read_array(xmp_data, SUBJECT),
        record=read_array(xmp_data, RECORD),
        written=read_array(xmp_data, WRITTEN_RECORD),
        manual=read_array(xmp_data, MANUAL_RECORD),
    )


def _exiv2_name(path: Path | str) -> str | None:
    """``path`` as the name exiv2 opens (it encodes a str as UTF-8 and opens those bytes), or None
    when those would not be the file's bytes: a name that is not valid UTF-8."""
    name = os.fspath(path)
    try:
        if name.encode("utf-8") == os.fsencode(name):
            return name
    except UnicodeEncodeError:  # lone surrogates: bytes os.fsdecode could not decode
        pass
    return None


@contextlib.contextmanager
def _opened(path: Path) -> Iterator:
    """exiv2's image of the file at ``path``, its metadata read; any file name. Raises
    Exiv2Error or OSError."""
    exiv2 = load_exiv2()
    name = _exiv2_name(path)
    if name is not None:
        image = exiv2.ImageFactory.open(name)
        image.readMetadata()
        yield image
        return
    data = Path(path).read_bytes()  # held here while exiv2 reads from it
    image = exiv2.ImageFactory.open(data)
    image.readMetadata()
    yield image
    del image


def read_fields_of(path: Path) -> KeywordFields:
    """The keyword fields of one sidecar or image file."""
    exiv2 = load_exiv2()
    try:
        with _opened(path) as image:
            return read_fields(image.xmpData())
    except (exiv2.Exiv2Error, OSError) as exc:
        raise SidecarError(f"{path}: {exc}") from exc


# ---- what the user changed ---------------------------------------------------------------------


def _split(value: str, sep: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(sep) if part.strip())


def _keywords_from_xmp(xmp_data, root: str | None) -> tuple[set[tuple[str, ...]], set[str]]:
    hierarchical: set[tuple[str, ...]] = set()
    fields = read_fields(xmp_data)
    for value in fields.tags_list:
        hierarchical.add(_split(value, "/"))
    for value in fields.hierarchical:
        hierarchical.add(_split(value, "|"))
    for key, sep in OTHER_HIERARCHICAL.items():
        for value in read_array(xmp_data, key):
            hierarchical.add(_split(value, sep))
    ours = set(fields.record)
    flat = {v for v in fields.subject if v not in ours}
    if root:
        hierarchical = {p for p in hierarchical if p and p[0] != root}
    return hierarchical, flat


@dataclass
class SidecarEdits:
    """What the user changed under phototag's root in a sidecar since phototag last wrote it,
    each a path of tag names below the root (docs/sync.md)."""

    added: list[tuple[str, ...]] = field(default_factory=list)  #: not written by phototag: manual tags
    removed: list[tuple[str, ...]] = field(default_factory=list)  #: written by phototag, deleted since
    manual: list[tuple[str, ...]] = field(default_factory=list)  #: recorded as manual tags, still there

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.manual)


def sidecar_edits(fields: KeywordFields, root: str) -> SidecarEdits:
    """Compare the keywords under ``root`` with phototag's record of what it wrote there.

    A path in digiKam's TagsList or Lightroom's hierarchicalSubject that phototag did not write (and
    that is not an ancestor of one) was *added*; a path phototag wrote that is gone from either of
    them, or whose leaf phototag added to ``dc:subject`` and is gone from it, was *removed*. A sidecar
    phototag wrote before it kept the ``written`` record (it has only the ``subjects`` one) shows no
    edits; one with no record at all was written by the user alone, so all its paths are added."""

    def under(values: Iterable[str], sep: str) -> set[tuple[str, ...]]:
        out = set()
        for value in values:
            if is_under(value, root, sep):
                parts = tuple(tag_name_of_level(p) for p in _split(value, sep))[1:]
                if parts:
                    out.add(parts)
        return out

    tags_list = under(fields.tags_list, "/")
    hierarchical = under(fields.hierarchical, "|")
    if fields.written:
        written = under(fields.written, "/")
    elif fields.record:
        written = set(tags_list)
    else:
        written = set()
    present = tags_list | hierarchical
    ancestors = {p[:depth] for p in present | written for depth in range(1, len(p))}
    added = sorted(p for p in present - written if p not in ancestors)
    ours = set(fields.record)
    subject = set(fields.subject)
    removed = sorted(p for p in written if p not in tags_list or p not in hierarchical
                     or (p[-1] in ours and p[-1] not in subject))
    manual = sorted(p for p in under(fields.manual, "/") if p in written and p not in removed)
    return SidecarEdits(added=added, removed=removed, manual=manual)


def _iptc_text(value: str) -> str:
    """An IPTC value as text. IPTC from before UTF-8 (Photoshop, old cameras and scanners) declares
    no character set and holds Windows-1252 / Latin-1 bytes; exiv2 hands the bytes it cannot decode
    as UTF-8 on as lone surrogates, which no database or terminal takes. Such a value is decoded as
    Windows-1252 (Latin-1 for the five bytes it leaves undefined): ``Ölberg``, not ``\\udcd6lberg``."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# ---- reading a photo ---------------------------------------------------------------------------


@dataclass
class PhotoKeywords:
    """What the files of one photo say about its tags."""

    keywords: list[str] = field(default_factory=list)  #: the user's own keywords (:func:`read_keywords`)
    edits: SidecarEdits = field(default_factory=SidecarEdits)  #: edits under phototag's root


def read_keywords(path: Path | str, root: str | None = DEFAULT_ROOT,
                  ignored_roots: Sequence[str] = IGNORED_ROOTS) -> list[str]:
    """The user's own keywords of a photo, as ``/``-joined hierarchical paths, sorted.

    Reads both sidecar names, the photo's embedded XMP and its IPTC keywords. Keywords under
    phototag's ``root`` and the ``dc:subject`` entries phototag added are left out (they are
    phototag's own), so are other tools' bookkeeping trees (``darktable|…``). A flat keyword that
    is also a level of a hierarchical keyword is not repeated, nor is a path that is the ancestor
    of another (the tag hierarchy implies it). Files exiv2 cannot read are
    skipped (logged), so this never fails on a photo."""
    return read_photo_keywords(path, root, ignored_roots).keywords


def read_photo_keywords(path: Path | str, root: str | None = DEFAULT_ROOT,
                        ignored_roots: Sequence[str] = IGNORED_ROOTS) -> PhotoKeywords:
    """:func:`read_keywords`, and the user's edits under ``root`` in the sidecar phototag writes to
    (the preferred one: the first of :func:`find_sidecars`), each file read once."""
    exiv2 = load_exiv2()
    path = Path(path)
    hierarchical: set[tuple[str, ...]] = set()
    flat: set[str] = set()
    edits = SidecarEdits()
    sidecars = find_sidecars(path)
    for source in [*sidecars, path]:
        try:
            with _opened(source) as image:
                if root and source is (sidecars[0] if sidecars else None):
                    edits = sidecar_edits(read_fields(image.xmpData()), root)
                h, f = _keywords_from_xmp(image.xmpData(), root)
                if source == path:
                    for datum in image.iptcData():
                        if datum.key() == IPTC_KEYWORDS:
                            value = _iptc_text(datum.toString()).strip()
                            if value:
                                f.add(value)
        except (exiv2.Exiv2Error, OSError) as exc:
            log.debug("no keywords read from %r: %s", source, exc)
            continue
        hierarchical |= h
        flat |= f
    ignored = set(ignored_roots)
    hierarchical = {p for p in hierarchical if p and p[0] not in ignored}
    flat = {f for f in flat if f.split("|")[0].strip() not in ignored}
    levels = {name for p in hierarchical for name in p}
    # an ancestor path (lr:hierarchicalSubject lists them) is implied by its descendant
    prefixes = {p[:depth] for p in hierarchical for depth in range(1, len(p))}
    result = {"/".join(p) for p in hierarchical if p not in prefixes}
    result |= {f for f in flat if f not in levels}
    return PhotoKeywords(sorted(result), edits)
