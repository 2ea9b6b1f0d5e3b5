"""`phototag similar` and `phototag index` end to end: real scan, real model, real photos."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from phototag.cli import app
from phototag.cli import index as index_cli
from phototag.cli import similar as similar_cli

# register the commands if the root app does not list them (yet)
if "similar" not in {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}:
    similar_cli.register(app)
if "index" not in {g.name for g in app.registered_groups}:
    index_cli.register(app)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, sample_photos):
    """A library home with the sample photos scanned by the built-in model (it stores embeddings)."""
    home = tmp_path_factory.mktemp("similar-home")
    result = CliRunner().invoke(app, ["--home", str(home), "scan", "--quiet", str(sample_photos)])
    assert result.exit_code == 0, result.output
    return home, sample_photos


def run(home, *args):
    return CliRunner().invoke(app, ["--home", str(home), *args])


def test_similar_to_a_library_photo(scanned):
    home, photos = scanned
    result = run(home, "similar", str(photos / "chelsea.jpg"), "--format", "json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    paths = [h["path"] for h in hits]
    assert len(hits) == 5 and str((photos / "chelsea.jpg").resolve()) not in paths
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # the index was built on first use and is now a cache in step with the database
    status = json.loads(run(home, "index", "status", "--format", "json").stdout)
    assert status[0]["in_step"] and status[0]["photos"] == 6 and status[0]["kind"] == "flat"


def test_similar_to_an_outside_image_finds_the_original(scanned, tmp_path):
    home, photos = scanned
    copy = tmp_path / "elsewhere" / "cat-small.jpg"
    copy.parent.mkdir()
    Image.open(photos / "chelsea.jpg").resize((240, 160)).save(copy, quality=75)
    result = run(home, "similar", str(copy), "--limit", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str((photos / "chelsea.jpg").resolve())
    table = run(home, "similar", str(copy), "--limit", "2", "--format", "table")
    assert "chelsea.jpg" in table.stdout and "score" in table.stdout


def test_index_rebuild(scanned):
    home, _ = scanned
    result = run(home, "index", "rebuild", "--format", "json")
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["photos"] == 6 and report["dim"] == 1280 and report["bytes"] > 6 * 1280 * 4


def message(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


def test_clear_errors(scanned, tmp_path):
    home, _ = scanned
    result = run(home, "similar", str(tmp_path / "nope.jpg"))
    assert result.exit_code == 2 and "not a photo of the library" in message(result)
    result = run(home, "similar", "#1", "--model", "no-such-model")
    assert result.exit_code == 2 and "no-such-model" in message(result)
    empty = tmp_path / "empty-home"
    result = run(empty, "similar", "#1")
    assert result.exit_code == 2 and "no photo has an embedding" in message(result)
