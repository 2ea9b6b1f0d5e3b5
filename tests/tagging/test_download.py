"""`phototag models download` against a local hub: a real threaded HTTP server on 127.0.0.1 that answers
the hub's ``/resolve`` URLs the way huggingface.co does (HEAD with ETag / X-Repo-Commit / Content-Length;
LFS files as a redirect to another host carrying X-Linked-Etag = sha256 and X-Linked-Size; ranged GETs)
and the official repository's raw files from ../shared/ram-data. huggingface_hub's real client code talks
to it through HF_ENDPOINT; nothing is mocked.

The released checkpoints cannot be served (3–5.6 GB, and their bytes are not here), so installs use a
tiny official-format checkpoint with its own sha256 and the test-only ``arch`` route of ``add_pack``;
the CLI runs with the real pinned release, where the server can still lie about the bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from phototag.cli.models import app
from phototag.config import load_settings, use_settings
from phototag.tagging.download import (
    RELEASES,
    DownloadError,
    HubFile,
    download_folder,
    download_model,
    with_checkpoint,
)
from phototag.tagging.packs import list_packs, verify_pack
from phototag.tagging.synthetic import official_checkpoint
from phototag.tagging.weights import WeightsError

from .ram_cases import RAM_DATA, tiny_arch, tiny_official_state

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMIT = "c0ffee" * 6 + "c0ff"  # the X-Repo-Commit the local hub answers with
VOCAB = RAM_DATA / "bert-base-uncased" / "vocab.txt"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Served:
    data: bytes
    lfs: bool
    etag: str | None = None  #: what the hub advertises (default: the sha256 of data, or a git sha1)


@dataclass
class LocalHub:
    """The hub (``/<repo>/resolve/<rev>/<file>``, ``/spaces/...``), its CDN (``/cdn/<sha>``, reached as
    ``localhost`` so the client sees another host, as with huggingface.co → cdn-lfs) and GitHub raw files
    (``/raw/<path>``)."""

    files: dict[str, Served] = field(default_factory=dict)  #: "repo_id/filename" or "spaces/repo_id/filename"
    raw: dict[str, bytes] = field(default_factory=dict)  #: repo path → bytes (default: ../shared/ram-data)
    drop_after: int | None = None  #: the next CDN GET sends this many bytes, then the connection is cut
    refuse_after_drop: bool = False  #: …and every later CDN GET gets a 503
    pace: float = 0.0  #: seconds between two 1 MB pieces of a CDN body (a slow line)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)  #: (method, path, Range)
    sent: int = 0  #: CDN body bytes sent
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _dropped: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def files_url(self) -> str:
        return f"{self.endpoint}/raw"

    def cdn_gets(self) -> list[tuple[str, str, str | None]]:
        return [e for e in self.log if e[0] == "GET" and e[1].startswith("/cdn/")]


def make_handler(hub: LocalHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _head_or_get(self, body: bool) -> None:
            hub.log.append((self.command, self.path, self.headers.get("Range")))
            hub.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
            path = self.path.split("?", 1)[0]
            if path.startswith("/raw/"):
                return self._raw(path[len("/raw/"):], body)
            if path.startswith("/cdn/"):
                return self._cdn(path[len("/cdn/"):], body)
            m = re.fullmatch(r"/(spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if not m or f"{m[1] or ''}{m[2]}/{m[4]}" not in hub.files:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, body)
            served = hub.files[f"{m[1] or ''}{m[2]}/{m[4]}"]
            if served.lfs:
                sha = served.etag or sha256(served.data)
                return self._send(302, b"", {
                    "Location": f"http://localhost:{hub.port}/cdn/{sha256(served.data)}",
                    "ETag": f'"{hashlib.sha1(served.data).hexdigest()}"',  # the pointer's, as on the hub
                    "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(served.data)),
                    "X-Repo-Commit": COMMIT, "Content-Length": "0",
                }, body, length_given=True)
            etag = served.etag or hashlib.sha1(served.data).hexdigest()
            return self._send(200, served.data, {"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT}, body)

        def _raw(self, rel: str, body: bool) -> None:
            data = hub.raw.get(rel)
            if data is None:
                p = RAM_DATA / rel
                data = p.read_bytes() if p.is_file() else None
            if data is None:
                return self._send(404, b"404: Not Found", {}, body)
            self._send(200, data, {"Content-Type": "text/plain; charset=utf-8"}, body)

        def _cdn(self, sha: str, body: bool) -> None:
            served = next((s for s in hub.files.values() if sha256(s.data) == sha), None)
            if served is None:
                return self._send(404, b"", {}, body)
            if hub._dropped and hub.refuse_after_drop:
                return self._send(503, b"busy", {}, body)
            data, start = served.data, 0
            rng = self.headers.get("Range")
            if rng:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            chunk = data[start:]
            headers = {"Accept-Ranges": "bytes", "Content-Length": str(len(chunk))}
            if rng:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self.send_response(206 if rng else 200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if not body:
                return
            if hub.drop_after is not None and not hub._dropped:
                hub._dropped = True
                self.wfile.write(chunk[:hub.drop_after])
                self.wfile.flush()
                hub.sent += hub.drop_after
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)  # cut it mid-body
                return
            piece = 1 << 20 if hub.pace else len(chunk)
            for i in range(0, len(chunk), piece):
                try:
                    self.wfile.write(chunk[i:i + piece])
                except (BrokenPipeError, ConnectionResetError):  # the client is gone (killed)
                    return
                hub.sent += len(chunk[i:i + piece])
                time.sleep(hub.pace)

        def _send(self, status: int, data: bytes, headers: dict, body: bool, length_given: bool = False) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if not length_given:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body and data:
                self.wfile.write(data)

        def do_HEAD(self):
            self._head_or_get(body=False)

        def do_GET(self):
            self._head_or_get(body=True)

    return Handler


@pytest.fixture
def hub(monkeypatch):
    """A running local hub, with HF_ENDPOINT and PHOTOTAG_RAM_FILES_URL pointing at it."""
    import huggingface_hub.constants

    state = LocalHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", state.endpoint)
    monkeypatch.setenv("PHOTOTAG_RAM_FILES_URL", state.files_url)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; an earlier test in this process (the
    # sentence model loads offline) may have imported it with the variable set
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def models_dir(tmp_path):
    home = tmp_path / "home"
    settings = load_settings(home, environ={})
    use_settings(settings)
    yield settings.models_dir
    use_settings(None)


@pytest.fixture(scope="module")
def tiny_ram(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "ram.pth"
    torch.save(official_checkpoint(tiny_official_state("ram")), path)
    return path.read_bytes()


def tiny_release(kind: str, data: bytes, repo: str = "xinyu1205/recognize_anything_model"):
    filename = RELEASES[kind].checkpoint.filename
    return with_checkpoint(RELEASES[kind], HubFile(repo, filename, (sha256(data),)))


def serve_checkpoint(hub: LocalHub, kind: str, data: bytes, **kw) -> None:
    ck = RELEASES[kind].checkpoint
    hub.files[f"{ck.repo_id}/{ck.filename}"] = Served(data, lfs=True, **kw)


def leftovers(models_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(models_dir)) for p in models_dir.rglob("*")) if models_dir.exists() else []


# ---------------------------------------------------------------------------------- installs
def test_download_installs_a_pack_through_the_hub_client(hub, models_dir, tiny_ram):
    serve_checkpoint(hub, "ram", tiny_ram)
    messages = []
    result = download_model(models_dir, "ram", release=tiny_release("ram", tiny_ram), arch=tiny_arch("ram"),
                            report=messages.append)
    info = verify_pack(models_dir, "ram")
    assert info == result.info and info.kind == "ram" and info.num_classes == 4585
    assert info.source_sha256 == sha256(tiny_ram) and info.source_name == "ram_swin_large_14m.pth"
    # the pack's tag files are byte for byte the official ones at the pinned commit
    for pack_file, official in (("tags.txt", "ram_tag_list.txt"), ("tags_zh.txt", "ram_tag_list_chinese.txt"),
                                ("thresholds.txt", "ram_tag_list_threshold.txt")):
        assert info.files[pack_file] == sha256((RAM_DATA / "ram" / "data" / official).read_bytes())
    # the hub was asked the way huggingface_hub asks it, and the body came from the CDN host
    assert ("HEAD", "/xinyu1205/recognize_anything_model/resolve/main/ram_swin_large_14m.pth", None) in hub.log
    assert [g[1] for g in hub.cdn_gets()] == [f"/cdn/{sha256(tiny_ram)}"]
    assert ("GET", "/raw/ram/data/ram_tag_list_chinese.txt", None) in hub.log
    assert all("authorization" not in h for h in hub.headers_seen)
    assert any(h.get("user-agent", "").startswith("phototag/") for h in hub.headers_seen)
    assert any("Downloading ram_swin_large_14m.pth" in m for m in messages)
    # the download cache is gone once the pack is in; only the pack is left
    assert not download_folder(models_dir, "ram").exists()
    assert [p.name for p in models_dir.iterdir()] == ["ram"]


def test_tag2text_gets_the_bert_vocabulary_from_the_hub_and_keeps_captions(hub, models_dir, tmp_path):
    path = tmp_path / "t2t.pth"
    torch.save(official_checkpoint(tiny_official_state("tag2text")), path)
    data = path.read_bytes()
    serve_checkpoint(hub, "tag2text", data)
    hub.files["google-bert/bert-base-uncased/vocab.txt"] = Served(VOCAB.read_bytes(), lfs=False)
    result = download_model(models_dir, "tag2text", "t2t", release=tiny_release("tag2text", data),
                            arch=tiny_arch("tag2text"), keep_download=True)
    info = verify_pack(models_dir, "t2t")
    assert info.kind == "tag2text" and info.captioning and info.num_classes == 3429
    assert info.files["vocab.txt"] == sha256(VOCAB.read_bytes())
    assert "thresholds.txt" not in info.files and "tags_zh.txt" not in info.files
    assert ("HEAD", "/google-bert/bert-base-uncased/resolve/main/vocab.txt", None) in hub.log
    # --keep-download: the verified files stay, under their own names, and no part file
    assert result.kept and sorted(p.name for p in result.folder.iterdir()) == [
        ".lock", "tag2text_ori_tag_list.txt", "tag2text_swin_14m.pth", "vocab.txt"]


def test_a_copy_the_hub_serves_with_an_unknown_sha256_is_skipped_for_the_next_published_one(
        hub, models_dir, tiny_ram):
    release = RELEASES["ram"]
    model_repo, space = release.checkpoints
    hub.files[f"{model_repo.repo_id}/{model_repo.filename}"] = Served(b"not the release" * 100, lfs=True)
    hub.files[f"spaces/{space.repo_id}/{space.filename}"] = Served(tiny_ram, lfs=True)
    ours = (sha256(tiny_ram),)
    tiny = dataclasses.replace(release, checkpoints=(HubFile(model_repo.repo_id, model_repo.filename, ours),
                                                     HubFile(space.repo_id, space.filename, ours, "space")))
    download_model(models_dir, "ram", release=tiny, arch=tiny_arch("ram"))
    assert verify_pack(models_dir, "ram").source_sha256 == ours[0]
    assert [g[1] for g in hub.cdn_gets()] == [f"/cdn/{ours[0]}"]  # the unknown file was never fetched


def test_a_refused_conversion_keeps_the_verified_download_and_the_rerun_needs_no_network(
        hub, models_dir, tiny_ram, monkeypatch):
    serve_checkpoint(hub, "ram", tiny_ram)
    release = tiny_release("ram", tiny_ram)
    with pytest.raises(WeightsError, match="Swin patch embedding of width 16"):  # strict add: not the released arch
        download_model(models_dir, "ram", release=release)
    assert list_packs(models_dir) == []
    assert sorted(p.name for p in download_folder(models_dir, "ram").iterdir()) == [
        ".lock", "ram_swin_large_14m.pth", "ram_tag_list.txt", "ram_tag_list_chinese.txt",
        "ram_tag_list_threshold.txt"]
    requests = len(hub.log)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    download_model(models_dir, "ram", release=release, arch=tiny_arch("ram"))
    assert verify_pack(models_dir, "ram").source_sha256 == sha256(tiny_ram)
    assert len(hub.log) == requests


# ---------------------------------------------------------------------------------- interruptions
def test_a_connection_cut_mid_file_resumes_with_a_range_request(hub, models_dir, tiny_ram):
    serve_checkpoint(hub, "ram", tiny_ram)
    cut = len(tiny_ram) // 3
    hub.drop_after = cut
    download_model(models_dir, "ram", release=tiny_release("ram", tiny_ram), arch=tiny_arch("ram"))
    assert verify_pack(models_dir, "ram").source_sha256 == sha256(tiny_ram)
    (first, _, no_range), (second, _, resumed) = [(g[1], g[0], g[2]) for g in hub.cdn_gets()]
    assert first == second and no_range is None
    kept = int(re.fullmatch(r"bytes=(\d+)-", resumed)[1])  # what the client had written when the cut came
    assert 0 < kept <= cut
    assert hub.sent == len(tiny_ram) + cut - kept  # only the bytes lost in flight were sent twice


def test_an_interrupted_download_resumes_on_the_next_run_and_a_part_never_becomes_a_pack(
        hub, models_dir, tiny_ram):
    serve_checkpoint(hub, "ram", tiny_ram)
    cut = len(tiny_ram) // 2
    hub.drop_after, hub.refuse_after_drop = cut, True
    release = tiny_release("ram", tiny_ram)
    with pytest.raises(DownloadError, match="run the command again to resume") as err:
        download_model(models_dir, "ram", release=release, arch=tiny_arch("ram"))
    assert "phototag models add ram --checkpoint ram_swin_large_14m.pth" in err.value.manual
    folder = download_folder(models_dir, "ram")
    (part,) = folder.glob("*.part")
    kept = part.stat().st_size
    assert 0 < kept <= cut
    assert not (folder / "ram_swin_large_14m.pth").exists()
    assert list_packs(models_dir) == []
    hub.refuse_after_drop = False
    download_model(models_dir, "ram", release=release, arch=tiny_arch("ram"))
    assert verify_pack(models_dir, "ram").source_sha256 == sha256(tiny_ram)
    assert hub.cdn_gets()[-1][2] == f"bytes={kept}-"
    assert hub.sent == len(tiny_ram) + cut - kept
    assert [p.name for p in models_dir.iterdir()] == ["ram"]


KILLABLE = """
import sys
from phototag.tagging.download import HubFile, RELEASES, download_model, with_checkpoint
from tests.tagging.ram_cases import tiny_arch
models, sha = sys.argv[1:3]
ck = RELEASES["ram"].checkpoint
download_model(models, "ram", release=with_checkpoint(RELEASES["ram"], HubFile(ck.repo_id, ck.filename, (sha,))),
               arch=tiny_arch("ram"))
"""


def test_a_download_killed_with_sigkill_resumes_and_its_part_is_never_converted(hub, models_dir, tiny_ram):
    serve_checkpoint(hub, "ram", tiny_ram)
    hub.pace = 0.1  # ~10 MB/s: the kill lands mid-file
    folder = download_folder(models_dir, "ram")
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "PHOTOTAG_RAM_FILES_URL": hub.files_url}
    child = subprocess.Popen([sys.executable, "-c", KILLABLE, str(models_dir), sha256(tiny_ram)], env=env,
                             cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size > 0 for p in folder.glob("*.pth.*.part")):
            assert child.poll() is None and time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        child.kill()  # SIGKILL: no cleanup runs
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    (part,) = folder.glob("*.pth.*.part")
    kept = part.stat().st_size
    assert 0 < kept < len(tiny_ram)
    assert not (folder / "ram_swin_large_14m.pth").exists() and list_packs(models_dir) == []
    hub.pace = 0.0
    download_model(models_dir, "ram", release=tiny_release("ram", tiny_ram), arch=tiny_arch("ram"))
    assert verify_pack(models_dir, "ram").source_sha256 == sha256(tiny_ram)
    assert hub.cdn_gets()[-1][2] == f"bytes={kept}-"


# ---------------------------------------------------------------------------------- refusals (CLI)
def invoke(*args):
    return CliRunner().invoke(app, ["download", *args])


def test_cli_wrong_bytes_under_the_released_sha256_are_deleted_and_refused(hub, models_dir):
    """The hub advertises the real RAM++ sha256 but sends other bytes: nothing is installed or kept."""
    real = RELEASES["ram_plus"].checkpoint
    serve_checkpoint(hub, "ram_plus", os.urandom(300_000), etag=real.sha256[0])
    result = invoke("ram_plus")
    assert result.exit_code == 2, result.output
    assert "ram_plus_swin_large_14m.pth from" in result.output and f"expected {real.sha256[0]}" in result.output
    assert "was deleted, nothing was installed" in result.output
    assert len(hub.cdn_gets()) == 1
    assert list_packs(models_dir) == []
    assert not list(download_folder(models_dir, "ram_plus").glob("*.pth*"))  # no part, no checkpoint


def test_cli_a_checkpoint_with_an_unknown_sha256_is_not_downloaded(hub, models_dir):
    serve_checkpoint(hub, "ram_plus", b"x" * 1000)  # advertised sha256 = that of these bytes
    result = invoke("ram_plus")
    assert result.exit_code == 2
    assert "the hub serves no released copy of ram_plus_swin_large_14m.pth" in result.output
    assert hub.cdn_gets() == []


def test_cli_a_changed_tag_list_is_refused_before_the_checkpoint_is_fetched(hub, models_dir):
    tags = (RAM_DATA / "ram" / "data" / "ram_tag_list.txt").read_bytes()
    hub.raw["ram/data/ram_tag_list.txt"] = tags.replace(b"zoo", b"zoo2")
    result = invoke("ram_plus")
    assert result.exit_code == 2
    assert "ram_tag_list.txt from" in result.output and "5d96d2f7225527480ad773aaac76b6e5" in result.output
    assert not any("/resolve/" in e[1] for e in hub.log)
    assert not (download_folder(models_dir, "ram_plus") / "ram_tag_list.txt").exists()


def test_cli_an_existing_pack_is_refused_before_any_request(hub, models_dir):
    (models_dir / "ram_plus").mkdir(parents=True)
    result = invoke("ram_plus")
    assert "already exists" in str(result.exception) and "--replace" in str(result.exception)
    assert hub.log == []


def test_a_second_download_of_the_same_model_waits_for_none(hub, models_dir):
    from filelock import FileLock

    folder = download_folder(models_dir, "ram_plus")
    folder.mkdir(parents=True)
    with FileLock(str(folder / ".lock")):
        result = invoke("ram_plus")
    assert result.exit_code == 2 and "another `phototag models download ram_plus` is running" in result.output
    assert hub.log == []


# ---------------------------------------------------------------------------------- offline (a real process)
def run_cli(tmp_path, *args, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PHOTOTAG_", "TRANSFORMERS_"))}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "phototag", "--home", str(tmp_path / "home"), "models", "download",
                           *args], capture_output=True, text=True, env=environ, cwd=REPO_ROOT, timeout=300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def assert_manual(stderr: str, endpoint: str, files: str) -> None:
    assert "Traceback" not in stderr
    assert f"{endpoint}/xinyu1205/recognize-anything-plus-model/resolve/main/ram_plus_swin_large_14m.pth" in stderr
    for name in ("ram_tag_list.txt", "ram_tag_list_chinese.txt", "ram_tag_list_threshold.txt"):
        assert f"{files}/ram/data/{name}" in stderr
    assert ("phototag models add ram_plus --checkpoint ram_plus_swin_large_14m.pth --tags ram_tag_list.txt "
            "--tags-zh ram_tag_list_chinese.txt --thresholds ram_tag_list_threshold.txt") in stderr


def test_offline_says_which_files_to_fetch_by_hand_and_the_add_line(tmp_path):
    port = free_port()
    endpoint, files = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/raw"
    run = run_cli(tmp_path, "ram_plus", "--files-url", files, env={"HF_ENDPOINT": endpoint})
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("Fetching ram_tag_list.txt")
    assert "error: cannot download" in run.stderr and "Connection refused" in run.stderr
    assert_manual(run.stderr, endpoint, files)
    assert not (tmp_path / "home" / "models" / ".downloads").exists()


def test_hf_hub_offline_makes_no_request_at_all(tmp_path, hub):
    run = run_cli(tmp_path, "ram_plus", "--files-url", hub.files_url,
                  env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2
    assert "error: cannot download: HF_HUB_OFFLINE is set" in run.stderr
    assert_manual(run.stderr, hub.endpoint, hub.files_url)
    assert hub.log == []


def run_cli_on_a_terminal(tmp_path, *args, env) -> tuple[int, str]:
    """Like :func:`run_cli` with stderr on a pseudo-terminal (progress bars only show on a terminal)."""
    import fcntl
    import pty
    import struct
    import termios

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PHOTOTAG_", "TRANSFORMERS_"))}
    environ.update(env, COLUMNS="120")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc = subprocess.run([sys.executable, "-m", "phototag", "--home", str(tmp_path / "home"), "models",
                           "download", *args], stdout=subprocess.DEVNULL, stderr=slave, env=environ,
                          cwd=REPO_ROOT, timeout=300)
    os.close(slave)
    reader.join(10)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("disabled", [False, True])
def test_progress_bar_on_a_terminal_follows_hf_hub_disable_progress_bars(tmp_path, hub, disabled):
    real = RELEASES["ram_plus"].checkpoint
    serve_checkpoint(hub, "ram_plus", os.urandom(200_000), etag=real.sha256[0])  # fetched, then refused
    env = {"HF_ENDPOINT": hub.endpoint, **({"HF_HUB_DISABLE_PROGRESS_BARS": "1"} if disabled else {})}
    code, stderr = run_cli_on_a_terminal(tmp_path, "ram_plus", "--files-url", hub.files_url, env=env)
    assert code == 2 and "Traceback" not in stderr
    assert "Downloading ram_plus_swin_large_14m.pth" in stderr and len(hub.cdn_gets()) == 1
    bar = re.search(r"ram_plus_swin_large_14m\.pth: +100%", stderr)
    assert (bar is None) == disabled, stderr


def test_download_help_names_the_models(tmp_path):
    result = CliRunner().invoke(app, ["download", "--help"])
    assert result.exit_code == 0
    for word in ("ram_plus", "tag2text", "--keep-download", "PHOTOTAG_RAM_FILES_URL"):
        assert word in result.output
