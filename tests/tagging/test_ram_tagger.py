"""RamTagger on tiny converted models: preprocessing, lazy loading, tags/scores/embeddings, bf16, captions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from phototag.tagging.base import TaggerError
from phototag.tagging.ram_tagger import RamTagger, cpu_supports_bf16, preprocess, resolve_precision
from phototag.tagging.synthetic import official_checkpoint
from phototag.tagging.vocab import tag2text_vocabulary
from phototag.tagging.weights import convert_checkpoint

from .ram_cases import GOLDEN, GOLDEN_SEED, RAM_DATA, tiny_arch, tiny_official_state, tiny_ram_plus_tagger

DATA = RAM_DATA / "ram" / "data"
BERT_VOCAB = RAM_DATA / "bert-base-uncased" / "vocab.txt"
GOLD = json.loads((GOLDEN / "ram_official.json").read_text(encoding="utf-8"))


def photos() -> list[Image.Image]:
    return [Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee()),
            Image.fromarray(skimage.data.astronaut())]


@pytest.fixture(scope="module")
def ram_plus_tagger(tmp_path_factory):
    """Tiny RAM++ (50 classes) with the golden seed, converted from an official-style .pth."""
    return tiny_ram_plus_tagger(tmp_path_factory.mktemp("ramplus"))


def test_prepare_squashes_to_384_and_drops_alpha():
    rgba = Image.fromarray(skimage.data.astronaut()).convert("RGBA").resize((500, 300))
    x = preprocess(rgba)
    assert x.shape == (3, 384, 384) and x.dtype == np.float32
    assert np.array_equal(x, preprocess(rgba.convert("RGB")))
    gray = Image.fromarray(skimage.data.camera())
    assert preprocess(gray).shape == (3, 384, 384)


def test_model_loads_lazily_and_close_frees_it(ram_plus_tagger):
    tagger = ram_plus_tagger()
    assert tagger._model is None
    tagger.predict([tagger.prepare(photos()[0])])
    assert tagger._model is not None
    tagger.close()
    assert tagger._model is None
    assert tagger.predict([]) == []


def test_predictions_match_the_official_tiny_model(ram_plus_tagger):
    tagger = ram_plus_tagger()
    batch = [tagger.prepare(p) for p in photos()]
    preds = tagger.predict(batch)
    assert len(preds) == 3
    with np.load(GOLDEN / "ram_official_ram_plus_tiny.npz") as ref:
        logits = tagger.forward(torch.stack(batch[:1]))["logits"][0]
        np.testing.assert_allclose(logits, ref["logits"], atol=1e-4, rtol=0)
        emb = ref["image_embedding"] / np.linalg.norm(ref["image_embedding"])
    chelsea = preds[0]
    official = GOLD["cases"]["ram_plus_tiny"]
    assert [t.name for t in chelsea.tags] == official["tags"].split(" | ")
    assert [t.name_zh for t in chelsea.tags] == [z.strip() for z in official["tags_zh"].split(" | ")]
    np.testing.assert_allclose(chelsea.embedding, emb, atol=1e-5)
    for p in preds:
        assert p.embedding.dtype == np.float32 and p.embedding.shape == (512,)
        assert abs(np.linalg.norm(p.embedding) - 1) < 1e-5
        assert p.scores.shape == (50,)
        assert all(t.score > th for t, th in zip(p.tags, tagger.vocab.thresholds[tagger.vocab.selected(p.scores)]))
    # a batch gives what the photos give one by one
    alone = tagger.predict([batch[1]])[0]
    np.testing.assert_allclose(alone.scores, preds[1].scores, atol=1e-5)
    assert tagger.settings()["precision"] == "fp32" and tagger.embedding_dim == 512


def test_threshold_override_applies_to_every_class(ram_plus_tagger):
    low = ram_plus_tagger(threshold=0.0).predict([preprocess(photos()[0])])[0]
    high = ram_plus_tagger(threshold=1.0).predict([preprocess(photos()[0])])[0]
    assert len(low.tags) == 50 and high.tags == []


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no fast bf16")
def test_bf16_agrees_with_fp32(ram_plus_tagger):
    fp32 = ram_plus_tagger(precision="fp32")
    bf16 = ram_plus_tagger(precision="bf16")
    batch = [preprocess(p) for p in photos()]
    a, b = fp32.predict(batch), bf16.predict(batch)
    for pa, pb in zip(a, b):
        assert np.abs(pa.scores - pb.scores).max() < 0.05
        assert float(pa.embedding @ pb.embedding) > 0.99
        ta, tb = {t.name for t in pa.tags}, {t.name for t in pb.tags}
        assert len(ta ^ tb) <= max(2, len(ta | tb) // 10)


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(TaggerError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)
    with pytest.raises(TaggerError, match="unknown precision"):
        resolve_precision("int8", cpu)


def test_tag2text_tags_and_caption_match_the_official_tiny_model(tmp_path):
    torch.save(official_checkpoint(tiny_official_state("tag2text", seed=GOLDEN_SEED)), tmp_path / "t2t.pth")
    result = convert_checkpoint(tmp_path / "t2t.pth", tmp_path / "t2t.safetensors", arch=tiny_arch("tag2text"))
    assert result.captioning
    vocab = tag2text_vocabulary(DATA / "tag2text_ori_tag_list.txt")
    tagger = RamTagger("t2t", "tag2text", result.path, vocab, result.sha256, bert_vocab=BERT_VOCAB,
                       arch=tiny_arch("tag2text"))
    pred = tagger.predict([tagger.prepare(photos()[0])])[0]
    official = GOLD["cases"]["tag2text_tiny"]
    names = [t.name for t in pred.tags]
    assert len(names) == len(set(names))  # duplicate names merged
    assert set(names) == set(official["tags"].split(" | "))
    assert pred.embedding is None and tagger.embedding_dim is None
    assert pred.caption == official["caption"]
