"""``phototag models download``: fetch an official RAM / RAM++ / Tag2Text release and install it as a pack.

Where the files come from (the places the official project publishes them):

* the checkpoint from the Hugging Face hub (``HF_ENDPOINT`` is honoured), through ``huggingface_hub``'s
  own metadata call (``get_hf_file_metadata``: the ``/resolve`` HEAD, redirects, ``X-Linked-Etag`` =
  sha256 of an LFS file, ``X-Linked-Size``) and its downloader (``http_get``: progress bar, which
  ``HF_HUB_DISABLE_PROGRESS_BARS`` turns off, retries that resume with a ``Range`` request, size check);
* Tag2Text's BERT ``vocab.txt`` from the hub's ``google-bert/bert-base-uncased`` (the official code
  loads ``BertTokenizer.from_pretrained('bert-base-uncased')``);
* the tag lists, thresholds and Chinese names as raw files of the official GitHub repository at a pinned
  commit (:data:`RAM_FILES_COMMIT`); ``PHOTOTAG_RAM_FILES_URL`` (or ``files_url``) replaces the base URL,
  e.g. with a mirror or a local folder holding the same paths.

Every file has a sha256 pinned here; a file whose bytes differ is deleted and refused, and the hub is not
asked for a checkpoint whose advertised sha256 is not a released one. ``HF_HUB_OFFLINE`` (or no network,
or a hub that refuses) ends in :class:`DownloadError` whose ``manual`` text lists the URLs to fetch by
hand and the ``phototag models add`` line to run.

Cache: ``<models_dir>/.downloads/<kind>/`` in the library home (not the shared Hugging Face cache: the
checkpoints are 3–5.6 GB, two thirds optimizer state, and are only needed once, for the conversion). A
file is downloaded to ``<name>.<sha256[:16]>.part``, which a later run resumes where it stopped; only a
complete file whose sha256 checks out is renamed to ``<name>``, so a partial download never reaches
``models add``. After the pack is installed the folder is deleted (``keep_download`` keeps it).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .packs import PackError, PackInfo, add_pack, check_new_pack

#: the official repository and the commit whose tag files are pinned below (see shared/ram-data/SOURCE.md)
RAM_REPOSITORY = "xinyu1205/recognize-anything"
RAM_FILES_COMMIT = "7cb804a8609e9f4b1a50b7f31436d2df40bb9481"
DEFAULT_FILES_URL = f"https://raw.githubusercontent.com/{RAM_REPOSITORY}/{RAM_FILES_COMMIT}"
FILES_URL_ENV = "PHOTOTAG_RAM_FILES_URL"
DOWNLOADS = ".downloads"
_TIMEOUT = 30.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(PackError):
    """A release cannot be downloaded; ``manual`` says how to get it by hand (or is empty)."""

    def __init__(self, message: str, manual: str = "") -> None:
        super().__init__(message)
        self.manual = manual


class _Unreachable(Exception):
    """Internal: the network or the server failed; turned into a DownloadError with instructions."""


@dataclass(frozen=True)
class HubFile:
    """A file on the Hugging Face hub, with the sha256 values phototag accepts for it."""

    repo_id: str
    filename: str
    sha256: tuple[str, ...]
    repo_type: str = "model"
    revision: str = "main"
    size: int | None = None  #: as published (for messages; the hub's own header is what is checked)

    def url(self, endpoint: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, self.filename, repo_type=self.repo_type, revision=self.revision,
                          endpoint=endpoint)


@dataclass(frozen=True)
class RepoFile:
    """A file of the official GitHub repository, by its repository path."""

    path: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.path}"


@dataclass(frozen=True)
class Release:
    """What ``models download KIND`` fetches: the checkpoint (first published copy that the hub serves
    with a known sha256) and the files ``models add`` takes with it."""

    kind: str
    checkpoints: tuple[HubFile, ...]
    tags: RepoFile
    tags_zh: RepoFile | None = None
    thresholds: RepoFile | None = None
    vocab: HubFile | None = None

    @property
    def checkpoint(self) -> HubFile:
        return self.checkpoints[0]


_TAGS = RepoFile("ram/data/ram_tag_list.txt", "5d96d2f7225527480ad773aaac76b6e5c08a18adf6eae9ca7d2ab923d5e7bd8b")
_TAGS_ZH = RepoFile("ram/data/ram_tag_list_chinese.txt",
                    "c912657a0f30be7b2f5df6ccffa17e1d84561d0bea508528e38b6d0d711bcfbe")
_THRESHOLDS = RepoFile("ram/data/ram_tag_list_threshold.txt",
                       "b6f81d0de1bc7f9c251af512c413eae976c77dbfbadf700d4e3d90510f4c6447")
_TAG2TEXT_TAGS = RepoFile("ram/data/tag2text_ori_tag_list.txt",
                          "7d05c7cb88ed46a2aee1434776964f6bdbda0c0f4233c8633e109084382d3a45")
#: bert-base-uncased's WordPiece vocabulary (30,522 lines, md5 64800d5d8528ce344256daf115d4965e)
_BERT_VOCAB = HubFile("google-bert/bert-base-uncased", "vocab.txt",
                      ("07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",), size=231_508)

# sha256 values: the hub's LFS pointers of the released files (shared/ram-data/SPEC.md §1); the
# same hashes are what packs.OFFICIAL_CHECKPOINTS recognises.
_RAM_SHA = ("15c729c793af28b9d107c69f85836a1356d76ea830d4714699fb62e55fcc08ed",)
_TAG2TEXT_SHA = ("4ce96f0ce98f940a6680d567f66a38ccc9ca8c4e638e5f5c5c2e881a0e3502ac",
                 "9ac35ee5e3fe63e53f400f0db1c0000b93632d4cf0f3b681edde30734ef1941d")
_SPACE = "xinyu1205/Recognize_Anything-Tag2Text"  # the space the official README links RAM / Tag2Text to

RELEASES: dict[str, Release] = {
    "ram_plus": Release(
        "ram_plus",
        (HubFile("xinyu1205/recognize-anything-plus-model", "ram_plus_swin_large_14m.pth",
                 ("497c178836ba66698ca226c7895317e6e800034be986452dbd2593298d50e87d",), size=3_010_210_801),),
        _TAGS, _TAGS_ZH, _THRESHOLDS,
    ),
    "ram": Release(
        "ram",
        (HubFile("xinyu1205/recognize_anything_model", "ram_swin_large_14m.pth", _RAM_SHA, size=5_625_634_877),
         HubFile(_SPACE, "ram_swin_large_14m.pth", _RAM_SHA, repo_type="space", size=5_625_634_877)),
        _TAGS, _TAGS_ZH, _THRESHOLDS,
    ),
    "tag2text": Release(
        "tag2text",
        (HubFile("xinyu1205/recognize_anything_model", "tag2text_swin_14m.pth", _TAG2TEXT_SHA, size=4_478_705_095),
         HubFile(_SPACE, "tag2text_swin_14m.pth", _TAG2TEXT_SHA, repo_type="space", size=4_478_705_095)),
        _TAG2TEXT_TAGS, vocab=_BERT_VOCAB,
    ),
}


@dataclass
class DownloadResult:
    info: PackInfo
    folder: Path  #: the download cache folder of this release
    kept: bool  #: whether the downloaded files were left there


# ---------------------------------------------------------------------------------- settings
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint(endpoint: str | None = None) -> str:
    """The hub to use: ``endpoint``, else ``HF_ENDPOINT`` as set now, else huggingface_hub's default."""
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def files_url(base: str | None = None) -> str:
    """Base URL of the official repository's raw files: ``base``, else PHOTOTAG_RAM_FILES_URL, else GitHub
    at :data:`RAM_FILES_COMMIT`. A local folder (a path, not a URL) is read as ``file://``."""
    base = base or os.environ.get(FILES_URL_ENV) or DEFAULT_FILES_URL
    if "://" not in base:
        base = Path(base).expanduser().resolve().as_uri()
    return base.rstrip("/")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _refuse_if_offline() -> None:
    if hub_offline():
        raise _Unreachable("cannot download: HF_HUB_OFFLINE is set (phototag will not reach the hub)")


def download_folder(models_dir: Path | str, kind: str) -> Path:
    return Path(models_dir) / DOWNLOADS / kind


# ---------------------------------------------------------------------------------- instructions
def manual_instructions(release: Release, name: str, endpoint: str, base: str, replace: bool = False) -> str:
    """The files to fetch by hand and the ``phototag models add`` line that installs them."""
    lines = ["Download these files by hand into one folder:"]
    ck = release.checkpoint
    lines.append(f"  {ck.url(endpoint)}")
    for other in release.checkpoints[1:]:
        lines.append(f"    (or the copy at {other.url(endpoint)})")
    for f in (release.tags, release.tags_zh, release.thresholds):
        if f is not None:
            lines.append(f"  {f.url(base)}")
    if release.vocab is not None:
        lines.append(f"  {release.vocab.url(endpoint)}")
    cmd = [f"phototag models add {name}", f"--checkpoint {ck.filename}", f"--tags {release.tags.filename}"]
    if release.tags_zh is not None:
        cmd.append(f"--tags-zh {release.tags_zh.filename}")
    if release.thresholds is not None:
        cmd.append(f"--thresholds {release.thresholds.filename}")
    if release.vocab is not None:
        cmd.append(f"--vocab {release.vocab.filename}")
    if replace:
        cmd.append("--replace")
    lines.append("then, in that folder, run:")
    lines.append("  " + " ".join(cmd))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- fetching
def _sha256(path: Path) -> str:
    from phototag.ingest.fingerprint import sha256_file

    return sha256_file(path)


def _unreachable(what: str, exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot download {what}: {detail}"


def _parts(folder: Path, filename: str) -> list[Path]:
    return [p for p in folder.glob(f"{glob.escape(filename)}.*.part") if p.is_file()]


def _finish(part: Path, final: Path, expected: tuple[str, ...], source: str) -> Path:
    """Check a complete ``.part`` file's sha256 and rename it into place, or delete it and refuse."""
    digest = _sha256(part)
    if digest not in expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{final.name} from {source} has sha256 {digest}, expected {' or '.join(expected)}: "
            "the download was corrupted (or the file has changed upstream); it was deleted, nothing was installed"
        )
    os.replace(part, final)
    return final


def fetch_repo_file(f: RepoFile, folder: Path, base: str, report: Callable[[str], None]) -> Path:
    """One small text file of the official repository, verified against its pinned sha256."""
    final = folder / f.filename
    if final.is_file():
        return final  # only a verified file is ever renamed to its final name
    _refuse_if_offline()
    url = f.url(base)
    part = folder / f"{f.filename}.{f.sha256[:16]}.part"
    report(f"Fetching {f.filename} from {url}")
    request = urllib.request.Request(url, headers={"User-Agent": "phototag"})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise _Unreachable(_unreachable(url, getattr(exc, "reason", exc))) from exc
    return _finish(part, final, (f.sha256,), url)


def _hub_metadata(candidates: tuple[HubFile, ...], endpoint: str):
    """The first candidate whose hub metadata has a known sha256 (LFS) or any etag (plain git file)."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    refused = []
    for f in candidates:
        url = f.url(endpoint)
        try:
            meta = get_hf_file_metadata(url, token=False, headers=_headers())
        except (RepositoryNotFoundError, EntryNotFoundError) as exc:
            refused.append(f"{url}: not found ({type(exc).__name__})")
            continue
        except HfHubHTTPError as exc:
            raise _Unreachable(_unreachable(url, exc)) from exc
        except Exception as exc:  # noqa: BLE001 - httpx2 connection/timeout errors, OfflineModeIsEnabled
            if _is_network_error(exc):
                raise _Unreachable(_unreachable(url, exc)) from exc
            raise
        if meta.commit_hash is None or meta.etag is None:
            raise _Unreachable(f"cannot download {url}: the answer has no X-Repo-Commit / ETag header, "
                               "so it is not a Hugging Face hub (check HF_ENDPOINT and any proxy)")
        if _SHA256.match(meta.etag) and meta.etag not in f.sha256:
            refused.append(f"{url} has sha256 {meta.etag}, not a released one ({', '.join(f.sha256)})")
            continue
        return f, url, meta
    raise DownloadError("the hub serves no released copy of " + candidates[0].filename + ": " + "; ".join(refused))


def _is_network_error(exc: BaseException) -> bool:
    """A connection, timeout or protocol failure (huggingface_hub 2.x talks HTTP through httpx2)."""
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    return isinstance(exc, (OfflineModeIsEnabled, ConnectionError, TimeoutError, httpx2.TransportError))


def _headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    from phototag import __version__

    # token=False: public files; phototag never sends (or looks for) a hub token
    return build_hf_headers(token=False, library_name="phototag", library_version=__version__)


def fetch_hub_file(candidates: tuple[HubFile, ...], folder: Path, endpoint: str,
                   report: Callable[[str], None]) -> Path:
    """Download a hub file into ``folder``, resuming a ``.part`` an earlier run left, checking its sha256."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import HfHubHTTPError

    filename = candidates[0].filename
    final = folder / filename
    if final.is_file():
        return final
    _refuse_if_offline()
    f, url, meta = _hub_metadata(candidates, endpoint)
    size = meta.size
    tag = meta.etag if _SHA256.match(meta.etag) else f.sha256[0]
    part = folder / f"{filename}.{tag[:16]}.part"
    for stale in _parts(folder, filename):
        if stale != part:
            stale.unlink()  # a part of another version of the file can never be completed
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None:
        free = shutil.disk_usage(folder).free
        if free < size - have:
            raise DownloadError(f"not enough disk space for {filename}: {(size - have) / 1e9:.2f} GB needed, "
                                f"{free / 1e9:.2f} GB free in {folder}")
    if size is None or have < size:
        what = f"{size / 1e9:.2f} GB" if size and size >= 1e8 else f"{size or '?'} bytes"
        report(f"Downloading {filename} ({what}) from {url}" + (f", resuming at byte {have:,}" if have else ""))
        try:
            with open(part, "ab") as out:
                http_get(meta.location, out, resume_size=have, headers=_headers(), expected_size=size,
                         displayed_filename=filename)
        except HfHubHTTPError as exc:
            raise _Unreachable(_interrupted(filename, part, size, exc)) from exc
        except Exception as exc:  # noqa: BLE001
            if _is_network_error(exc) or isinstance(exc, OSError) and "Consistency check failed" in str(exc):
                raise _Unreachable(_interrupted(filename, part, size, exc)) from exc
            raise
    report(f"Checking the sha256 of {filename}")
    return _finish(part, final, f.sha256, url)


def _interrupted(filename: str, part: Path, size: int | None, exc: BaseException) -> str:
    have = part.stat().st_size if part.exists() else 0
    kept = f"; {have:,} of {size:,} bytes are kept in {part}: run the command again to resume" if have and size else ""
    return _unreachable(filename, exc) + kept


# ---------------------------------------------------------------------------------- the command
def download_model(
    models_dir: Path | str,
    kind: str,
    name: str | None = None,
    *,
    replace: bool = False,
    keep_download: bool = False,
    endpoint: str | None = None,
    files_base: str | None = None,
    release: Release | None = None,
    arch=None,
    report: Callable[[str], None] = lambda message: None,
) -> DownloadResult:
    """Download the official ``kind`` release (``ram``, ``ram_plus`` or ``tag2text``) and install it with
    :func:`~.packs.add_pack` as pack ``name`` (default: ``kind``).

    ``release`` replaces the pinned files and ``arch`` the released architecture (tests: a tiny
    checkpoint served by a local hub). Raises :class:`DownloadError` (with ``manual`` instructions when
    the network or the hub fails) and the errors of ``add_pack``.
    """
    if release is None:
        if kind not in RELEASES:
            raise PackError(f"no official release called {kind!r}; choose one of {', '.join(RELEASES)}")
        release = RELEASES[kind]
    name = name or kind
    check_new_pack(models_dir, name, replace)
    endpoint = hub_endpoint(endpoint)
    base = files_url(files_base)
    manual = manual_instructions(release, name, endpoint, base, replace)

    folder = download_folder(models_dir, release.kind)
    folder.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    lock = FileLock(str(folder / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DownloadError(f"another `phototag models download {release.kind}` is running for this library") from None
    try:
        try:
            files = {}
            for option, f in (("tags", release.tags), ("tags_zh", release.tags_zh),
                              ("thresholds", release.thresholds)):
                if f is not None:
                    files[option] = fetch_repo_file(f, folder, base, report)
            if release.vocab is not None:
                files["vocab"] = fetch_hub_file((release.vocab,), folder, endpoint, report)
            checkpoint = fetch_hub_file(release.checkpoints, folder, endpoint, report)
        except _Unreachable as exc:
            raise DownloadError(str(exc), manual) from None
        report(f"Checking and converting {checkpoint.name}")
        info = add_pack(models_dir, name, checkpoint, files["tags"], files.get("tags_zh"), files.get("thresholds"),
                        files.get("vocab"), replace=replace, arch=arch)
    finally:
        lock.release()
        if {p.name for p in folder.iterdir()} <= {".lock"}:  # nothing fetched: leave no empty folder behind
            _remove(folder)
    if not keep_download:
        _remove(folder)
    return DownloadResult(info, folder, keep_download)


def _remove(folder: Path) -> None:
    """Delete a release's download folder, and the downloads folder when it is left empty."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass  # other releases' downloads are there


def with_checkpoint(release: Release, checkpoint: HubFile) -> Release:
    """``release`` with another checkpoint (tests serve a small synthetic one)."""
    return replace(release, checkpoints=(checkpoint,))


__all__ = [
    "DEFAULT_FILES_URL", "DownloadError", "DownloadResult", "HubFile", "RELEASES", "Release", "RepoFile",
    "download_model", "manual_instructions",
]
