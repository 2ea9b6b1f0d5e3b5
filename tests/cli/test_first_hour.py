"""A new user's first hour (issue 11, items 4 and 8): every mistake is a clear message and exit 2,
and the output tells the truth. Real CLI processes (``python -m phototag``), a real library file,
real photos; each test failed before its fix."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TEST_PHOTOS, save_sample

#: a folder name long enough that an 80-column table cannot hold the path
LONG = "2024-summer-holiday-in-the-mountains-with-the-family/day-03-lake-and-village"


def phototag(home: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PHOTOTAG_HOME": str(home), "COLUMNS": "80", **(env or {})}
    return subprocess.run([sys.executable, "-m", "phototag", *args], capture_output=True, text=True,
                          errors="replace", env=environ, timeout=timeout)


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A library of a cat, a coffee and a real Canon photo (EXIF), in a deep folder; scanned together
    with a folder that does not exist."""
    base = tmp_path_factory.mktemp("first-hour")
    home, root = base / "home", base / "Pictures"
    folder = root / LONG
    save_sample("chelsea", folder / "chelsea.jpg", size=512)
    save_sample("coffee", folder / "coffee.jpg", size=512)
    shutil.copy(TEST_PHOTOS / "jpeg" / "xmp_test.jpg", folder / "canon.jpg")
    scan = phototag(home, "scan", "--format", "json", str(root), str(base / "no-such-folder"))
    return home, folder.resolve(), scan, base


# ---- item 4: mistakes are errors --------------------------------------------------------------------

def test_scan_of_a_folder_that_does_not_exist_is_an_error(library, tmp_path):
    home, _, mixed, base = library
    # the folders that exist are still scanned; the one that does not makes the exit status 2
    assert mixed.returncode == 2, mixed.stderr
    assert json.loads(mixed.stdout)["new"] == 3
    assert f"{base / 'no-such-folder'}: no such file or folder" in one_line(mixed.stderr)
    alone = phototag(home, "scan", str(tmp_path / "typo"))
    assert alone.returncode == 2 and "no such file or folder" in one_line(alone.stderr) and "Traceback" not in alone.stderr


@pytest.mark.parametrize("word, message", [
    ('tag:"tabby cat', 'unbalanced quote: the " at character 5 of \'tag:"tabby cat\' is never closed'),
    ('~"a cup of', 'unbalanced quote: the " at character 2 of \'~"a cup of\' is never closed'),
    ("cat@0,8", "got '0,8' in 'cat@0,8' (a score uses a decimal point"),
    (",", "empty OR group: the ',' of word 1 (',') has nothing before it"),
])
def test_a_query_that_cannot_be_understood_is_an_error_not_an_empty_result(library, word, message):
    home = library[0]
    result = phototag(home, "search", word)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""  # `search ,` listed every photo
    assert message in one_line(result.stderr) and "Traceback" not in result.stderr


def test_a_lone_comma_no_longer_lists_every_photo_but_a_real_or_does(library):
    home, folder, _, _ = library
    both = phototag(home, "search", "cat", ",", "drink")
    assert both.returncode == 0 and sorted(both.stdout.split()) == [str(folder / "chelsea.jpg"), str(folder / "coffee.jpg")]


def test_show_of_a_file_that_does_not_exist_says_so(library, tmp_path):
    home = library[0]
    result = phototag(home, "show", str(tmp_path / "IMG_0001.jpg"))
    assert result.returncode == 2
    assert "IMG_0001.jpg: no such file" in one_line(result.stderr) and "scan it first" not in one_line(result.stderr)
    unknown_id = phototag(home, "show", "#999")
    assert unknown_id.returncode == 2 and "no photo with that id" in one_line(unknown_id.stderr)


def test_watch_tags_a_folder_it_has_never_seen_and_says_when_it_is_done(library, tmp_path):
    _, folder, _, _ = library
    home = tmp_path / "watch-home"  # a library that has never seen the folder
    env = {**os.environ, "PHOTOTAG_HOME": str(home), "PHOTOTAG_WATCH__STABLE_SECONDS": "0"}
    log = tmp_path / "watch.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "phototag", "watch", str(folder)], stderr=err,
                                stdout=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 180
            while "caught up" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert proc.poll() is None, log.read_text()
            state = json.loads((home / "watch.json").read_text())
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    text = log.read_text()
    assert "catching up: 3 photos in" in text, text
    assert "caught up: 3 photos tagged" in text, text
    assert "alembic" not in text  # its INFO lines opened every watch log
    assert state["stable_seconds"] == 0  # a configured 0 was turned into the default 3 s
    assert proc.returncode == 0


def test_watch_of_a_file_is_an_error(library):
    home, folder, _, _ = library
    result = phototag(home, "watch", str(folder / "chelsea.jpg"), timeout=60)
    assert result.returncode == 2 and "is a file, not a folder" in one_line(result.stderr)


# ---- item 8: output ------------------------------------------------------------------------------------

def test_search_table_into_a_pipe_keeps_every_path_whole(library):
    home, folder, _, _ = library
    result = phototag(home, "search", "cat", "--format", "table")
    assert result.returncode == 0
    assert str(folder / "chelsea.jpg") in result.stdout  # on one line, not folded or cut at 80 columns


def test_show_prints_exposure_aperture_and_focal_length_in_units(library):
    home, folder, _, _ = library
    table = phototag(home, "show", str(folder / "canon.jpg"))
    assert table.returncode == 0, table.stderr
    fields = dict(line.split(None, 1) for line in table.stdout.splitlines() if line.strip() and line.split()[0].isidentifier())
    assert fields["exposure_time"] == "1/100 s" and fields["f_number"] == "f/4" and fields["focal_length"] == "25 mm"
    data = json.loads(phototag(home, "show", str(folder / "canon.jpg"), "--format", "json").stdout)
    assert data["exposure_time"] == pytest.approx(0.01) and data["f_number"] == 4.0  # JSON keeps the numbers


def test_models_list_fills_the_classes_column(library):
    home = library[0]
    table = phototag(home, "models", "list")
    assert re.search(r"builtin\s+builtin\s+1000\s", table.stdout), table.stdout
    rows = json.loads(phototag(home, "models", "list", "--format", "json").stdout)
    assert rows[0]["classes"] == 1000


def test_help_is_reflowed_and_shows_no_type_for_flags(library):
    home = library[0]
    result = phototag(home, "scan", "--help")
    assert result.returncode == 0
    assert "<bool>" not in result.stdout and "<int>" not in phototag(home, "--help").stdout
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "Unchanged photos are skipped" in line)
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    paragraph = [line.strip() for line in lines[start:end]]
    # re-flowed: only a paragraph's last line is short (rich mode broke it at each docstring newline)
    assert len(paragraph) >= 3 and all(len(line) >= 60 for line in paragraph[:-1]), paragraph


def test_status_shows_set_aside_photos_apart_from_the_queue(library, tmp_path):
    from phototag.config import load_settings
    from phototag.ingest.queue import WorkQueue
    from phototag.library import Library

    home = tmp_path / "status-home"
    photo = save_sample("rocket", tmp_path / "rocket.jpg", size=128)
    lib = Library(load_settings(home, environ={}))
    try:
        queue = WorkQueue(lib)
        queue.enqueue([photo])
        while True:  # it crashed the model alone, again and again
            (item,) = queue.claim(1, model="m")
            if queue.fail_alone(item, "the probe process crashed", tmp_path, "m"):
                break
        queue.close()
    finally:
        lib.close()
    result = phototag(home, "status")
    assert "queue: 0 waiting" in result.stdout and "set aside: 1 photos" in one_line(result.stdout), result.stdout
    data = json.loads(phototag(home, "status", "--format", "json").stdout)
    assert data["queue"]["set_aside"] == 1 and data["queue"]["length"] == 0


def test_a_chinese_term_that_names_no_tag_explains_where_chinese_names_come_from(library):
    home = library[0]
    found = phototag(home, "search", "猫")  # the built-in model has this one
    assert found.returncode == 0 and "chelsea.jpg" in found.stdout and found.stderr == ""
    missing = phototag(home, "search", "老虎")
    assert missing.returncode == 1
    assert "Chinese tag names come with the models that have them (RAM/RAM++" in one_line(missing.stderr)


def test_scan_errors_show_file_names_escaped(library, tmp_path):
    home = library[0]
    folder = tmp_path / "odd"
    folder.mkdir()
    (Path(os.fsdecode(bytes(folder) + b"/caf\xe9.jpg"))).write_bytes(b"")  # empty, named in Latin-1
    (folder / "[red]x.jpg").write_bytes(b"not a photo")
    result = phototag(home, "scan", str(folder))
    assert result.returncode == 0
    text = one_line(result.stderr)
    assert "caf\\xe9.jpg" in text and "\\udce9" not in text
    assert "[red]x.jpg" in text
