"""Tag2Text captioning: token-for-token against the official implementation (golden files made with
the official code on transformers 4.25.1, see ``golden/make_caption_golden.py``), batch independence,
and the beam-search bookkeeping rules."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from phototag.tagging.models.caption import (
    BeamHypotheses,
    generate_caption,
    generate_caption_ids,
    prompt_ids,
)
from phototag.tagging.tokenizer import BertTokenizer

from .caption_setup import (
    FULL_CASE,
    GOLDEN,
    OTHER_SETTINGS,
    RECIPE_VERSION,
    TAG_STRINGS,
    TINY_CASES,
    VOCAB,
    CaptionCase,
    build_model,
    image_embeds,
    settings_name,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batch-of-a-few decoding is memory-bound: one thread is as fast, and much faster on a busy box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok() -> BertTokenizer:
    return BertTokenizer.from_vocab_file(VOCAB)


@pytest.fixture(scope="module")
def models():
    cache: dict[str, object] = {}

    def get(case: CaptionCase):
        if case.name not in cache:
            cache[case.name] = build_model(case)
        return cache[case.name]

    return get


def _golden(case: CaptionCase, name: str | None = None) -> dict:
    record = json.loads((GOLDEN / f"caption_{name or case.name}.json").read_text(encoding="utf-8"))
    assert record["synthetic_recipe_version"] == RECIPE_VERSION, "weights recipe changed: rerun the golden recipe"
    assert record["case"] == dataclasses.asdict(case)
    return record


@pytest.mark.parametrize("case", TINY_CASES, ids=lambda c: c.name)
def test_same_tokens_as_official_tag2text(case, tok, models):
    """Six photos in one batch; captions that end at min_length, in between and never (max_length)."""
    golden = _golden(case)
    assert golden["tags"] == TAG_STRINGS
    x = image_embeds(case, len(TAG_STRINGS))
    ids = generate_caption_ids(models(case), x, TAG_STRINGS, tok)
    assert ids == golden["ids"]
    captions = [tok.decode(s)[len("a picture of ") :] for s in ids]
    assert captions == golden["captions"]


@pytest.mark.parametrize("name, settings", OTHER_SETTINGS, ids=[settings_name(*s) for s in OTHER_SETTINGS])
def test_other_beam_settings_same_tokens_as_official(name, settings, tok, models):
    """2 and 5 beams, other min/max lengths (min_length 5 lets [SEP] come right after the prompt)."""
    case = next(c for c in TINY_CASES if c.name == name)
    golden = _golden(case, settings_name(name, settings))
    assert golden["settings"] == settings
    ids = generate_caption_ids(models(case), image_embeds(case, len(TAG_STRINGS)), TAG_STRINGS, tok, **settings)
    assert ids == golden["ids"]
    assert max(len(s) for s in ids) == settings["max_length"]


def test_goldens_cover_every_beam_search_path():
    """The cases must keep exercising early [SEP]s, hypothesis eviction and running to max_length."""
    lengths = [len(ids) for case in TINY_CASES for ids in _golden(case)["ids"]]
    assert 10 in lengths  # [SEP] as soon as min_length allows
    assert 50 in lengths  # never finished: open beams compete at max_length
    assert any(10 < n < 50 for n in lengths)


def test_caption_depends_only_on_its_own_photo(tok, models):
    """A batch of 2 gives each photo the caption it gets alone, in either order."""
    case = TINY_CASES[2]  # photos 0 and 1 end after 11 and 21 tokens: one leaves the batch early
    model = models(case)
    x = image_embeds(case, 2)
    tags = TAG_STRINGS[:2]
    alone = [generate_caption(model, x[i : i + 1], tags[i : i + 1], tok)[0] for i in range(2)]
    together = generate_caption(model, x, tags, tok)
    swapped = generate_caption(model, x.flip(0), tags[::-1], tok)
    assert together == alone
    assert swapped == alone[::-1]
    assert alone == _golden(case)["captions"][:2] and alone[0] != alone[1]
    # the same photo with the other photo's tags gets another caption
    assert generate_caption(model, x[:1], tags[1:], tok) != alone[:1]


def test_caption_strings(tok, models):
    case = TINY_CASES[3]
    x = image_embeds(case, 2)
    captions = generate_caption(models(case), x, TAG_STRINGS[:2], tok)
    assert captions == _golden(case)["captions"][:2]
    assert all(isinstance(c, str) and c and not c.startswith("a picture of") for c in captions)


def _greedy_without_cache(model, x, tags, tok, max_length=50, min_length=10):
    """Reference greedy decoding: the whole sequence through the decoder at every step, no KV cache."""
    from phototag.tagging.models.caption import encode_tag_text

    ids, mask = encode_tag_text(tok, tags)
    states = model.tag_encoder(ids, mask, x)
    out = []
    for row in range(x.shape[0]):
        seq = prompt_ids(tok)
        while len(seq) < max_length:
            logits, _ = model.text_decoder(torch.tensor([seq]), states[row : row + 1], None, None, False)
            last = logits[0, -1]
            if len(seq) < min_length:
                last[tok.sep_token_id] = -float("inf")
            nxt = int(last.argmax())
            if nxt == tok.sep_token_id:
                break
            seq.append(nxt)
        out.append(seq)
    return out


def test_greedy_matches_decoding_without_cache(tok, models):
    case = TINY_CASES[2]
    model = models(case)
    pick = [0, 3]  # greedy captions of 21 and 12 tokens
    x = image_embeds(case, 4)[pick]
    tags = [TAG_STRINGS[i] for i in pick]
    with torch.inference_mode():
        expected = _greedy_without_cache(model, x, tags, tok)
    got = generate_caption_ids(model, x, tags, tok, num_beams=1)
    assert got == expected
    assert [len(s) for s in got] == [21, 12]  # rows finish at different steps


def test_empty_batch_and_bad_arguments(tok, models):
    model = models(TINY_CASES[0])
    x = image_embeds(TINY_CASES[0], 2)
    assert generate_caption(model, x[:0], [], tok) == []
    with pytest.raises(ValueError, match="2 photos"):
        generate_caption(model, x, ["cat"], tok)
    with pytest.raises(ValueError, match="no room"):
        generate_caption(model, x, ["cat", "dog"], tok, max_length=4)
    with pytest.raises(ValueError, match="512 positions"):
        generate_caption(model, x, ["cat", "dog"], tok, max_length=600)


def test_beam_hypotheses_rules():
    """transformers 4.25.1 BeamHypotheses: score = sum/len, keep the best n, the later of equal scores wins."""
    h = BeamHypotheses(num_beams=2)
    h.add([1, 2, 3, 4], -4.0)  # score -1.0
    assert not h.is_done(-0.1, 5)  # fewer than num_beams finished
    h.add([1, 2], -1.0)  # -0.5
    assert h.worst_score == -1.0
    h.add([1, 2, 3, 4, 5, 6], -9.0)  # -1.5: worse than the worst, rejected
    assert len(h.beams) == 2 and h.worst_score == -1.0
    h.add([7, 7], -1.0)  # -0.5 evicts the -1.0 one
    assert sorted(s for s, _ in h.beams) == [-0.5, -0.5] and h.worst_score == -0.5
    assert h.best() == [7, 7]  # equal scores: the later one
    # done once the best open beam, normalised by the current length, cannot beat the worst kept
    assert h.is_done(-3.0, 6)  # -0.5 >= -0.5
    assert not h.is_done(-2.9, 6)
    assert BeamHypotheses(num_beams=1, early_stopping=True, beams=[(-9.0, [1])]).is_done(0.0, 3)


@pytest.mark.slow
def test_full_size_decoder_same_tokens_as_official(tok):
    """12-layer tag encoder + decoder (the released sizes), Swin-B-shaped image tokens, 2 photos."""
    path = GOLDEN / f"caption_{FULL_CASE.name}.json"
    golden = _golden(FULL_CASE)
    model = build_model(FULL_CASE)
    x = image_embeds(FULL_CASE, len(golden["tags"]))
    assert x.shape[1:] == (145, 1024)
    ids = generate_caption_ids(model, x, golden["tags"], tok)
    assert ids == golden["ids"], path.name
