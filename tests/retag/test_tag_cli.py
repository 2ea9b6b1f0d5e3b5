"""`phototag tag add/remove/list` on a real library, and a removal surviving `phototag retag`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from phototag.cli import app
from phototag.db.models import TagRemoval
from phototag.tagging.builtin import BuiltinTagger


def run(home, *args):
    result = CliRunner().invoke(app, ["--home", str(home), *args])
    assert result.exit_code == 0, result.output
    return result


def listed(home, photo) -> dict:
    return json.loads(run(home, "tag", "list", str(photo), "--format", "json").stdout)


def test_add_remove_list_and_removal_survives_retag(scanned):
    lib, photos = scanned
    home = lib.settings.home
    cat = photos / "chelsea.jpg"
    data = listed(home, cat)
    model_tags = {t["name"] for t in data["tags"] if t["source"] == "model"}
    assert "cat" in model_tags and data["removed"] == []

    run(home, "tag", "add", str(cat), "whiskers", "sofa")
    run(home, "tag", "remove", str(cat), "cat")
    data = listed(home, cat)
    by_source = {(t["name"], t["source"]) for t in data["tags"]}
    assert {("whiskers", "manual"), ("sofa", "manual")} <= by_source
    assert ("cat", "model") not in by_source and data["removed"] == ["cat"]

    # the real retag path of the command, with the model the library was scanned with
    from phototag.retag import service

    service.retag(lib, [], None, tagger=BuiltinTagger(faces=False))
    data = listed(home, cat)
    names = {t["name"] for t in data["tags"]}
    assert "cat" not in names and {"whiskers", "sofa", "animal"} <= names
    assert data["removed"] == ["cat"]

    # adding a removed tag back by hand cancels the removal
    run(home, "tag", "add", str(cat), "cat")
    data = listed(home, cat)
    assert ("cat", "manual") in {(t["name"], t["source"]) for t in data["tags"]} and data["removed"] == []


def test_tag_by_query(scanned):
    lib, photos = scanned
    home = lib.settings.home
    out = json.loads(run(home, "tag", "add", "--query", "cat", "pet", "--format", "json").stdout)
    assert sorted(r["path"].rsplit("/", 1)[1] for r in out) == ["chelsea-b.jpg", "chelsea.jpg"]
    out = json.loads(run(home, "tag", "remove", "--query", "pet ^path:*-b.jpg", "animal", "pet", "--format", "json").stdout)
    assert [(r["path"].rsplit("/", 1)[1], r["removed"]) for r in out] == [("chelsea.jpg", ["animal", "pet"])]
    with lib.session() as s:
        assert s.query(TagRemoval).count() == 2  # animal and pet, on one photo


def test_unknown_photo_is_a_clear_error(scanned):
    lib, photos = scanned
    result = CliRunner().invoke(app, ["--home", str(lib.settings.home), "tag", "add", str(photos / "nope.jpg"), "x"])
    assert result.exit_code != 0
    assert "not in the library" in str(result.exception) or "not in the library" in result.output


def test_removing_a_tag_the_photo_does_not_have_is_a_clear_error_that_changes_nothing(scanned):
    lib, photos = scanned
    home = lib.settings.home
    cat = photos / "chelsea.jpg"
    before = listed(home, cat)
    result = CliRunner().invoke(app, ["--home", str(home), "tag", "remove", str(cat), "cat", "dgo"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "has no tag 'dgo'" in message and "nothing removed" in message
    assert "Traceback" not in result.output
    assert listed(home, cat) == before  # not even `cat` went: a typo must not half-apply
    result = CliRunner().invoke(app, ["--home", str(home), "tag", "remove", "--query", "cat", "spaceship"])
    assert result.exit_code == 2 and "has the tag 'spaceship'" in " ".join(result.output.split())
    assert listed(home, cat) == before
