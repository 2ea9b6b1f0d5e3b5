"""The user's thresholds and calibration work for RAM packs too (a tiny RAM++: 50 classes,
official-style checkpoint converted like `phototag models add` does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from phototag.tagging.versions import FinetunedRamTagger, ThresholdedTagger

from tagging.ram_cases import tiny_ram_plus_tagger


@pytest.fixture(scope="module")
def tiny_ram_plus(tmp_path_factory):
    return tiny_ram_plus_tagger(tmp_path_factory.mktemp("ramplus-thresholds"))()


def test_user_thresholds_add_and_drop_ram_tags(tiny_ram_plus):
    import skimage.data

    photo = tiny_ram_plus.prepare(Image.fromarray(skimage.data.coffee()))
    plain = tiny_ram_plus.predict([photo])[0]
    vocab = list(tiny_ram_plus.vocabulary())
    given = {t.name for t in plain.tags}
    order = np.argsort(-plain.scores)
    best, missing = vocab[order[0]], next(vocab[i] for i in order if vocab[i] not in given)
    if best not in given:  # the best score did not pass the pack's own threshold: drop none
        best = None
    thresholds = {missing: float(plain.scores[vocab.index(missing)]) - 1e-4}
    if best is not None:
        thresholds[best] = min(1.0, float(plain.scores[vocab.index(best)]) + 1e-3)
    tuned = ThresholdedTagger(tiny_ram_plus, thresholds)
    got = tuned.predict([photo])[0]
    names = {t.name for t in got.tags}
    assert missing in names
    if best is not None:
        assert best not in names
    assert names - {missing} == given - {best}
    # thresholds change which tags pass, never the scores (two forward passes of one model: same math,
    # not promised bit for bit on every CPU, so a tolerance far below the 1e-4 margins used above)
    np.testing.assert_allclose(got.scores, plain.scores, rtol=0, atol=1e-6)
    assert tuned.weights_sha256 == tiny_ram_plus.weights_sha256
    assert tuned.settings()["user_thresholds"] == len(thresholds)


def test_calibrate_fits_ram_thresholds_from_corrections(scanned, tiny_ram_plus):
    """Corrections in the RAM vocabulary on a real library; scores come from running the RAM model."""
    from phototag.ingest.decode import decode_photo
    from phototag.learn.calibrate import calibrate
    from phototag.learn.corrections import cache_dir

    lib, photos = scanned
    vocab = list(tiny_ram_plus.vocabulary())
    wanted, others = ("chelsea", "chelsea-b", "coffee"), ("china", "china-b")
    plain = tiny_ram_plus.predict([tiny_ram_plus.prepare(decode_photo(photos / f"{n}.jpg").image)
                                   for n in wanted + others])
    scores = np.stack([p.scores for p in plain])
    given = set().union(*({t.name for t in p.tags} for p in plain))
    # a tag the pack gives none of these photos, though a threshold above both other photos' scores
    # keeps most of the wanted ones (the tiny model's weights are random: the tag is picked by its scores)
    above = (scores[:len(wanted)] > scores[len(wanted):].max(axis=0)).sum(axis=0)
    tag = next(vocab[i] for i in np.argsort(-above, kind="stable") if vocab[i] not in given)
    assert above[vocab.index(tag)] >= 2
    with lib.session() as s:
        for name in wanted:
            lib.add_manual_tags(s, lib.photo_by_path(s, str(photos / f"{name}.jpg")), [tag])
        for name in others:  # a built-in tag both photos have, not one of RAM's: ignored
            lib.remove_tags(s, lib.photo_by_path(s, str(photos / f"{name}.jpg")), ["palace"])
    result = calibrate(lib, tagger=tiny_ram_plus, min_corrections=1, held_out=0.0)
    assert result.model == "tiny" and result.reviewed == 5
    assert list(cache_dir(lib.settings).glob("scores-*.npz"))
    tuned = {t.tag: t for t in result.tuned}
    assert "palace" not in tuned
    assert tag in tuned and tuned[tag].positives == 3 and tuned[tag].errors_before == 3
    assert tuned[tag].errors_after <= 3 - above[vocab.index(tag)]


def test_finetune_ram_plus_head_learns_the_users_tag(scanned, tiny_ram_plus, tmp_path):
    """Fine-tune the tiny RAM++'s head (cached image_proj tokens), save it as a version, load it onto
    a fresh copy of the pack tagger and check the tag the user kept adding now scores higher."""
    import json

    from phototag.ingest.decode import decode_photo
    from phototag.learn.finetune import finetune
    from phototag.tagging.ram_tagger import RamTagger

    lib, photos = scanned
    vocab = list(tiny_ram_plus.vocabulary())
    names = ("chelsea", "chelsea-b", "coffee", "coffee-b")
    batch = [tiny_ram_plus.prepare(decode_photo(photos / f"{n}.jpg").image) for n in names]
    plain = tiny_ram_plus.predict(batch)
    given = set().union(*({t.name for t in p.tags} for p in plain))
    mean = np.mean([p.scores for p in plain], axis=0)
    tag = max((n for n in vocab if n not in given), key=lambda n: mean[vocab.index(n)])  # the model never gives it
    with lib.session() as s:
        for name in names:
            lib.add_manual_tags(s, lib.photo_by_path(s, str(photos / f"{name}.jpg")), [tag])
        lib.remove_tags(s, lib.photo_by_path(s, str(photos / "rocket.jpg")), ["weapon"])
    result = finetune(lib, "tiny", tagger=tiny_ram_plus, epochs=30, held_out=0.0, lr=3e-3)
    assert result.losses[-1] < result.losses[0]
    version = json.loads((result.path / "finetune.json").read_text())
    assert version["base"] == "pack" and version["kind"] == "ram_plus"
    assert version["weights_sha256"] == result.weights_sha256 != tiny_ram_plus.weights_sha256
    assert list((lib.settings.home / "cache" / "learn").glob("features-ram_plus-*.npz"))

    fresh = RamTagger("tiny", "ram_plus", tiny_ram_plus.weights_path, tiny_ram_plus.vocab,
                      tiny_ram_plus.weights_sha256, arch=tiny_ram_plus.arch)
    tuned = FinetunedRamTagger(fresh, result.name, result.path / "head.safetensors", version)
    i = vocab.index(tag)
    before = np.array([p.scores[i] for p in plain])
    predictions = tuned.predict(batch)
    after = np.array([p.scores[i] for p in predictions])
    assert (after > before).all() and tuned.weights_sha256 == result.weights_sha256
    assert all(tag in {t.name for t in p.tags} for p in predictions)  # now given where the user wanted it
    # backend = auto: the version runs on ONNX Runtime like its pack, exported (head included) in its folder
    auto = RamTagger("tiny", "ram_plus", tiny_ram_plus.weights_path, tiny_ram_plus.vocab,
                     tiny_ram_plus.weights_sha256, arch=tiny_ram_plus.arch, backend="auto")
    exported = FinetunedRamTagger(auto, result.name, result.path / "head.safetensors", version)
    assert exported.inner.backend == "onnxruntime" and exported.weights_sha256 == result.weights_sha256
    assert [{t.name for t in p.tags} for p in exported.predict(batch)] == [{t.name for t in p.tags} for p in predictions]
    assert exported.inner.exports.fp32_path().parent == result.path / "runtime"
    assert not (tiny_ram_plus.weights_path.parent / "runtime").exists() or \
        not list((tiny_ram_plus.weights_path.parent / "runtime").glob(f"*{result.weights_sha256[:16]}*"))


def test_subset_logits_equal_the_full_head(tiny_ram_plus):
    """Training evaluates only some classes: their logits must be exactly the full model's."""
    import skimage.data

    from phototag.learn.ram_head import RamHead

    head = RamHead(tiny_ram_plus)
    x = torch.stack([tiny_ram_plus.prepare(Image.fromarray(skimage.data.chelsea()))])
    with torch.inference_mode():
        embeds = head.model.image_embeds(x).float()
        full = head.model.logits_from_embeds(embeds)
        classes = torch.tensor([3, 7, 41])
        part = head.subset_logits(head.head_view("cpu"), embeds, classes)
    torch.testing.assert_close(part, full[:, classes], rtol=1e-4, atol=1e-4)
