"""Learning from corrections on a real library: calibrated thresholds and a fine-tuned version,
both used by the next re-tag."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from phototag.cli import app
from phototag.db.models import ModelRun
from phototag.learn import calibrate as cal
from phototag.learn.corrections import Agreement, LearnError
from phototag.learn.finetune import finetune
from phototag.retag import service
from phototag.tagging.builtin import BuiltinTagger
from phototag.tagging.registry import get_tagger, list_taggers
from phototag.tagging.versions import ThresholdedTagger, read_user_thresholds


def correct(lib, photos, name, remove=(), add=()):
    with lib.session() as s:
        photo = lib.photo_by_path(s, str(photos / f"{name}.jpg"))
        if remove:
            lib.remove_tags(s, photo, list(remove))
        if add:
            lib.add_manual_tags(s, photo, list(add))


def model_tags(lib, photos, name) -> set[str]:
    with lib.session() as s:
        photo = lib.photo_by_path(s, str(photos / f"{name}.jpg"))
        return {t["name"] for t in lib.photo_tags(s, photo.id) if t["source"] == "model"}


def test_best_threshold_is_in_the_middle_of_the_best_range():
    scores = np.array([0.05, 0.1, 0.2, 0.4, 0.6, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    t, errors = cal.best_threshold(scores, labels)
    assert errors == 0 and 0.2 < t <= 0.4 and abs(t - 0.3) < 0.11
    t, errors = cal.best_threshold(np.array([0.3, 0.5]), np.array([1, 0]))  # inconsistent: one error
    assert errors == 1


def test_agreement_counts():
    a = Agreement()
    a.add({"cat", "dog"}, {"cat", "sofa"}, {"cat", "dog", "sofa", "car"})
    assert (a.true_positive, a.false_positive, a.false_negative) == (1, 1, 1)
    assert a.precision == 0.5 and a.recall == 0.5


def test_calibrate_apply_then_retag_generalises_to_uncorrected_photos(scanned):
    lib, photos = scanned
    lib.settings.set_value("default_model", "builtin")
    # the user removes the doubtful "palace" from one china photo and adds "dish" where the model
    # scored it under its bar; nothing is said about china-b (palace 0.35)
    correct(lib, photos, "china", remove=["palace"])
    correct(lib, photos, "coffee-b", add=["dish"])
    correct(lib, photos, "coffee", remove=["espresso"])
    assert "palace" in model_tags(lib, photos, "china-b")

    result = CliRunner().invoke(app, ["--home", str(lib.settings.home), "calibrate", "--apply", "--min-corrections",
                                      "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    thresholds = read_user_thresholds(lib.settings, "builtin")
    assert thresholds == pytest.approx(data["applied_thresholds"], abs=1e-3)
    assert thresholds["palace"] > 0.5  # above china.jpg's palace score
    assert thresholds["dish"] < 0.25  # below the built-in class bar
    assert isinstance(get_tagger(lib.settings), ThresholdedTagger)

    tagger = ThresholdedTagger(BuiltinTagger(faces=False), thresholds)  # the scan's model + the user's thresholds
    report = service.retag(lib, [], None, tagger=tagger)
    assert "palace" not in model_tags(lib, photos, "china-b")  # learned, not just remembered
    assert "dish" in model_tags(lib, photos, "coffee-b")
    assert any(c.path.endswith("china-b.jpg") and "palace" in c.removed for c in report.changed)
    with lib.session() as s:
        run = s.get(ModelRun, report.model_run_ids[0])
        assert run.settings["user_thresholds"] == len(thresholds)


def test_finetune_registers_a_new_version_that_retag_uses(scanned):
    lib, photos = scanned
    with pytest.raises(LearnError, match="too few"):
        finetune(lib, "builtin", tagger=BuiltinTagger(faces=False))
    for name in ("coffee", "coffee-b"):
        correct(lib, photos, name, remove=["espresso"])
    correct(lib, photos, "china", remove=["palace"])
    result = finetune(lib, "builtin", tagger=BuiltinTagger(faces=False), epochs=60, held_out=0.0, lr=3e-3)
    assert result.name == "builtin-ft1" and result.losses[-1] < result.losses[0]
    version_dir = lib.settings.models_dir / "builtin-ft1"
    assert (version_dir / "head.safetensors").is_file()
    base_sha = BuiltinTagger(faces=False).weights_sha256
    assert result.weights_sha256 != base_sha
    cached = list((lib.settings.home / "cache" / "learn").glob("features-builtin-*.npz"))
    assert len(cached) == 1

    listed = {i.name: i for i in list_taggers(lib.settings)}
    assert listed["builtin-ft1"].kind == "finetuned" and listed["builtin-ft1"].description == "fine-tuned from builtin"
    # the CLI lists the version and accepts it as the default, as `finetune --set-default` does
    home = str(lib.settings.home)
    rows = json.loads(CliRunner().invoke(app, ["--home", home, "models", "list", "--format", "json"]).stdout)
    assert {"name": "builtin-ft1", "kind": "finetuned"}.items() <= next(r for r in rows if r["name"] == "builtin-ft1").items()
    made_default = CliRunner().invoke(app, ["--home", home, "models", "default", "builtin-ft1"])
    assert made_default.exit_code == 0, made_default.output
    lib.settings.set_default_model("builtin")
    v2 = get_tagger(lib.settings, "builtin-ft1")
    assert v2.name == "builtin-ft1" and v2.weights_sha256 == result.weights_sha256
    assert v2.settings()["faces"] is False  # keeps the settings of the model it was tuned from
    report = service.retag(lib, [], "builtin-ft1")
    with lib.session() as s:
        run = s.get(ModelRun, report.model_run_ids[0])
        assert (run.model_name, run.weights_sha256) == ("builtin-ft1", result.weights_sha256)
    # the head learned: espresso's score fell on the corrected photos (it stays removed anyway)
    from phototag.ingest.decode import decode_photo

    base = BuiltinTagger(faces=False)
    idx = list(base.vocabulary()).index("espresso")
    img = decode_photo(photos / "coffee.jpg").image
    before = base.predict([base.prepare(img)])[0].scores[idx]
    after = v2.predict([v2.prepare(img)])[0].scores[idx]
    assert after < before - 0.1

    # a second version: the features come from the cache, the name counts up
    again = finetune(lib, "builtin-ft1", epochs=5, held_out=0.0)
    assert again.name == "builtin-ft2"


def test_calibrate_without_corrections_is_a_clear_error(scanned):
    lib, _ = scanned
    result = CliRunner().invoke(app, ["--home", str(lib.settings.home), "calibrate"])
    assert result.exit_code != 0
    assert "no corrections yet" in str(result.exception) + result.output


def test_calibrate_with_too_few_corrections_says_what_it_needs(scanned):
    lib, photos = scanned
    with lib.session() as s:
        lib.remove_tags(s, lib.photo_by_path(s, str(photos / "chelsea.jpg")), ["cat"])
    result = CliRunner().invoke(app, ["--home", str(lib.settings.home), "calibrate"])
    assert result.exit_code == 0, result.output
    message = " ".join(result.output.split())
    assert "no tag has 3 or more corrections yet" in message and "tuned tags" not in message


def test_an_unknown_model_is_a_one_line_user_error(scanned):
    """The registry's error is a PhototagError: the CLI prints one line and exits 2, no traceback."""
    from phototag.errors import PhototagError
    from phototag.tagging.base import TaggerError

    lib, _ = scanned
    with pytest.raises(PhototagError, match="unknown model 'nosuch'"):
        get_tagger(lib.settings, "nosuch")
    assert issubclass(TaggerError, PhototagError)
    with pytest.raises(TaggerError, match="not a valid model name"):
        get_tagger(lib.settings, "../elsewhere")

