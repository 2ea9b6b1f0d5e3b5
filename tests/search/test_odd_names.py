"""`phototag similar` and `search similar:` with a photo whose file name is not valid UTF-8 (an old
archive, a NAS share): it is found by its path, and listed with its exact bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from conftest import save_sample


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """(home, odd-named cat, its look-alike): three real photos scanned by the built-in model."""
    base = tmp_path_factory.mktemp("odd-names")
    photos = base / "photos"
    cat = save_sample("chelsea", photos / "cat.jpg", size=320)
    odd = Path(os.fsdecode(os.fsencode(photos) + b"/chat \xe9t\xe9.jpg"))
    cat.rename(odd)
    with Image.open(odd) as img:
        w, h = img.size
        ImageOps.mirror(img.crop((w // 10, h // 10, w - w // 10, h - h // 10))).save(photos / "cat2.jpg", quality=90)
    save_sample("coffee", photos / "coffee.jpg", size=320)
    home = base / "home"
    scan = cli(home, "scan", "--quiet", photos)
    assert scan.returncode == 0, scan.stderr.decode(errors="replace")
    return home, odd, photos / "cat2.jpg"


def cli(home: Path, *args: str | Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "phototag", "--home", str(home), *(os.fsencode(a) for a in args)]
    return subprocess.run(argv, capture_output=True, timeout=300)


def test_similar_lists_an_odd_name_with_its_exact_bytes(library):
    home, odd, cat2 = library
    result = cli(home, "similar", cat2, "--limit", "1", "--print0")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout == os.fsencode(odd) + b"\0"
    result = cli(home, "similar", cat2, "--limit", "1", "--format", "json")
    assert [os.fsencode(h["path"]) for h in json.loads(result.stdout)] == [os.fsencode(odd)]


def test_similar_to_a_photo_with_an_odd_name(library):
    home, odd, cat2 = library
    result = cli(home, "similar", odd, "--limit", "1", "--format", "json")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert [h["path"] for h in json.loads(result.stdout)] == [str(cat2)]
    result = cli(home, "search", f"similar:{odd}", "--print0")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.split(b"\0")[0] == os.fsencode(cat2)


def test_similar_table_shows_an_odd_name_escaped_and_whole(library):
    """The table prints a name that is not valid UTF-8 escaped as the other commands do (no
    traceback for the undecodable byte, no markup taken from the name) and never cuts a path."""
    home, odd, cat2 = library
    result = cli(home, "similar", cat2, "--limit", "1", "--format", "table")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    shown = f"{odd.parent}/chat \\xe9t\\xe9.jpg"  # the bytes of the name as \xNN, like `search`
    lines = result.stdout.decode("utf-8").splitlines()
    assert any(shown in line for line in lines), lines
    assert "…" not in result.stdout.decode("utf-8")
