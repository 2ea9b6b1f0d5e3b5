"""Tag2Text's BERT tokenizer against the official behaviour (transformers 4.25.1, golden file)
and against the installed transformers 5 BertTokenizer (an independent implementation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phototag.tagging.base import TaggerError
from phototag.tagging.models.caption import encode_tag_text, prompt_ids
from phototag.tagging.tokenizer import BertTokenizer, TokenizerError

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1].parent / "shared"
VOCAB = SHARED / "ram-data" / "bert-base-uncased" / "vocab.txt"
RAM_DATA = SHARED / "ram-data" / "ram" / "data"
GOLDEN = HERE / "golden" / "tokenizer_bert_uncased_tf4251.json"


@pytest.fixture(scope="module")
def tok() -> BertTokenizer:
    return BertTokenizer.from_vocab_file(VOCAB)


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_vocabulary_and_added_tokens(tok):
    assert len(tok) == 30524  # = med_config vocab_size
    assert (tok.dec_token_id, tok.enc_token_id) == (30522, 30523)
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.unk_token_id) == (101, 102, 0, 100)


def test_official_tag_example(tok):
    ids, mask = encode_tag_text(tok, ["cat | grass"])
    assert ids.shape == mask.shape == (1, 40)
    assert ids[0, :6].tolist() == [30523, 4937, 1064, 5568, 102, 0]
    assert ids[0, 5:].eq(0).all()
    assert mask[0].tolist() == [1] * 5 + [0] * 35


def test_prompt(tok):
    assert tok.encode("a picture of ") == [101, 1037, 3861, 1997, 102]
    assert prompt_ids(tok) == [30522, 1037, 3861, 1997]


def test_long_tag_text_is_truncated_to_40_with_sep(tok):
    text = " | ".join(["dog", "tree", "sky", "grass", "car", "road", "house"] * 6)
    ids, mask = encode_tag_text(tok, [text, "cat"])
    assert ids.shape == (2, 40)
    assert ids[0, -1].item() == 102 and mask[0].all()
    assert ids[0, 1:39].tolist() == tok.encode(text)[1:39]
    assert ids[1, :3].tolist() == [30523, 4937, 102]


def test_wordpiece_and_unknown_words(tok):
    # values checked with transformers 4.25.1
    assert tok.tokenize("unaffable Crème-brûlée!") == [
        "una", "##ffa", "##ble", "cr", "##eme", "-", "br", "##ule", "##e", "!"
    ]
    assert tok.tokenize("x" * 101) == ["[UNK]"]  # longer than max_input_chars_per_word
    assert tok.tokenize("☃") == ["[UNK]"]  # not coverable by the vocabulary
    assert tok.tokenize("猫 | [ENC]a[SEP]") == ["[UNK]", "|", "[ENC]", "a", "[SEP]"]


def test_encodings_match_transformers_4_25_1(tok, golden):
    """Ids, padded/truncated ids and decoded text of 307 strings, exactly as the official tokenizer."""
    assert len(golden["encode"]) >= 300
    wrong = []
    for case in golden["encode"]:
        text = case["text"]
        got = tok.encode(text)
        got40 = tok([text], max_length=40, pad_to_max_length=True).input_ids[0].tolist()
        if got != case["ids"] or got40 != case["ids_max40"] or tok.decode(got) != case["decoded"]:
            wrong.append(text)
    assert not wrong, f"{len(wrong)} strings differ, first: {wrong[:3]!r}"


def test_decode_matches_transformers_4_25_1(tok, golden):
    wrong = [
        c["ids"]
        for c in golden["decode"]
        if tok.decode(c["ids"]) != c["skip"] or tok.decode(c["ids"], skip_special_tokens=False) != c["keep"]
    ]
    assert not wrong, f"{len(wrong)} id lists decode differently, first: {wrong[:2]}"


def test_decode_cleans_up_like_transformers(tok):
    ids = tok.encode("a picture of a cat , it ' s what you 're looking at . isn't it ?")
    assert tok.decode(ids) == "a picture of a cat, it's what you're looking at. isn't it?"
    assert tok.decode(ids, clean_up_tokenization_spaces=False).startswith("a picture of a cat , it ' s")
    assert tok.decode([30522, 1037, 4937, 102, 0, 0]) == "a cat"
    assert tok.decode([30522, 1037, 4937, 102, 0], skip_special_tokens=False) == "[DEC] a cat [SEP] [PAD]"


def test_same_ids_as_transformers_5_on_every_tag(tok):
    """Independent check: the Rust-backed BertTokenizer of transformers 5 on all shared tag lists."""
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB.read_text("utf-8").split("\n")[:30522])})
    ref.add_special_tokens({"bos_token": "[DEC]"})
    ref.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    assert ref.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523]
    texts = []
    for name in ("tag2text_ori_tag_list.txt", "ram_tag_list.txt", "ram_tag_list_chinese.txt"):
        texts += (RAM_DATA / name).read_text(encoding="utf-8").splitlines()
    ours = [tok.encode(t) for t in texts]
    theirs = ref(texts).input_ids
    diff = [(t, a, b) for t, a, b in zip(texts, ours, theirs) if a != b]
    assert len(texts) == 3429 + 4585 + 4585
    assert not diff, diff[:3]
    for ids in ours[::50]:
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def test_vocabulary_errors(tmp_path):
    with pytest.raises(TokenizerError, match="cannot read"):
        BertTokenizer.from_vocab_file(tmp_path / "missing.txt")
    bad = tmp_path / "vocab.txt"
    bad.write_text("hello\nworld\n", encoding="utf-8")
    with pytest.raises(TaggerError, match=r"no \[UNK\]"):
        BertTokenizer.from_vocab_file(bad)
    with pytest.raises(TypeError):
        BertTokenizer(["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"])("one string")


def test_rust_pipeline_corner_cases_keep_the_slow_tokenizers_answers(tok):
    """Where the Rust ``tokenizers`` defaults differ from transformers 4.25.1, ours follows 4.25.1."""
    # unassigned code points (Unicode Cn) are dropped like controls, so the word around them survives
    assert tok.tokenize("caf\u0378e") == tok.tokenize("cafe") == ["cafe"]
    # the Rust WordPiece decoder's cleanup leaves "it ' s" apart; transformers' clean-up glues it
    assert tok.decode(tok.encode("it ' s a cat")) == "it's a cat"
    # a ## piece after an added token is not glued to it (added tokens are chunks of their own)
    assert tok.decode([1037, 30523, tok.vocab["##s"]], skip_special_tokens=False) == "a [ENC] ##s"
    # an id outside the vocabulary reads as [UNK], even when special tokens are skipped
    assert tok.decode([1037, 99999]) == "a [UNK]"


def test_a_vocabulary_with_repeated_lines_is_refused(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncat\ncat\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="repeats 1 tokens"):
        BertTokenizer.from_vocab_file(vocab)
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncat\n", encoding="utf-8")
    small = BertTokenizer.from_vocab_file(vocab)
    assert (small.dec_token_id, small.enc_token_id, len(small)) == (6, 7, 8)
    assert small.encode("Cat dog") == [2, 5, 1, 3]
