"""Every command example of the README runs as written, on a fresh library (issue 11).

The README is parsed when the tests are collected: every line of every ```bash block outside "## Set up"
(whose two commands tests/test_readme.py holds to CI) is one example; a ``\\`` line continues on the next,
a line that is only a comment is skipped. The examples run in README order (scan before search, tag
add/remove before calibrate/finetune), each through the real installed CLI (the ``phototag`` console script
of this interpreter's venv, first on PATH) in ``bash -e -c LINE``, on a library nobody set up:

* ``HOME`` is a tmp folder and ``PHOTOTAG_HOME`` (and every other ``PHOTOTAG_*``) is unset, so the library
  is the platform default under that home; the XDG folders point inside it, so nothing outside is touched.
* ``~/Pictures`` holds real photos with the README's names: IMG_0001.HEIC (an iPhone HEIC of a pug),
  IMG_0001.jpg (the same pug as a JPEG: the README removes a wrong ``dog`` guess from it), a cat taken in
  2021, a coffee, an astronaut taken in 2020.
* Every command runs in the home folder, where a terminal opens: the README names photos as
  ``~/Pictures/IMG_0001.jpg``, so its examples work from any folder.
* ``/mnt/photos`` (the second folder of the watch example) stands for a drive that is not mounted; it is
  replaced by ``<tmp>/mnt/photos``, which does not exist either, so the test never reads the machine's /mnt.
* ``HF_ENDPOINT`` and ``PHOTOTAG_RAM_FILES_URL`` point at a closed local port: a test machine has no
  network, and a download must fail fast and say what to do.

An example must exit 0 (``search``/``similar`` may exit 1: "nothing matched", as the README says) with no
traceback. The commands a test machine cannot run for real are in ``CANNOT_RUN`` with the reason and the
clean failure the README promises; ``phototag watch`` and ``phototag serve`` run until they are stopped, so each
is started, waited for ("caught up"/"up to date"; the printed address, where a search for cat must show the
cat), left running for the rest of its block and stopped with SIGTERM (exit 0).
Before ``calibrate`` the test removes the same wrong guess from a second photo (``BEFORE``: fine-tuning
needs two corrected photos, the README shows one). A README example added later that does not run fails
here, under its own name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import pytest
from conftest import REPO, TEST_PHOTOS, save_sample

BIN = Path(sys.executable).parent
README = REPO / "README.md"
#: a drive that is not mounted, in the watch example; replaced by a missing folder under the tmp dir
UNMOUNTED = "/mnt/photos"


@dataclass(frozen=True)
class Example:
    section: str  #: the heading the block is under
    command: str  #: as written, continuation lines joined, the trailing comment kept

    @property
    def bare(self) -> str:
        """The command without its comment and with single spaces: how the lists below name it."""
        return " ".join(strip_comment(self.command).split())


def strip_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a shell comment (outside quotes, after a blank)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_examples(text: str | None = None) -> list[Example]:
    text = README.read_text() if text is None else text
    examples, section = [], ""
    for part in re.split(r"(?m)^(#{2,4} .*)$", text):
        if re.match(r"#{2,4} ", part):
            section = part.lstrip("#").strip()
            continue
        if section == "Set up":
            continue
        for block in re.findall(r"```bash\n(.*?)```", part, re.DOTALL):
            pending = ""
            for line in block.splitlines():
                if pending:
                    line = pending + " " + line.strip()
                    pending = ""
                if strip_comment(line).endswith("\\"):
                    pending = strip_comment(line)[:-1].rstrip()
                    continue
                if strip_comment(line).strip():
                    examples.append(Example(section, line.strip()))
            assert not pending, f"a ``\\`` continuation ends the block: {pending!r}"
    return examples


EXAMPLES = readme_examples()


@dataclass(frozen=True)
class CannotRun:
    """A README command that needs what a test machine cannot have; it must fail cleanly, saying so."""

    why: str
    says: tuple[str, ...]  #: what its output must contain (besides exit status 2)


_DOWNLOAD = ("the official checkpoint is a 3–5.6 GB download from the Hugging Face hub and the test machine has no "
             "network: offline it prints the files to fetch by hand and the `models add` line to run")
_NEEDS_RAM_PLUS = "needs the RAM++ pack that `models download ram_plus` installs (3.0 GB, network)"

#: README commands that cannot run here, with the reason and their promised clean failure
CANNOT_RUN: dict[str, CannotRun] = {
    "phototag models download ram_plus": CannotRun(_DOWNLOAD, ("Download these files by hand", "then, in that folder, run:")),
    "phototag models default ram_plus": CannotRun(_NEEDS_RAM_PLUS, ("no model called 'ram_plus'",)),
    "phototag models benchmark ram_plus": CannotRun(_NEEDS_RAM_PLUS, ("'ram_plus' is not an installed model pack",)),
    "phototag models download tag2text": CannotRun(_DOWNLOAD, ("Download these files by hand", "then, in that folder, run:")),
    "phototag scan --model tag2text ~/Pictures": CannotRun(
        "needs the Tag2Text pack that `models download tag2text` installs (4.5 GB, network)",
        ("unknown model 'tag2text'", "phototag models add")),
    "phototag models add ram_plus --checkpoint ram_plus_swin_large_14m.pth --tags ram_tag_list.txt "
    "--tags-zh ram_tag_list_chinese.txt --thresholds ram_tag_list_threshold.txt": CannotRun(
        "needs the official RAM++ checkpoint (3.0 GB), which a test machine does not have",
        ("'ram_plus_swin_large_14m.pth' does not exist",)),
    "phototag models add tag2text --checkpoint tag2text_swin_14m.pth --tags tag2text_ori_tag_list.txt --vocab vocab.txt":
        CannotRun("needs the official Tag2Text checkpoint (4.5 GB), which a test machine does not have",
                  ("'tag2text_swin_14m.pth' does not exist",)),
    "phototag retag --model ram_plus --dry-run --format json": CannotRun(_NEEDS_RAM_PLUS, ("unknown model 'ram_plus'",)),
    "phototag retag --model ram_plus": CannotRun(_NEEDS_RAM_PLUS, ("unknown model 'ram_plus'",)),
    "phototag scan --ray auto ~/Pictures": CannotRun(
        "needs a running Ray cluster that this machine belongs to (tests/cluster starts one and scans through it)",
        ("cannot connect to the Ray cluster at auto",)),
}

#: what a user has done before some examples, beyond the examples above them: README command → (commands, why)
BEFORE: dict[str, tuple[tuple[str, ...], str]] = {
    "phototag calibrate --apply": (
        ("phototag tag remove ~/Pictures/IMG_0001.HEIC dog",),
        ("the README corrects one photo; finetune learns from 2 or more corrected photos (calibrate moves a tag's "
         "threshold from 3 corrections of it), so the same wrong guess is removed from the HEIC of that pug too")),
}

def _serves_the_search_page(log: str, env: Env) -> str | None:
    """`phototag serve` answers at the address it printed: a search for cat shows the cat photo."""
    import urllib.request

    match = re.search(r"phototag serve: (http://\S+)", log)
    if not match:
        return f"printed no address: {log[-500:]!r}"
    try:
        with urllib.request.urlopen(match.group(1).rstrip("/") + "/?q=cat", timeout=60) as response:
            page = response.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"{match.group(1)} did not answer: {exc}"
    if 'name="q"' not in page or 'alt="IMG_0002.jpg"' not in page:
        return f"/?q=cat shows no search box or not the cat photo IMG_0002.jpg:\n{page[:2000]}"
    return None


@dataclass(frozen=True)
class Daemon:
    """A README command that runs until it is stopped: started in the background, waited for (one of
    ``ready`` in its output), checked, left running for the rest of its block, stopped with SIGTERM."""

    ready: tuple[str, ...]
    check: Callable[[str, Env], str | None] | None = None


RUNS_UNTIL_STOPPED: dict[str, Daemon] = {
    # the watch log once it has looked at every photo (a fresh library: caught up; else up to date)
    f"phototag watch ~/Pictures {UNMOUNTED}": Daemon(("caught up", "up to date")),
    "phototag serve": Daemon(("phototag serve: http://",), _serves_the_search_page),
}


def _status_running(result: Result, env: Env) -> str | None:
    first = result.stdout.split("\n", 1)[0]
    return None if first.startswith("watcher: running") else f"does not say that `phototag watch` runs: {first!r}"


def _unit_written(result: Result, env: Env) -> str | None:
    unit = env.home / ".config" / "systemd" / "user" / "phototag.service"
    if not unit.is_file():
        return f"wrote no unit file {unit}"
    text = unit.read_text()
    return None if f"watch --log-format json {env.pictures}" in text else f"the unit does not watch ~/Pictures:\n{text}"


def _sidecar_written(result: Result, env: Env) -> str | None:
    missing = [p.name for p in (env.pictures / "IMG_0001.jpg.xmp", env.pictures / "IMG_0001.HEIC.xmp") if not p.is_file()]
    return f"wrote no sidecar for {missing} (photos of a pug: tag:animal/)" if missing else None


def _no_sidecar_yet(result: Result, env: Env) -> str | None:
    written = sorted(p.name for p in env.pictures.glob("*.xmp"))
    return f"--dry-run wrote {written}" if written else None


#: what some examples promise beyond running (each must be a README command)
PROMISES = {
    "phototag status": _status_running,
    "phototag service install ~/Pictures": _unit_written,
    "phototag export --to xmp --dry-run": _no_sidecar_yet,
    "phototag export tag:animal/ --to xmp": _sidecar_written,
}

#: commands whose exit status 1 means "nothing matched"
MATCHING = ("phototag search", "phototag similar")


@dataclass
class Result:
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    ran_as: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class Env:
    home: Path
    pictures: Path
    environ: dict[str, str]
    unmounted: Path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_env(base: Path) -> Env:
    home = base / "home"
    pictures = home / "Pictures"
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("PHOTOTAG_", "XDG_", "HF_", "HUGGINGFACE_", "VIRTUAL_ENV"))}
    port = closed_port()
    environ.update(
        HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{environ.get('PATH', '/usr/bin:/bin')}",
        XDG_DATA_HOME=str(home / ".local" / "share"), XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"), XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_RUNTIME_DIR=str(home / ".run"),
        HF_ENDPOINT=f"http://127.0.0.1:{port}", PHOTOTAG_RAM_FILES_URL=f"http://127.0.0.1:{port}/raw",
        COLUMNS="120", PYTHONUNBUFFERED="1",
    )
    for d in (".local/share", ".config", ".cache", ".local/state", ".run"):
        (home / d).mkdir(parents=True, exist_ok=True)
    return Env(home, pictures, environ, base / "mnt" / "photos")


def put_photos(pictures: Path) -> None:
    from PIL import Image

    pictures.mkdir(parents=True)
    pug = TEST_PHOTOS / "heic" / "pug.heic"
    shutil.copyfile(pug, pictures / "IMG_0001.HEIC")  # copyfile: a writable copy, as a camera import makes
    import pillow_heif

    pillow_heif.register_heif_opener()
    with Image.open(pug) as img:
        exif = img.getexif()
        small = img.convert("RGB")
        small.thumbnail((1024, 1024))
        small.save(pictures / "IMG_0001.jpg", quality=90, exif=exif)

    def dated(name: str, dest: Path, when: str | None) -> None:
        save_sample(name, dest, size=512)
        if when:
            with Image.open(dest) as img:
                img.load()
                exif = Image.Exif()
                exif.get_ifd(0x8769)[0x9003] = when  # DateTimeOriginal
                img.save(dest, quality=92, exif=exif)

    dated("chelsea", pictures / "IMG_0002.jpg", "2021:06:05 10:00:00")
    dated("coffee", pictures / "IMG_0003.jpg", None)
    dated("astronaut", pictures / "IMG_0004.jpg", "2020:07:14 09:30:00")


def as_run(example: Example, env: Env) -> str:
    return example.command.replace(UNMOUNTED, str(env.unmounted))


def run_one(command: str, env: Env, timeout: float = 300) -> Result:
    start = time.monotonic()
    try:
        p = subprocess.run(["bash", "-e", "-c", command], check=False, cwd=env.home, env=env.environ,
                           capture_output=True, text=True, errors="replace", timeout=timeout)
        result = Result(p.returncode, p.stdout, p.stderr, time.monotonic() - start, command)
    except subprocess.TimeoutExpired as exc:
        result = Result(None, str(exc.stdout or ""), str(exc.stderr or ""), time.monotonic() - start, command,
                        [f"still running after {timeout:.0f} s"])
    return result


def judge(example: Example, result: Result, env: Env) -> None:
    """Fill ``result.problems`` with what is wrong with the example's run."""
    out = result.stdout + result.stderr
    if "Traceback" in out:
        result.problems.append("printed a traceback")
    cannot = CANNOT_RUN.get(example.bare)
    if cannot:
        if result.returncode != 2:
            result.problems.append(f"exit {result.returncode}, expected 2 (it {cannot.why})")
        flat = " ".join(out.split())
        result.problems += [f"does not say {s!r}" for s in cannot.says if " ".join(s.split()) not in flat]
        return
    allowed = (0, 1) if example.bare.startswith(MATCHING) else (0,)
    if result.returncode not in allowed:
        result.problems.append(f"exit {result.returncode}, expected {' or '.join(map(str, allowed))}")
    if result.returncode == 0 and "--format json" in example.bare:
        try:
            json.loads(result.stdout)
        except ValueError:
            result.problems.append("--format json printed no JSON")
    promise = PROMISES.get(example.bare)
    if promise and result.returncode == 0 and (problem := promise(result, env)):
        result.problems.append(problem)


def start_daemon(command: str, daemon: Daemon, env: Env, log: Path) -> tuple[subprocess.Popen, str | None]:
    with open(log, "w") as err:
        proc = subprocess.Popen(["bash", "-c", "exec " + command], cwd=env.home, env=env.environ,
                                stdout=err, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if any(word in text for word in daemon.ready):
            return proc, daemon.check(text, env) if daemon.check else None
        time.sleep(0.2)
    if proc.poll() is None:
        return proc, f"never said {' or '.join(daemon.ready)!r} in 240 s"
    return proc, f"exited {proc.returncode} before it was stopped"


def stop_daemon(proc: subprocess.Popen, log: Path, started: float, problem: str | None) -> Result:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            problem = problem or "did not stop within 120 s of SIGTERM"
    text = log.read_text(errors="replace")
    result = Result(proc.returncode, "", text, time.monotonic() - started, proc.args[-1])
    if problem:
        result.problems.append(problem)
    elif proc.returncode != 0:
        result.problems.append(f"exit {proc.returncode} after SIGTERM, expected 0")
    if "Traceback" in text:
        result.problems.append("printed a traceback")
    return result


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[Example, Result]:
    """Every example, run once in README order on one fresh library."""
    if not (BIN / "phototag").is_file():
        pytest.fail(f"no phototag console script in {BIN}: install the project (pip install -e .) in this venv")
    env = make_env(tmp_path_factory.mktemp("readme"))
    put_photos(env.pictures)
    results: dict[Example, Result] = {}
    watch: tuple[Example, subprocess.Popen, Path, float, str | None] | None = None

    def end_watch() -> None:
        nonlocal watch
        if watch:
            example, proc, log, started, problem = watch
            results[example] = stop_daemon(proc, log, started, problem)
            watch = None

    try:
        for i, example in enumerate(EXAMPLES):
            if watch and example.section != watch[0].section:
                end_watch()  # the watcher runs for the rest of its block (status, service install)
            if example.bare in RUNS_UNTIL_STOPPED:
                end_watch()  # one at a time
                log = env.home / f"{example.bare.split()[1]}.log"
                proc, problem = start_daemon(as_run(example, env), RUNS_UNTIL_STOPPED[example.bare], env, log)
                watch = (example, proc, log, time.monotonic(), problem)
                continue
            for command in BEFORE.get(example.bare, ((), ""))[0]:
                before = run_one(command, env)
                if before.returncode != 0:
                    pytest.fail(f"`{command}`, run before `{example.bare}`, exited {before.returncode}:\n"
                                f"{before.stdout}{before.stderr}", pytrace=False)
            result = run_one(as_run(example, env), env)
            judge(example, result, env)
            results[example] = result
    finally:
        end_watch()
    return results


def test_the_readme_has_examples_and_every_listed_command_is_one_of_them():
    commands = {e.bare for e in EXAMPLES}
    assert len(EXAMPLES) >= 20, [e.command for e in EXAMPLES]
    assert not any(e.section == "Set up" for e in EXAMPLES)
    stale = [c for c in [*CANNOT_RUN, *PROMISES, *BEFORE, *RUNS_UNTIL_STOPPED] if c not in commands]
    assert not stale, f"listed here but not in README.md (update the lists): {stale}"


def test_the_offline_instructions_print_the_readmes_models_add_lines(ran):
    """`models download` offline names the same `models add` line the README gives for the manual way."""
    adds = [e.bare for e in EXAMPLES if e.bare.startswith("phototag models add ")]
    for kind in ("ram_plus", "tag2text"):
        (download,) = [r for e, r in ran.items() if e.bare == f"phototag models download {kind}"]
        printed = [line.strip() for line in download.stderr.splitlines() + download.stdout.splitlines()
                   if line.strip().startswith(f"phototag models add {kind} ")]
        assert printed and printed[0] in adds, (printed, adds)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.bare for e in EXAMPLES])
def test_readme_example_runs_as_written(ran, example):
    result = ran[example]
    if result.problems:
        pytest.fail(
            f"README example `{example.command}` ({example.section}), run as `{result.ran_as}` in ~: "
            f"{'; '.join(result.problems)}\n--- exit {result.returncode}, {result.seconds:.1f} s\n"
            f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}", pytrace=False)
